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
	// WallMs runs from the first create to the last delete.
	WallMs     float64 `json:"wall_ms"`
	Throughput float64 `json:"containers_per_s"`
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
	res := roundResult{Runtime: r.Name, Round: round}
	b, err := e.newBatch(ctx, r, n, round)
	defer e.removeBatch(b)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cpu0, err := cpuBusy()
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	b.createAndStart(ctx)
	b.waitExits(ctx)
	b.deleteTasks(ctx)
	wall := time.Since(t0)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	cpu1, err := cpuBusy()
	if err != nil {
		return res, err
	}
	res.CPUMs = ms(cpu1-cpu0) / float64(n)
	res.WallMs = ms(wall)
	res.Throughput = float64(n) / wall.Seconds()
	for _, err := range b.errs {
		if err != nil {
			res.Failures++
			if res.FirstFailure == "" {
				res.FirstFailure = err.Error()
			}
		}
	}
	return res, nil
}

// batch is one round's containers, their tasks, and what went wrong with
// each.
type batch struct {
	cs    []client.Container
	tasks []client.Task
	exits []<-chan client.ExitStatus
	errs  []error
}

// newBatch makes the n container records of a round, a few at a time,
// outside the timed part. On error the batch holds those made.
func (e *env) newBatch(ctx context.Context, r rt, n, round int) (*batch, error) {
	b := &batch{cs: make([]client.Container, n), tasks: make([]client.Task, n),
		exits: make([]<-chan client.ExitStatus, n), errs: make([]error, n)}
	prepErrs := make([]error, n)
	parallel(n, prepParallelism, func(i int) {
		b.cs[i], prepErrs[i] = e.newContainer(ctx, fmt.Sprintf("conc-%s-%d-%d", r.short, round+1, i), r, []string{"/bin/true"})
	})
	for _, err := range prepErrs {
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// removeBatch removes the tasks and records of b still there. Best-effort:
// a leftover does not change the round's numbers, and the daemon's
// teardown deletes every task it still has.
func (e *env) removeBatch(b *batch) {
	parallel(len(b.cs), prepParallelism, func(i int) {
		if b.cs[i] == nil {
			return
		}
		if err := e.removeTask(b.cs[i], b.tasks[i]); err != nil {
			fmt.Fprintln(os.Stderr, "bench: concurrency:", err)
		}
	})
}

// createAndStart creates and starts every task at once.
func (b *batch) createAndStart(ctx context.Context) {
	parallel(len(b.cs), 0, func(i int) {
		t, err := b.cs[i].NewTask(ctx, cio.NullIO)
		if err != nil {
			b.errs[i] = fmt.Errorf("create task %s: %w", b.cs[i].ID(), err)
			return
		}
		b.tasks[i] = t
		if b.exits[i], err = t.Wait(ctx); err != nil {
			b.errs[i] = fmt.Errorf("wait %s: %w", b.cs[i].ID(), err)
			return
		}
		if err := t.Start(ctx); err != nil {
			b.errs[i] = fmt.Errorf("start %s: %w", b.cs[i].ID(), err)
		}
	})
}

// waitExits waits for every started task to exit, and fails those that
// exited with an error.
func (b *batch) waitExits(ctx context.Context) {
	parallel(len(b.cs), 0, func(i int) {
		if b.errs[i] != nil {
			return
		}
		select {
		case st := <-b.exits[i]:
			if err := st.Error(); err != nil {
				b.errs[i] = fmt.Errorf("wait %s: %w", b.cs[i].ID(), err)
			} else if st.ExitCode() != 0 {
				b.errs[i] = fmt.Errorf("%s exited %d", b.cs[i].ID(), st.ExitCode())
			}
		case <-ctx.Done():
			b.errs[i] = fmt.Errorf("%s did not exit: %w", b.cs[i].ID(), ctx.Err())
		}
	})
}

// deleteTasks deletes every task that exited well at once.
func (b *batch) deleteTasks(ctx context.Context) {
	parallel(len(b.cs), 0, func(i int) {
		if b.errs[i] != nil || b.tasks[i] == nil {
			return
		}
		if _, err := b.tasks[i].Delete(ctx); err != nil {
			b.errs[i] = fmt.Errorf("delete task %s: %w", b.cs[i].ID(), err)
			return
		}
		b.tasks[i] = nil
	})
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
	res.LibRatios = ratios(thr[0], thr[2])
	return res, nil
}
