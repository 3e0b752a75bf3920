package shim

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/specmod"
)

// RuntimeName is the runtime containerd knows nsiso by.
const RuntimeName = "io.containerd.nsiso.v1"

// service is runc.v2's task service with Create and Delete wrapped.
type service struct {
	taskAPI.TTRPCTaskService

	host  hostns.Checker
	tasks taskSource

	mu sync.Mutex
	// created maps a container to what Delete, which is not told, needs.
	created map[string]createdTask
}

// createdTask is what Delete needs to know of a container nsiso created.
type createdTask struct {
	bundle string
	// mounted is set when nsiso mounted something for the container.
	mounted bool
}

// NewService wraps runc.v2's task service; containerdAddress is the gRPC
// address of the containerd that started the shim, which is asked for a
// parent's task.
func NewService(runc taskAPI.TTRPCTaskService, containerdAddress string) taskAPI.TTRPCTaskService {
	return &service{TTRPCTaskService: runc, tasks: &containerdTasks{address: containerdAddress}, created: map[string]createdTask{}}
}

// RegisterTTRPC serves the wrapper, not the runc service it embeds.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// Create rewrites the bundle's spec by policy, then lets runc create the
// container. Whatever fails, nothing nsiso mounted stays behind.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	p, err := s.prepare(ctx, r)
	defer p.held.close()
	defer func() {
		if retErr != nil {
			// The mount table is searched only when nsiso mounted something.
			if err := cleanupState(r.Bundle, p.mounted); err != nil {
				log.G(ctx).WithError(err).WithField("id", r.ID).Warn("nsiso: cleanup after failed create")
			}
		}
	}()
	if err != nil {
		return nil, toGRPC(ctx, r.ID, err)
	}
	resp, err := s.TTRPCTaskService.Create(ctx, r)
	if err != nil {
		// runc reports joining the namespaces of a parent that died after
		// they were pinned as "broken pipe" or "unable to spawn stage-2":
		// say what happened instead.
		if p.joined != nil && !p.joined.running(ctx) {
			return nil, toGRPC(ctx, r.ID, parentError(p.joined.req, r.ID, "parent container exited while this container was being created"))
		}
		return nil, err
	}
	s.mu.Lock()
	s.created[r.ID] = createdTask{bundle: r.Bundle, mounted: p.mounted}
	s.mu.Unlock()
	return resp, nil
}

// toGRPC turns a policy refusal into InvalidArgument, which containerd
// passes to its client as one line, and any other error into its gRPC
// form.
func toGRPC(ctx context.Context, id string, err error) error {
	var pe *specmod.Error
	if errors.As(err, &pe) {
		log.G(ctx).WithField("id", id).Info(err.Error())
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return errgrpc.ToGRPC(err)
}

// joinedParent is a parent whose namespaces a Create pinned.
type joinedParent struct {
	req specmod.Request
	sc  parentScope
}

// running tells whether the parent's task still runs the init that was
// pinned.
func (j *joinedParent) running(ctx context.Context) bool {
	ref, err := openParent(ctx, j.req, "", j.sc)
	if err != nil {
		return false
	}
	defer ref.close()
	return ref.alive()
}

// prepared is what nsiso's part of a Create leaves for the rest of it.
type prepared struct {
	// joined is the parent whose namespaces were pinned, if any.
	joined *joinedParent
	// held are the client's namespace files, open until runc joined them.
	held *heldNamespaces
	// mounted is set when nsiso mounted anything for the container.
	mounted bool
}

// prepare does nsiso's part of a Create: options, policy, pins, spec, and
// the plan's mounts. What it mounted before an error is Create's to clean.
func (s *service) prepare(ctx context.Context, r *taskAPI.CreateTaskRequest) (p prepared, _ error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return p, err
	}
	opts, err := resolveOptions(r.Options)
	if err != nil {
		return p, err
	}
	if r.Options, err = opts.runcAny(); err != nil {
		return p, err
	}
	b, err := readBundleSpec(r.Bundle)
	if err != nil {
		return p, fmt.Errorf("nsiso: %w", err)
	}
	req, err := specmod.ParseRequest(r.ID, b.Spec.Annotations)
	if err != nil {
		return p, err
	}
	if err := specmod.CheckNamespacePaths(r.ID, req, &b.Spec); err != nil {
		return p, err
	}
	if p.held, err = holdNamespaces(r.ID, req, &b.Spec, opts.policy); err != nil {
		return p, err
	}
	sc := parentScope{namespace: ns, tasks: s.tasks, bundle: r.Bundle}
	need := specmod.ParentNeeds(&b.Spec, req)
	p.mounted = need != (specmod.Needs{})
	parent, err := pinParent(ctx, req, r.ID, sc, need)
	if err != nil {
		return p, err
	}
	if p.mounted {
		p.joined = &joinedParent{req: req, sc: sc}
	}
	in := specmod.Input{
		ID: r.ID, Request: req, Policy: opts.policy, Parent: parent, Host: &s.host,
		Bundle: r.Bundle, OwnShmDir: ownShmDir(r.Bundle), ClientPaths: p.held.paths,
	}
	podShm, isPod := criPodShm(sc, r.ID)
	if isPod && req.Sandbox {
		in.PodShmPath = filepath.Join(podShm.root, podShm.rel)
	}
	plan, err := specmod.Rewrite(&b.Spec, in)
	if err != nil {
		return p, err
	}
	if plan.PodShm != nil {
		if err := resizePodShm(podShm, plan.PodShm.Size); err != nil {
			return p, fmt.Errorf("nsiso: pod sandbox %q: resize /dev/shm: %w", r.ID, err)
		}
	}
	if plan.OwnShm != nil {
		p.mounted = true
		if err := mountOwnShm(r.Bundle, plan.OwnShm); err != nil {
			return p, fmt.Errorf("nsiso: container %q: %w", r.ID, err)
		}
	}
	written, err := b.writeIfChanged()
	if err != nil {
		return p, fmt.Errorf("nsiso: write spec: %w", err)
	}
	// Fields are only gathered when the line is logged: this runs on
	// every Create.
	if l := log.G(ctx); l.Logger.IsLevelEnabled(log.DebugLevel) {
		l.WithField("id", r.ID).WithField("parent", req.Parent).WithField("written", written).Debug("nsiso: spec rewritten")
	}
	return p, nil
}

// Delete lets runc delete the container, then removes nsiso's mounts.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	resp, err := s.TTRPCTaskService.Delete(ctx, r)
	if err != nil || r.ExecID != "" {
		return resp, err
	}
	s.mu.Lock()
	c, ok := s.created[r.ID]
	delete(s.created, r.ID)
	s.mu.Unlock()
	if ok {
		if err := cleanupState(c.bundle, c.mounted); err != nil {
			log.G(ctx).WithError(err).WithField("id", r.ID).Warn("nsiso: cleanup after delete")
		}
	}
	return resp, nil
}
