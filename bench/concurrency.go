package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
)

// prepParallelism bounds how many container records are made or removed
// at once outside the timed part; the snapshotter gains nothing from more
// on two cores.
const prepParallelism = 4

// roundResult is one runtime's round of the concurrency benchmark.
type roundResult struct {
	Runtime string `json:"runtime"`
	Round   int    `json:"round"`
	// WallMs runs from the first create to the last delete; the stages
	// split it at the barriers between them.
	WallMs     float64            `json:"wall_ms"`
	StagesMs   map[string]float64 `json:"stages_ms"`
	Throughput float64            `json:"containers_per_s"`
	// CPUMs is the machine's busy CPU time over the wall time, per
	// container: what limits throughput on a saturated machine. It
	// misses what containerd does after a delete returns, for either
	// runtime.
	CPUMs        float64 `json:"cpu_ms_per_container"`
	Failures     int     `json:"failures"`
	FirstFailure string  `json:"first_failure,omitempty"`
}

// concurrencySide sums up one runtime's rounds.
type concurrencySide struct {
	Runtime    string  `json:"runtime"`
	WallMs     summary `json:"wall_ms"`
	Throughput summary `json:"containers_per_s"`
	CPUMs      summary `json:"cpu_ms_per_container"`
	Failures   int     `json:"failures"`
}

// concurrencyResult is benchmark 3.
type concurrencyResult struct {
	Containers int               `json:"containers"`
	Rounds     []roundResult     `json:"rounds"`
	Sides      []concurrencySide `json:"runtimes"`
	// Ratios are nsiso's throughput over the stock runc.v2's, round by
	// round; LibRatios over the same-library runc.v2's.
	Ratios    []float64 `json:"throughput_ratios"`
	Ratio     summary   `json:"throughput_ratio"`
	LibRatios []float64 `json:"throughput_ratios_lib"`
	// Failures counts failed containers of every round, warm-up included:
	// any is a bug, whatever the timing.
	Failures       int  `json:"failures"`
	Warmup         bool `json:"warmup_round"`
	WarmupFailures int  `json:"warmup_failures"`
}

// parallel runs f(i) for i in [0, n) with at most limit at once; limit 0
// means all at once.
func parallel(n, limit int, f func(i int)) {
	if limit <= 0 {
		limit = n
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}

// round creates and starts n /bin/true tasks at once, waits for all to
// exit, then deletes all at once.
func (e *env) round(ctx context.Context, r rt, n, round int) (roundResult, error) {
	res := roundResult{Runtime: r.Name, Round: round, StagesMs: map[string]float64{}}
	cs := make([]client.Container, n)
	prepErrs := make([]error, n)
	parallel(n, prepParallelism, func(i int) {
		cs[i], prepErrs[i] = e.newContainer(ctx, fmt.Sprintf("conc-%s-%d-%d", r.short, round+1, i), r, []string{"/bin/true"})
	})
	tasks := make([]client.Task, n)
	defer parallel(n, prepParallelism, func(i int) {
		if cs[i] == nil {
			return
		}
		// Best-effort: a leftover does not change this round's numbers,
		// and the daemon's teardown deletes every task it still has.
		if err := e.removeTask(cs[i], tasks[i]); err != nil {
			fmt.Fprintln(os.Stderr, "bench: concurrency:", err)
		}
	})
	for _, err := range prepErrs {
		if err != nil {
			return res, err
		}
	}

	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	errs := make([]error, n)
	exits := make([]<-chan client.ExitStatus, n)
	cpu0, err := cpuBusy()
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	parallel(n, 0, func(i int) {
		t, err := cs[i].NewTask(ctx, cio.NullIO)
		if err != nil {
			errs[i] = fmt.Errorf("create task %s: %w", cs[i].ID(), err)
			return
		}
		tasks[i] = t
		if exits[i], err = t.Wait(ctx); err != nil {
			errs[i] = fmt.Errorf("wait %s: %w", cs[i].ID(), err)
			return
		}
		if err := t.Start(ctx); err != nil {
			errs[i] = fmt.Errorf("start %s: %w", cs[i].ID(), err)
		}
	})
	t1 := time.Now()
	parallel(n, 0, func(i int) {
		if errs[i] != nil {
			return
		}
		select {
		case st := <-exits[i]:
			if err := st.Error(); err != nil {
				errs[i] = fmt.Errorf("wait %s: %w", cs[i].ID(), err)
			} else if st.ExitCode() != 0 {
				errs[i] = fmt.Errorf("%s exited %d", cs[i].ID(), st.ExitCode())
			}
		case <-ctx.Done():
			errs[i] = fmt.Errorf("%s did not exit: %w", cs[i].ID(), ctx.Err())
		}
	})
	t2 := time.Now()
	parallel(n, 0, func(i int) {
		if errs[i] != nil || tasks[i] == nil {
			return
		}
		if _, err := tasks[i].Delete(ctx); err != nil {
			errs[i] = fmt.Errorf("delete task %s: %w", cs[i].ID(), err)
			return
		}
		tasks[i] = nil
	})
	t3 := time.Now()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	cpu1, err := cpuBusy()
	if err != nil {
		return res, err
	}
	res.CPUMs = ms(cpu1-cpu0) / float64(n)

	res.WallMs = ms(t3.Sub(t0))
	res.StagesMs["create+start"] = ms(t1.Sub(t0))
	res.StagesMs["exit"] = ms(t2.Sub(t1))
	res.StagesMs["delete"] = ms(t3.Sub(t2))
	res.Throughput = float64(n) / t3.Sub(t0).Seconds()
	for _, err := range errs {
		if err != nil {
			res.Failures++
			if res.FirstFailure == "" {
				res.FirstFailure = err.Error()
			}
		}
	}
	return res, nil
}

// benchConcurrency is benchmark 3: rounds of n concurrent containers,
// alternating runtimes round by round. With warmup, one untimed round per
// runtime comes first: the first round after start-up is slower whichever
// runtime runs it, which would otherwise count against nsiso, which runs
// first.
func (e *env) benchConcurrency(ctx context.Context, n, rounds int, warmup bool) (*concurrencyResult, error) {
	res := &concurrencyResult{Containers: n, Warmup: warmup}
	rts := e.runtimes()
	per := make([][]roundResult, len(rts))
	first := 0
	if warmup {
		first = -1
	}
	for round := first; round < rounds; round++ {
		for k, r := range rts {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			rr, err := e.round(ctx, r, n, round)
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w", r.Name, round+1, err)
			}
			if round < 0 {
				fmt.Fprintf(os.Stderr, "  concurrency: %s warm-up round: %d containers in %.0f ms, %d failed\n", r.Name, n, rr.WallMs, rr.Failures)
				res.WarmupFailures += rr.Failures
				res.Failures += rr.Failures
				continue
			}
			fmt.Fprintf(os.Stderr, "  concurrency: %s round %d: %d containers in %.0f ms, %d failed\n", r.Name, round+1, n, rr.WallMs, rr.Failures)
			res.Rounds = append(res.Rounds, rr)
			per[k] = append(per[k], rr)
		}
	}
	thr := make([][]float64, len(rts))
	for k, rs := range per {
		side := concurrencySide{Runtime: rts[k].Name}
		var wall, cpu []float64
		for _, rr := range rs {
			wall = append(wall, rr.WallMs)
			cpu = append(cpu, rr.CPUMs)
			thr[k] = append(thr[k], rr.Throughput)
			side.Failures += rr.Failures
		}
		side.WallMs = summarize(wall)
		side.Throughput = summarize(thr[k])
		side.CPUMs = summarize(cpu)
		res.Failures += side.Failures
		res.Sides = append(res.Sides, side)
	}
	res.Ratios = ratios(thr[0], thr[1])
	res.Ratio = summarize(res.Ratios)
	res.LibRatios = ratios(thr[0], thr[2])
	return res, nil
}
