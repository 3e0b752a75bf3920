package shim

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
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

	host hostns.Checker

	mu sync.Mutex
	// bundles maps a container to its bundle, for Delete, which is not told.
	bundles map[string]string
}

// NewService wraps runc.v2's task service.
func NewService(runc taskAPI.TTRPCTaskService) taskAPI.TTRPCTaskService {
	return &service{TTRPCTaskService: runc, bundles: map[string]string{}}
}

// RegisterTTRPC serves the wrapper, not the runc service it embeds.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// Create rewrites the bundle's spec by policy, then lets runc create the
// container. Whatever fails, nothing nsiso mounted stays behind.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	defer func() {
		if retErr != nil {
			if err := cleanupState(r.Bundle); err != nil {
				log.G(ctx).WithError(err).WithField("id", r.ID).Warn("nsiso: cleanup after failed create")
			}
		}
	}()
	joined, err := s.prepare(ctx, r)
	if err != nil {
		return nil, refusal(ctx, r.ID, err)
	}
	resp, err := s.TTRPCTaskService.Create(ctx, r)
	if err != nil {
		// runc reports joining the namespaces of a parent that died after
		// they were pinned as "broken pipe" or "unable to spawn stage-2":
		// say what happened instead.
		if joined != nil && !joined.running() {
			return nil, refusal(ctx, r.ID, parentError(joined.req, r.ID, "parent container exited while this container was being created"))
		}
		return nil, err
	}
	s.mu.Lock()
	s.bundles[r.ID] = r.Bundle
	s.mu.Unlock()
	return resp, nil
}

// refusal turns a policy refusal into InvalidArgument, which containerd
// passes to its client as one line, and any other error into its gRPC
// form.
func refusal(ctx context.Context, id string, err error) error {
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
	w   where
}

// running tells whether the parent's init is still the one that was pinned.
func (j *joinedParent) running() bool {
	ref, err := openParent(j.req, "", j.w)
	if err != nil {
		return false
	}
	defer ref.close()
	return ref.alive()
}

// prepare does nsiso's part of a Create: options, policy, pins, spec, and
// the plan's mounts. What it mounted before an error is Create's to clean.
// It returns the parent it pinned, if any.
func (s *service) prepare(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *joinedParent, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	opts, err := resolveOptions(r.Options)
	if err != nil {
		return nil, err
	}
	if r.Options, err = opts.runcAny(); err != nil {
		return nil, err
	}
	b, err := readBundleSpec(r.Bundle)
	if err != nil {
		return nil, fmt.Errorf("nsiso: %w", err)
	}
	defer func() {
		var pe *specmod.Error
		if errors.As(retErr, &pe) && pe.Pod == "" {
			pe.Pod = specmod.PodName(b.Spec.Annotations)
		}
	}()
	req, err := specmod.ParseRequest(r.ID, b.Spec.Annotations)
	if err != nil {
		return nil, err
	}
	root := opts.runc.Root
	if root == "" {
		root = process.RuncRoot
	}
	w := where{namespace: ns, runcRoot: root, bundle: r.Bundle}
	need := specmod.ParentNeeds(&b.Spec, req)
	parent, err := pinParent(req, r.ID, w, need)
	if err != nil {
		return nil, err
	}
	var joined *joinedParent
	if need != (specmod.Needs{}) {
		joined = &joinedParent{req: req, w: w}
	}
	in := specmod.Input{
		ID: r.ID, Request: req, Policy: opts.policy, Parent: parent, Host: &s.host,
		Bundle: r.Bundle, OwnShmDir: ownShmDir(r.Bundle),
	}
	pod, isPod := criPodShm(w, r.ID)
	if isPod && req.Sandbox {
		in.PodShmPath = filepath.Join(pod.root, pod.rel)
	}
	plan, err := specmod.Rewrite(&b.Spec, in)
	if err != nil {
		return nil, err
	}
	if plan.PodShm != nil {
		if err := resizePodShm(pod, plan.PodShm.Size); err != nil {
			return nil, fmt.Errorf("nsiso: pod sandbox %q: resize /dev/shm: %w", r.ID, err)
		}
	}
	if plan.OwnShm != nil {
		if err := mountOwnShm(in.OwnShmDir, plan.OwnShm); err != nil {
			return nil, fmt.Errorf("nsiso: container %q: %w", r.ID, err)
		}
	}
	written, err := b.writeIfChanged()
	if err != nil {
		return nil, fmt.Errorf("nsiso: write spec: %w", err)
	}
	// Fields are only gathered when the line is logged: this runs on
	// every Create.
	if l := log.G(ctx); l.Logger.IsLevelEnabled(log.DebugLevel) {
		l.WithField("id", r.ID).WithField("parent", req.Parent).WithField("written", written).Debug("nsiso: spec rewritten")
	}
	return joined, nil
}

// Delete lets runc delete the container, then removes nsiso's mounts.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	resp, err := s.TTRPCTaskService.Delete(ctx, r)
	if err != nil || r.ExecID != "" {
		return resp, err
	}
	s.mu.Lock()
	bundle, ok := s.bundles[r.ID]
	delete(s.bundles, r.ID)
	s.mu.Unlock()
	if ok {
		if err := cleanupState(bundle); err != nil {
			log.G(ctx).WithError(err).WithField("id", r.ID).Warn("nsiso: cleanup after delete")
		}
	}
	return resp, nil
}
