package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	runcmanager "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nsiso/nsiso/internal/beneath"
	"github.com/nsiso/nsiso/specmod"
)

// manager is runc.v2's shim manager (start, grouping, cleanup), with nsiso's
// mounts removed when containerd cleans up after a shim that died.
type manager struct {
	shim.Manager
}

// NewManager returns the shim manager for io.containerd.nsiso.v1.
func NewManager() shim.Manager {
	return manager{Manager: runcmanager.NewShimManager(RuntimeName)}
}

// Stop runs `containerd-shim-nsiso-v1 delete`: containerd calls it in the
// bundle when a shim is gone or could not be loaded, so the shim's own
// Delete never ran.
func (m manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	ss, err := m.Manager.Stop(ctx, id)
	if cwd, cerr := os.Getwd(); cerr == nil {
		bundle := filepath.Join(filepath.Dir(cwd), id)
		if cerr := cleanupState(bundle, true); cerr != nil {
			log.G(ctx).WithError(cerr).Warn("nsiso: cleanup in shim delete")
		}
		if cerr := shutdownOrphan(ctx, bundle, id); cerr != nil {
			log.G(ctx).WithError(cerr).Debug("nsiso: no orphan shim shut down")
		}
	}
	return ss, err
}

// orphanTimeout bounds shutdownOrphan; containerd kills the whole delete
// command after 5s (io.containerd.timeout.shim.cleanup).
const orphanTimeout = 3 * time.Second

// groupLabels are runc.v2's grouping annotations, in its order (its
// manager's list is unexported): a container carrying one shares the shim
// of that group.
var groupLabels = []string{"io.containerd.runc.v2.group", specmod.AnnotationCRISandboxID}

// ownShim tells whether runc.v2's Start named the shim of a container with
// these annotations after the container itself, as it does unless a group
// label names another group.
func ownShim(annotations map[string]string, id string) bool {
	for _, l := range groupLabels {
		if g, ok := annotations[l]; ok {
			return g == id
		}
	}
	return true
}

// shutdownOrphan asks the shim that `start` forked for this container to
// exit. containerd records where a shim listens (bootstrap.json) only
// after its start command returns; killed in between, it restarts without
// that record, fails to load the bundle and runs only this command, so
// the shim it had started would serve nobody forever (runc.v2 alike, see
// docs/compatibility.md). Only a shim named after this container is asked,
// never a group's shared one, and runc's Shutdown is a no-op while the shim
// still holds a container, so no shim in use is stopped.
func shutdownOrphan(ctx context.Context, bundle, id string) error {
	f := flag.Lookup("address") // containerd's address, which names the socket
	if f == nil || f.Value.String() == "" {
		return errors.New("no -address flag")
	}
	data, err := beneath.ReadFile(bundle, "config.json", maxSpecSize)
	if err != nil {
		return err
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("config.json: %w", err)
	}
	if !ownShim(spec.Annotations, id) {
		return errors.New("the container's shim is its group's")
	}
	// Where Start put it: the shim library nsiso builds with (containerd
	// 2.2's) has no socket_dir and names the socket as this does.
	addr, err := shim.SocketAddress(ctx, f.Value.String(), id, false)
	if err != nil {
		return err
	}
	if l, err := openLogFIFO(bundle); err == nil {
		defer l.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, orphanTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	conn, err := shim.AnonDialer(addr, time.Until(deadline))
	if err != nil {
		return err // nothing listens: no orphan
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	// A shim may exit before its answer is sent.
	if _, err := taskAPI.NewTTRPCTaskClient(c).Shutdown(ctx, &taskAPI.ShutdownRequest{ID: id}); err != nil && !errors.Is(err, ttrpc.ErrClosed) {
		return fmt.Errorf("shutdown %s: %w", addr, err)
	}
	// A shim that shuts down exits, which closes the connection; one that
	// still holds a container keeps it open.
	if err := c.UserOnCloseWait(ctx); err != nil {
		return fmt.Errorf("shim at %s holds a container; left running", addr)
	}
	log.G(ctx).WithField("id", id).Warn("nsiso: shut down a shim containerd had started but never recorded (it was killed during the start)")
	return nil
}

// openLogFIFO opens the bundle's log FIFO for reading. A shim opens its
// write end before it serves and waits there for a reader: containerd, which
// does not come back for a shim it never recorded. The FIFO is opened
// beneath the bundle without following a symlink, and only if it is one.
func openLogFIFO(bundle string) (*os.File, error) {
	p, err := beneath.Open(bundle, "log", unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(p.Fd()), &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil, fmt.Errorf("%s: not a FIFO", p.Name())
	}
	// Non-blocking: opening the read end never waits for a writer.
	return os.OpenFile(beneath.FDPath(p), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
}

// Info reports runc's features; runc.v2's manager only reads runc's options
// type, so nsiso's are translated first.
func (m manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	data, err := io.ReadAll(optionsR)
	if err != nil || len(data) == 0 {
		return m.Manager.Info(ctx, bytes.NewReader(data))
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err != nil {
		return m.Manager.Info(ctx, bytes.NewReader(data))
	}
	opts, err := resolveOptions(&a)
	if err != nil {
		return nil, err
	}
	ra, err := typeurl.MarshalAnyToProto(opts.runc)
	if err != nil {
		return nil, err
	}
	if data, err = proto.Marshal(ra); err != nil {
		return nil, err
	}
	return m.Manager.Info(ctx, bytes.NewReader(data))
}
