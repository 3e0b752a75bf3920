// Package integration runs nsiso end to end: a private containerd daemon,
// real runc, real namespaces, measured from inside the containers.
package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"

	"github.com/nsiso/nsiso/testenv"
)

const (
	nsisoRuntime = "io.containerd.nsiso.v1"
	runcRuntime  = "io.containerd.runc.v2"
	imageRef     = "docker.io/library/nsiso-busybox:test"
	testNS       = "nsiso-it"
)

// suite is the environment shared by every test: one daemon, one image.
type suite struct {
	ctd      *testenv.Containerd
	ctx      context.Context
	image    client.Image
	h        *testenv.Harness
	dir      string // configs and scratch, outside the daemon's dir
	imageTar string // the test image's archive, for importing elsewhere
	runcRoot string // runc state root shared by nsiso and runc.v2
	// Config files: strict is the daemon-wide default (NSISO_CONFIG).
	strict, lenient, tight string
}

var (
	env       suite
	setupOnce sync.Once
	setupErr  error
	skipWhy   string
	idCounter atomic.Int64
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		skipWhy = "integration tests need root (containerd, runc and mounts)"
	}
	code := m.Run()
	if err := stopCRI(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: stop CRI containerd:", err)
		code = 1
	}
	if env.ctd != nil {
		if err := env.ctd.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "integration: stop containerd:", err)
			code = 1
		}
	}
	if env.h != nil {
		env.h.Close()
	}
	os.Exit(code)
}

// setup starts the shared environment once and skips when it cannot run.
func setup(t *testing.T) *suite {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	setupOnce.Do(func() { setupErr = env.boot() })
	if errors.Is(setupErr, testenv.ErrDepsMissing) && os.Getenv(testenv.DepsBinEnv) == "" {
		// Only a bare `go test` may skip; `make test` sets NSISO_DEPS_BIN
		// after installing them, so there a missing dependency is a failure.
		t.Skip(setupErr)
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	return &env
}

func (s *suite) boot() error {
	var err error
	if s.h, err = testenv.NewHarness(); err != nil {
		return err
	}
	s.dir = s.h.Scratch
	ctx := context.Background()
	if s.imageTar, err = s.h.BusyboxImage(ctx, imageRef, nil); err != nil {
		return err
	}
	ctdDir, err := os.MkdirTemp("", "nsct-")
	if err != nil {
		return err
	}
	s.runcRoot = testenv.RuncRoot(ctdDir)
	s.strict = s.writeConfig("strict.toml", `default_container_shm_size = "96Mi"
max_container_shm_size = "1Gi"`)
	s.lenient = s.writeConfig("lenient.toml", `disallow_sharing_host_ipc_namespace = false
disallow_sharing_host_pid_namespace = false`)
	s.tight = s.writeConfig("tight.toml", `max_container_shm_size = "32Mi"`)
	s.ctd, err = s.h.Start(ctx, testenv.Options{
		Dir: ctdDir,
		Env: []string{"NSISO_CONFIG=" + s.strict},
	})
	if err != nil {
		return err
	}
	if s.ctx, err = s.ctd.Namespace(ctx, testNS); err != nil {
		return err
	}
	fmt.Printf("integration: containerd %s at %s, runc %s\n", s.ctd.Version(), s.ctd.Address(), s.h.Deps.Runc)
	s.image, err = testenv.ImportImage(s.ctx, s.ctd.Client(), s.imageTar)
	return err
}

// writeConfig writes an nsiso.toml that keeps runc's state under the
// daemon's directory, where parent lookups must find it.
func (s *suite) writeConfig(name, body string) string {
	p, err := s.h.WritePolicy(name, s.runcRoot, body)
	if err != nil {
		panic(err)
	}
	return p
}

// spec describes one container of a test.
type spec struct {
	runtime string            // default nsiso
	config  string            // nsiso ConfigPath; empty: the daemon-wide strict config
	ann     map[string]string // annotations
	args    []string          // default: sleep
	opts    []oci.SpecOpts
}

func newID(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid()%10000, idCounter.Add(1))
}

func (s *suite) newContainer(t *testing.T, id string, sp spec) client.Container {
	t.Helper()
	args := sp.args
	if len(args) == 0 {
		args = []string{"sleep", "3600"}
	}
	opts := []oci.SpecOpts{oci.WithImageConfig(s.image), oci.WithProcessArgs(args...)}
	if len(sp.ann) > 0 {
		opts = append(opts, oci.WithAnnotations(sp.ann))
	}
	opts = append(opts, sp.opts...)
	var rt client.NewContainerOpts
	switch sp.runtime {
	case "", nsisoRuntime:
		var o any
		if sp.config != "" {
			o = &runtimeoptions.Options{ConfigPath: sp.config}
		}
		rt = client.WithRuntime(nsisoRuntime, o)
	case runcRuntime:
		rt = client.WithRuntime(runcRuntime, s.ctd.RuncOptions())
	default:
		rt = client.WithRuntime(sp.runtime, nil)
	}
	c, err := s.ctd.Client().NewContainer(s.ctx, id,
		client.WithImage(s.image),
		client.WithNewSnapshot(id+"-snap", s.image),
		rt,
		client.WithNewSpec(opts...),
	)
	if err != nil {
		t.Fatalf("new container %s: %v", id, err)
	}
	return c
}

// task is a running container.
type task struct {
	id string
	c  client.Container
	t  client.Task
}

// start creates and starts a long-running container, deleted at test end.
func (s *suite) start(t *testing.T, id string, sp spec) *task {
	t.Helper()
	c := s.newContainer(t, id, sp)
	tk, err := c.NewTask(s.ctx, cio.NullIO)
	if err != nil {
		_ = c.Delete(s.ctx, client.WithSnapshotCleanup)
		t.Fatalf("create task %s: %v", id, err)
	}
	r := &task{id: id, c: c, t: tk}
	t.Cleanup(func() { s.remove(t, r) })
	if err := tk.Start(s.ctx); err != nil {
		t.Fatalf("start task %s: %v", id, err)
	}
	return r
}

// remove kills and deletes a container, whatever state it is in.
func (s *suite) remove(t *testing.T, r *task) {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	if r.t != nil {
		wait, err := r.t.Wait(ctx)
		if err == nil {
			if err := r.t.Kill(ctx, syscall.SIGKILL); err == nil || errdefs.IsNotFound(err) {
				select {
				case <-wait:
				case <-ctx.Done():
				}
			}
		}
		if _, err := r.t.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			t.Errorf("delete task %s: %v", r.id, err)
		}
	}
	if err := r.c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		t.Errorf("delete container %s: %v", r.id, err)
	}
}

// tryCreate creates a task and reports the error; a task that was created
// is removed again. The container record is always removed.
func (s *suite) tryCreate(t *testing.T, id string, sp spec) error {
	t.Helper()
	c := s.newContainer(t, id, sp)
	tk, err := c.NewTask(s.ctx, cio.NullIO)
	r := &task{id: id, c: c, t: tk}
	if err != nil {
		r.t = nil
	}
	s.remove(t, r)
	return err
}

var execCounter atomic.Int64

// exec runs a command in a running container and returns its stdout; a
// non-zero exit fails the test.
func (s *suite) exec(t *testing.T, r *task, args ...string) string {
	t.Helper()
	out, code, errOut := s.execCode(t, r, args...)
	if code != 0 {
		t.Fatalf("exec %v in %s: exit %d: %s", args, r.id, code, errOut)
	}
	return out
}

func (s *suite) execCode(t *testing.T, r *task, args ...string) (string, uint32, string) {
	t.Helper()
	sp, err := r.c.Spec(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := *sp.Process
	pspec.Args = args
	pspec.Terminal = false
	var out, errb bytes.Buffer
	p, err := r.t.Exec(s.ctx, "x"+strconv.FormatInt(execCounter.Add(1), 10), &pspec,
		cio.NewCreator(cio.WithStreams(nil, &out, &errb), cio.WithFIFODir(s.ctd.FIFODir())))
	if err != nil {
		t.Fatalf("exec %v in %s: %v", args, r.id, err)
	}
	defer func() { _, _ = p.Delete(s.ctx) }()
	wait, err := p.Wait(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(s.ctx); err != nil {
		t.Fatalf("exec start %v in %s: %v", args, r.id, err)
	}
	var code uint32
	select {
	case st := <-wait:
		code = st.ExitCode()
	case <-time.After(60 * time.Second):
		t.Fatalf("exec %v in %s did not exit", args, r.id)
	}
	_ = p.CloseIO(s.ctx)
	// Output is copied by goroutines that end shortly after the process.
	p.IO().Wait()
	return out.String(), code, errb.String()
}

// hostNS is the test process's namespace link, e.g. "ipc:[4026531839]";
// the test runs in the host's namespaces.
func hostNS(t *testing.T, kind string) string {
	t.Helper()
	l, err := os.Readlink("/proc/self/ns/" + kind)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ns reads a namespace link from inside a container.
func (s *suite) ns(t *testing.T, r *task, kind string) string {
	t.Helper()
	return strings.TrimSpace(s.exec(t, r, "readlink", "/proc/self/ns/"+kind))
}

// shmSizeCmd asks statfs inside a container for the size of /dev/shm.
var shmSizeCmd = []string{"stat", "-f", "-c", "%b %S", "/dev/shm"}

// statfsBytes turns shmSizeCmd's "<blocks> <block size>" into bytes.
func statfsBytes(t *testing.T, out string) int64 {
	t.Helper()
	f := strings.Fields(out)
	if len(f) != 2 {
		t.Fatalf("stat -f output %q", out)
	}
	blocks, err1 := strconv.ParseInt(f[0], 10, 64)
	bsize, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("stat -f output %q", out)
	}
	return blocks * bsize
}

// shmSize is the size of /dev/shm as statfs reports it inside a container.
func (s *suite) shmSize(t *testing.T, r *task) int64 {
	t.Helper()
	return statfsBytes(t, s.exec(t, r, shmSizeCmd...))
}

// ipcmk makes a System V shared memory segment inside a container and
// returns its key. Keys are random and global in meaning, unlike ids, which
// every IPC namespace numbers from zero.
func (s *suite) ipcmk(t *testing.T, r *task) string {
	t.Helper()
	out := s.exec(t, r, "ipcmk", "-M", "65536")
	id := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "Shared memory id:"))
	if _, err := strconv.Atoi(id); err != nil {
		t.Fatalf("ipcmk output %q", out)
	}
	for key, sid := range shmKeys(s.exec(t, r, "cat", "/proc/sysvipc/shm")) {
		if sid == id {
			return key
		}
	}
	t.Fatalf("segment %s not listed in its own container", id)
	return ""
}

// shmKeys maps key to id for the segments in /proc/sysvipc/shm text.
func shmKeys(text string) map[string]string {
	keys := map[string]string{}
	for i, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 2 {
			continue
		}
		keys[f[0]] = f[1]
	}
	return keys
}

// sees tells whether a segment with this key is visible in the container.
func (s *suite) sees(t *testing.T, r *task, key string) bool {
	t.Helper()
	_, ok := shmKeys(s.exec(t, r, "cat", "/proc/sysvipc/shm"))[key]
	return ok
}

func hostSees(t *testing.T, key string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		t.Fatal(err)
	}
	_, ok := shmKeys(string(data))[key]
	return ok
}
