package main

import (
	"context"
	"fmt"
	"os"
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

// lifeSample is the duration of each stage of one container, in stageNames
// order.
type lifeSample [4]time.Duration

func (s lifeSample) total() time.Duration {
	var t time.Duration
	for _, d := range s {
		t += d
	}
	return t
}

// life takes one /bin/true container through create, start, exit and
// delete of its task. The container record and its snapshot are made
// before and removed after the timed part: they are the same work for any
// runtime and would only dilute the shim's share.
func (e *env) life(ctx context.Context, id string, r rt, extra ...oci.SpecOpts) (s lifeSample, retErr error) {
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
	return lifeSample{t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), t4.Sub(t3)}, nil
}

// side is one runtime in a paired benchmark, with what its containers
// add to the default spec.
type side struct {
	rt
	opts []oci.SpecOpts
}

// runtimeSamples are one runtime's results in a paired benchmark, in
// milliseconds.
type runtimeSamples struct {
	Runtime string             `json:"runtime"`
	TotalMs summary            `json:"total_ms"`
	Stages  map[string]summary `json:"stages_ms"`
	Samples []float64          `json:"samples_ms"`
}

// pairedResult compares nsiso with runc.v2 sample by sample: sample i of
// each ran back to back, so slow spells of the machine hit both.
type pairedResult struct {
	Name string         `json:"name"`
	What string         `json:"what"`
	A    runtimeSamples `json:"nsiso"`
	B    runtimeSamples `json:"runc"`
	// Ratio is the distribution of nsiso/runc.v2 over the pairs; its
	// median is what the target is about.
	Ratio   summary    `json:"ratio"`
	RatioCI [2]float64 `json:"ratio_median_ci95"`
	Ratios  []float64  `json:"ratios"`
	// DiffMs is the distribution of nsiso-runc.v2 over the pairs: what
	// nsiso adds to one container, in milliseconds.
	DiffMs   summary    `json:"diff_ms"`
	DiffMsCI [2]float64 `json:"diff_ms_median_ci95"`
	Warmups  int        `json:"warmups"`
	// PrepareInSituMs is set with -debug-log: see prepareInSitu.
	PrepareInSituMs *summary `json:"nsiso_prepare_in_situ_ms,omitempty"`
}

// paired runs n pairs of lifecycles, alternating a and b (a b a b ...),
// after warmup untimed pairs that load both shims' binaries into the page
// cache.
func (e *env) paired(ctx context.Context, name, what string, n, warmup int, a, b side) (*pairedResult, error) {
	var samples [2][]lifeSample
	sides := [2]side{a, b}
	for i := -warmup; i < n; i++ {
		for k, sd := range sides {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			id := fmt.Sprintf("%s-%s-%d", name, shortName(sd.rt), i+warmup)
			s, err := e.life(ctx, id, sd.rt, sd.opts...)
			if err != nil {
				return nil, fmt.Errorf("%s, pair %d: %w", sd.Name, i+warmup, err)
			}
			if i >= 0 {
				samples[k] = append(samples[k], s)
			}
		}
		if i >= 0 && (i+1)%10 == 0 {
			fmt.Fprintf(os.Stderr, "  %s: %d/%d pairs\n", name, i+1, n)
		}
	}
	res := &pairedResult{Name: name, What: what, Warmups: warmup}
	res.A = describeSamples(a.Name, samples[0])
	res.B = describeSamples(b.Name, samples[1])
	res.Ratios = ratios(res.A.Samples, res.B.Samples)
	res.Ratio = summarize(res.Ratios)
	res.RatioCI[0], res.RatioCI[1] = medianCI(res.Ratios, 0.95)
	diffs := differences(res.A.Samples, res.B.Samples)
	res.DiffMs = summarize(diffs)
	res.DiffMsCI[0], res.DiffMsCI[1] = medianCI(diffs, 0.95)
	return res, nil
}

func describeSamples(name string, ss []lifeSample) runtimeSamples {
	r := runtimeSamples{Runtime: name, Stages: map[string]summary{}}
	stages := make([][]float64, len(stageNames))
	for _, s := range ss {
		r.Samples = append(r.Samples, ms(s.total()))
		for k, d := range s {
			stages[k] = append(stages[k], ms(d))
		}
	}
	r.TotalMs = summarize(r.Samples)
	for k, n := range stageNames {
		r.Stages[n] = summarize(stages[k])
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func shortName(r rt) string {
	if r.runtime == nsisoRuntime {
		return "ns"
	}
	return "rc"
}

// benchLifecycle is benchmark 1: top-level /bin/true containers with the
// client's default spec.
func (e *env) benchLifecycle(ctx context.Context, n, warmup int) (*pairedResult, error) {
	return e.paired(ctx, "lifecycle", "create+start+exit+delete of a top-level /bin/true task", n, warmup,
		side{rt: e.nsiso}, side{rt: e.runc})
}

// benchChild is benchmark 2: /bin/true children joining a long-running
// parent's IPC and PID namespaces. nsiso's child names its parent by
// annotation (parent lookup, pidfd, three pins, /dev/shm bind); runc.v2's
// child names the namespace files itself, as a client without nsiso would.
// Each runtime has its own parent: an nsiso child needs an nsiso parent,
// whose /dev/shm lives on the host.
func (e *env) benchChild(ctx context.Context, n, warmup int) (_ *pairedResult, retErr error) {
	stop := func(s *sleeper) {
		if err := e.stopSleeper(s); err != nil && retErr == nil {
			retErr = err
		}
	}
	np, err := e.startSleeper(ctx, "child-parent-ns", e.nsiso, oci.WithAnnotations(map[string]string{
		specmod.AnnotationIPCMode: string(specmod.ModePrivate),
		specmod.AnnotationPIDMode: string(specmod.ModePrivate),
	}))
	if err != nil {
		return nil, err
	}
	defer stop(np)
	rp, err := e.startSleeper(ctx, "child-parent-rc", e.runc)
	if err != nil {
		return nil, err
	}
	defer stop(rp)

	nsisoChild := side{rt: e.nsiso, opts: []oci.SpecOpts{oci.WithAnnotations(map[string]string{
		specmod.AnnotationIPCMode: string(specmod.ModeShareParent),
		specmod.AnnotationPIDMode: string(specmod.ModeShareParent),
		specmod.AnnotationParent:  np.c.ID(),
	})}}
	proc := fmt.Sprintf("/proc/%d/ns/", rp.t.Pid())
	runcChild := side{rt: e.runc, opts: []oci.SpecOpts{
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: proc + "ipc"}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.PIDNamespace, Path: proc + "pid"}),
	}}
	return e.paired(ctx, "child", "the same for a child sharing a running parent's IPC and PID namespaces", n, warmup, nsisoChild, runcChild)
}
