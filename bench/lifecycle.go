package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsiso/nsiso/specmod"
)

// stageNames are the steps of one container's life as the client sees
// them: create is the shim's start plus its Create (where nsiso rewrites
// the spec), delete is the task's Delete plus the shim's shutdown.
var stageNames = []string{"create", "start", "exit", "delete"}

// life takes one /bin/true container through create, start, exit and
// delete of its task. The container record and its snapshot are made
// before and removed after the timed part: they are the same work for any
// runtime and would only dilute the shim's share.
func (e *env) life(ctx context.Context, id string, r rt, extra ...oci.SpecOpts) (s stageSample, retErr error) {
	c, err := e.newContainer(ctx, id, r, []string{"/bin/true"}, extra...)
	if err != nil {
		return s, err
	}
	var t client.Task
	defer func() {
		if err := e.removeTask(c, t); err != nil && retErr == nil {
			retErr = err
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()

	t0 := time.Now()
	t, err = c.NewTask(ctx, cio.NullIO)
	if err != nil {
		t = nil
		return s, fmt.Errorf("create task %s: %w", id, err)
	}
	t1 := time.Now()
	exited, err := t.Wait(ctx)
	if err != nil {
		return s, fmt.Errorf("wait %s: %w", id, err)
	}
	if err := t.Start(ctx); err != nil {
		return s, fmt.Errorf("start %s: %w", id, err)
	}
	t2 := time.Now()
	var st client.ExitStatus
	select {
	case st = <-exited:
	case <-ctx.Done():
		return s, fmt.Errorf("%s did not exit: %w", id, ctx.Err())
	}
	t3 := time.Now()
	if err := st.Error(); err != nil {
		return s, fmt.Errorf("wait %s: %w", id, err)
	}
	if code := st.ExitCode(); code != 0 {
		return s, fmt.Errorf("%s exited %d", id, code)
	}
	if _, err := t.Delete(ctx); err != nil {
		return s, fmt.Errorf("delete task %s: %w", id, err)
	}
	t4 := time.Now()
	t = nil
	return stageSample{ms(t1.Sub(t0)), ms(t2.Sub(t1)), ms(t3.Sub(t2)), ms(t4.Sub(t3))}, nil
}

// lifePaired runs paired lifecycles, one per runtime per round, each
// runtime's containers with its own spec options.
func (e *env) lifePaired(ctx context.Context, name, what string, n, warmup int, opts [][]oci.SpecOpts) (*pairedResult, error) {
	rts := e.runtimes()
	return runPaired(ctx, name, what, stageNames, e.names(), n, warmup, func(ctx context.Context, side, round int) (stageSample, error) {
		r := rts[side]
		return e.life(ctx, fmt.Sprintf("%s-%s-%d", name, r.short, round), r, opts[side]...)
	})
}

// benchLifecycle is benchmark 1: top-level /bin/true containers with the
// client's default spec.
func (e *env) benchLifecycle(ctx context.Context, n, warmup int) (*pairedResult, error) {
	return e.lifePaired(ctx, "lifecycle", "create+start+exit+delete of a top-level /bin/true task (Go client)", n, warmup,
		make([][]oci.SpecOpts, 3))
}

// benchChild is benchmark 2: /bin/true children joining a long-running
// parent's IPC and PID namespaces. nsiso's child names its parent by
// annotation (parent lookup, pidfd, three pins, /dev/shm bind); runc.v2's
// children name the namespace files themselves, as a client without nsiso
// would (see parents).
func (e *env) benchChild(ctx context.Context, n, warmup int) (_ *pairedResult, retErr error) {
	p, err := e.startParents(ctx, "child-parent")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := e.stopParents(p); err != nil && retErr == nil {
			retErr = err
		}
	}()
	nsisoChild := []oci.SpecOpts{oci.WithAnnotations(map[string]string{
		specmod.AnnotationIPCMode: string(specmod.ModeShareParent),
		specmod.AnnotationPIDMode: string(specmod.ModeShareParent),
		specmod.AnnotationParent:  p.nsiso.c.ID(),
	})}
	ns := p.runcNS()
	runcChild := []oci.SpecOpts{
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: ns + "ipc"}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.PIDNamespace, Path: ns + "pid"}),
	}
	return e.lifePaired(ctx, "child", "the same for a child sharing a running parent's IPC and PID namespaces (Go client)", n, warmup,
		[][]oci.SpecOpts{nsisoChild, runcChild, runcChild})
}

// parents are the running parents of the child modes: a private nsiso
// container (an nsiso child needs a parent whose /dev/shm lives on the
// host), and a runc.v2 container whose namespaces both runc.v2 shims'
// children join by path.
type parents struct {
	nsiso, runc *sleeper
}

// startParents starts both parents, their IDs beginning with prefix.
func (e *env) startParents(ctx context.Context, prefix string) (parents, error) {
	np, err := e.startSleeper(ctx, prefix+"-ns", e.nsiso, oci.WithAnnotations(map[string]string{
		specmod.AnnotationIPCMode: string(specmod.ModePrivate),
		specmod.AnnotationPIDMode: string(specmod.ModePrivate),
	}))
	if err != nil {
		return parents{}, err
	}
	rp, err := e.startSleeper(ctx, prefix+"-rc", e.stock)
	if err != nil {
		return parents{}, errors.Join(err, e.stopSleeper(np))
	}
	return parents{nsiso: np, runc: rp}, nil
}

// stopParents removes both parents.
func (e *env) stopParents(p parents) error {
	return errors.Join(e.stopSleeper(p.nsiso), e.stopSleeper(p.runc))
}

// runcNS is the /proc directory of the runc.v2 parent's namespaces.
func (p parents) runcNS() string { return fmt.Sprintf("/proc/%d/ns/", p.runc.t.Pid()) }
