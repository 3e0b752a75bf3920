package shim

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/api/types"
	runcmanager "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
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
// bundle when a shim is gone, so the shim's own Delete never ran.
func (m manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	ss, err := m.Manager.Stop(ctx, id)
	if cwd, cerr := os.Getwd(); cerr == nil {
		if cerr := cleanupState(filepath.Join(filepath.Dir(cwd), id), true); cerr != nil {
			log.G(ctx).WithError(cerr).Warn("nsiso: cleanup in shim delete")
		}
	}
	return ss, err
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
