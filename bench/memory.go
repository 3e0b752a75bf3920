package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nsiso/nsiso/internal/procfs"
)

// memorySettle is how long the shims idle before their memory is read:
// a shim's start-up garbage is collected within a few GC cycles, and the
// steady state is what a long-running container costs.
const memorySettle = 2 * time.Second

// memorySide is one runtime's shims.
type memorySide struct {
	Runtime string  `json:"runtime"`
	RSSKB   []int64 `json:"vm_rss_kb"`
	PssKB   []int64 `json:"pss_kb"`
	// RSSMiB and PssMiB are per shim, i.e. per container: runc.v2-style
	// shims serve one container each unless grouped by a CRI sandbox.
	RSSMiB summary `json:"vm_rss_mib"`
	PssMiB summary `json:"pss_mib"`
}

// memoryResult is benchmark 4.
type memoryResult struct {
	PerRuntime int          `json:"containers_per_runtime"`
	SettleMs   float64      `json:"settle_ms"`
	Sides      []memorySide `json:"runtimes"`
	// DiffMiB is nsiso's median VmRSS minus the stock runc.v2's, LibDiffMiB
	// minus the same-library runc.v2's.
	DiffMiB    float64 `json:"rss_diff_mib"`
	LibDiffMiB float64 `json:"rss_diff_lib_mib"`
}

// benchMemory starts n long-running containers per runtime, alternating,
// lets them settle, and reads each one's shim's VmRSS and Pss. Pss splits
// pages shared between shims of the same binary; VmRSS counts them in
// full for every shim.
func (e *env) benchMemory(ctx context.Context, n int) (_ *memoryResult, retErr error) {
	var sleepers []*sleeper
	defer func() {
		errs := make([]error, len(sleepers))
		parallel(len(sleepers), prepParallelism, func(i int) { errs[i] = e.stopSleeper(sleepers[i]) })
		if err := errors.Join(errs...); err != nil && retErr == nil {
			retErr = err
		}
	}()
	sides := e.runtimes()
	ids := map[string][]*sleeper{}
	for i := range n {
		for _, r := range sides {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			s, err := e.startSleeper(ctx, fmt.Sprintf("mem-%s-%d", r.short, i), r)
			if err != nil {
				return nil, err
			}
			sleepers = append(sleepers, s)
			ids[r.Name] = append(ids[r.Name], s)
		}
	}
	fmt.Fprintf(os.Stderr, "  memory: %d containers per runtime running; settling %s\n", n, memorySettle)
	select {
	case <-time.After(memorySettle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := &memoryResult{PerRuntime: n, SettleMs: ms(memorySettle)}
	for _, r := range sides {
		side := memorySide{Runtime: r.Name}
		var rss, pss []float64
		for _, s := range ids[r.Name] {
			pid, err := shimOf(s.c.ID(), s.t.Pid())
			if err != nil {
				return nil, err
			}
			rssKB, err := procfs.ReadKB(pid, "status", "VmRSS")
			if err != nil {
				return nil, err
			}
			pssKB, err := procfs.ReadKB(pid, "smaps_rollup", "Pss")
			if err != nil {
				return nil, err
			}
			side.RSSKB = append(side.RSSKB, rssKB)
			side.PssKB = append(side.PssKB, pssKB)
			rss = append(rss, float64(rssKB)/1024)
			pss = append(pss, float64(pssKB)/1024)
		}
		side.RSSMiB = summarize(rss)
		side.PssMiB = summarize(pss)
		res.Sides = append(res.Sides, side)
	}
	res.DiffMiB = res.Sides[0].RSSMiB.Median - res.Sides[1].RSSMiB.Median
	res.LibDiffMiB = res.Sides[0].RSSMiB.Median - res.Sides[2].RSSMiB.Median
	return res, nil
}
