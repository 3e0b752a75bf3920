package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// traceResult is the trace benchmark: the phases of each runtime's
// containers in each ctr mode, timed from the kernel's trace buffer.
type traceResult struct {
	// Probes missing from a shim binary, by runtime (nsiso's own probes
	// are missing from runc.v2's shims, as they should be).
	Missing map[string][]string `json:"missing_probes,omitempty"`
	Modes   []traceMode         `json:"modes"`
	Profile *profileResult      `json:"profile,omitempty"`
	// Skipped says why the kernel could not trace (no tracefs, no
	// uprobes); the other benchmarks do not need it.
	Skipped string `json:"skipped,omitempty"`
}

type traceMode struct {
	Mode string `json:"mode"`
	N    int    `json:"n"`
	// Phases maps runtime → phase → distribution, in milliseconds.
	Phases map[string]map[string]summary `json:"phases_ms"`
}

// settleAfterClient is how long the trace keeps recording after the client
// returned: containerd's clean-up after a shim (`shim delete`) may still
// be running.
const settleAfterClient = 100 * time.Millisecond

// benchTrace runs n traced `ctr run --rm` per runtime in each mode and
// splits each container's life into phases (see samplePhases). The
// uprobes cost a few microseconds per hit, so these runs are kept apart
// from the timed benchmarks.
func (e *env) benchTrace(ctx context.Context, n int) (_ *traceResult, retErr error) {
	rts := e.runtimes()
	var bins []string
	for _, r := range rts {
		bins = append(bins, r.shim)
	}
	tr, missing, err := openTracefs(bins)
	if err != nil {
		return &traceResult{Skipped: err.Error()}, nil
	}
	defer func() {
		if err := tr.close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	res := &traceResult{Missing: map[string][]string{}}
	for i, m := range missing {
		if len(m) > 0 {
			res.Missing[rts[i].Name] = m
		}
	}
	perf, skipped := startPerf(e.tmp)
	for _, m := range ctrModes {
		tm, err := e.traceMode(ctx, tr, m, n, bins)
		if err != nil {
			err = fmt.Errorf("trace %s: %w", m.Name, err)
			if perf != nil {
				_, perr := perf.stop(ctx, nil)
				err = errors.Join(err, perr)
			}
			return res, err
		}
		res.Modes = append(res.Modes, tm)
	}
	if perf == nil {
		res.Profile = &profileResult{Skipped: skipped}
		return res, nil
	}
	byPath := map[string]string{}
	for _, r := range rts {
		byPath[r.shim] = r.Name
	}
	if res.Profile, err = perf.stop(ctx, byPath); err != nil {
		return res, fmt.Errorf("profile: %w", err)
	}
	// The traced rounds and one untimed round per mode.
	res.Profile.Containers = (n + 1) * len(ctrModes)
	return res, nil
}

func (e *env) traceMode(ctx context.Context, tr *tracefs, m ctrMode, n int, bins []string) (_ traceMode, retErr error) {
	tm := traceMode{Mode: m.Name, N: n, Phases: map[string]map[string]summary{}}
	args, stop, err := m.setup(ctx, e)
	if err != nil {
		return tm, err
	}
	defer func() {
		if err := stop(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	rts := e.runtimes()
	per := make([]map[string][]float64, len(rts))
	for i := range per {
		per[i] = map[string][]float64{}
	}
	// One untimed round first, so that no runtime meets cold caches.
	for round := -1; round < n; round++ {
		for j := range rts {
			side := (j + round + 1) % len(rts)
			r := rts[side]
			if _, err := tr.take(); err != nil {
				return tm, err
			}
			id := fmt.Sprintf("trace-%s-%s-%d", m.Name, r.short, round+1)
			if err := tr.mark("nsiso-bench begin " + id); err != nil {
				return tm, err
			}
			_, err := e.ctrRun(ctx, r, id, args[side])
			if merr := tr.mark("nsiso-bench end " + id); err == nil {
				err = merr
			}
			if err != nil {
				return tm, err
			}
			select {
			case <-time.After(settleAfterClient):
			case <-ctx.Done():
				return tm, ctx.Err()
			}
			evs, err := tr.take()
			if err != nil {
				return tm, err
			}
			if round < 0 {
				continue
			}
			ph := samplePhases(evs, bins, e.runcPath, tr.probes)
			for k, v := range ph {
				per[side][k] = append(per[side][k], v)
			}
		}
		if round >= 0 && (round+1)%10 == 0 {
			fmt.Fprintf(os.Stderr, "  trace %s: %d/%d rounds\n", m.Name, round+1, n)
		}
	}
	for i, r := range rts {
		tm.Phases[r.Name] = map[string]summary{}
		for k, xs := range per[i] {
			tm.Phases[r.Name][k] = summarize(xs)
		}
	}
	return tm, nil
}
