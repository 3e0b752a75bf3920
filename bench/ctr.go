package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nsiso/nsiso/specmod"
)

// The ctr benchmark is a container's life the way a user meets it: one
// `ctr run --rm` process, from its exec to its exit, which includes the
// client's own start-up, the snapshot and the container record. It is run
// for each runtime in each mode, paired and interleaved.

// ctrMode is one way of running a container, with what each runtime's
// `ctr run` adds to the command line for it (nsiso first, then the stock
// runc.v2, then the same-library runc.v2).
type ctrMode struct {
	Name string
	What string
	// setup starts what the mode needs (a parent) and returns the extra
	// arguments per runtime and a function that stops it again.
	setup func(ctx context.Context, e *env) (args [3][]string, stop func() error, err error)
}

// shmSizeBench is the size a private nsiso container asks for: the size
// containerd gives every container's /dev/shm (65536k), so that both sides
// have the same tmpfs and only where it is mounted differs.
const shmSizeBench = "64Mi"

var ctrModes = []ctrMode{
	{
		Name: "unset",
		What: "no nsiso annotation: the policy leaves containerd's spec as it is",
		setup: func(context.Context, *env) ([3][]string, func() error, error) {
			return [3][]string{}, func() error { return nil }, nil
		},
	},
	{
		Name: "private",
		What: "nsiso/ipc-mode=private, nsiso/shm-size=" + shmSizeBench + " (a host-side tmpfs bound in) against runc.v2's own " + shmSizeBench + " tmpfs",
		setup: func(context.Context, *env) ([3][]string, func() error, error) {
			return [3][]string{{"--annotation", specmod.AnnotationIPCMode + "=private", "--annotation", specmod.AnnotationShmSize + "=" + shmSizeBench}},
				func() error { return nil }, nil
		},
	},
	{
		Name: "child",
		What: "a child sharing a running parent's IPC and PID namespaces: nsiso/parent with share-parent, runc.v2 with --with-ns /proc/<pid>/ns/*",
		setup: func(ctx context.Context, e *env) ([3][]string, func() error, error) {
			p, err := e.startParents(ctx, "ctr-parent")
			if err != nil {
				return [3][]string{}, nil, err
			}
			ns := p.runcNS()
			runc := []string{"--with-ns", "ipc:" + ns + "ipc", "--with-ns", "pid:" + ns + "pid"}
			nsiso := []string{
				"--annotation", specmod.AnnotationParent + "=" + p.nsiso.c.ID(),
				"--annotation", specmod.AnnotationIPCMode + "=share-parent",
				"--annotation", specmod.AnnotationPIDMode + "=share-parent",
			}
			return [3][]string{nsiso, runc, runc}, func() error { return e.stopParents(p) }, nil
		},
	},
}

// ctrArgs is the `ctr run --rm` command line for one container.
func (e *env) ctrArgs(r rt, id string, extra []string) []string {
	args := []string{"--namespace", benchNS, "run", "--rm", "--fifo-dir", e.fifoDir, "--runtime", r.runtime}
	if r.runtime == runcRuntime {
		// ctr passes runc options only to io.containerd.runc.v2; nsiso
		// reads the same root from its config, and the same-library shim,
		// run by path, gets runc's default root.
		args = append(args, "--runc-root", e.runcRoot)
	}
	args = append(args, extra...)
	return append(args, imageRef, id, "/bin/true")
}

// ctrRun runs one `ctr run --rm` to completion and returns its wall time.
func (e *env) ctrRun(ctx context.Context, r rt, id string, extra []string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cmd := e.ctd.Ctr(ctx, e.ctrArgs(r, id, extra)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("ctr run %s (%s): %w: %s", id, r.Name, err, lastLines(out.String(), 3))
	}
	return d, nil
}

// benchCtr is the ctr benchmark in every mode.
func (e *env) benchCtr(ctx context.Context, n, warmup int) ([]*pairedResult, error) {
	var out []*pairedResult
	for _, m := range ctrModes {
		res, err := e.benchCtrMode(ctx, m, n, warmup)
		if err != nil {
			return out, fmt.Errorf("%s: %w", m.Name, err)
		}
		out = append(out, res)
	}
	return out, nil
}

func (e *env) benchCtrMode(ctx context.Context, m ctrMode, n, warmup int) (_ *pairedResult, retErr error) {
	args, stop, err := m.setup(ctx, e)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := stop(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	rts := e.runtimes()
	return runPaired(ctx, "ctr "+m.Name, "`ctr run --rm IMAGE ID /bin/true`, the whole process: "+m.What, nil, e.names(), n, warmup,
		func(ctx context.Context, side, round int) (stageSample, error) {
			r := rts[side]
			d, err := e.ctrRun(ctx, r, fmt.Sprintf("ctr-%s-%s-%d", m.Name, r.short, round), args[side])
			return stageSample{ms(d)}, err
		})
}

// lastLines returns the last n lines of s, for error messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
