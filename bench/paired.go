package main

import (
	"context"
	"fmt"
	"os"
	"time"
)

// stageSample is one run's timed stages, in milliseconds, in the order of
// its benchmark's stage names.
type stageSample []float64

func (s stageSample) total() float64 {
	t := 0.0
	for _, d := range s {
		t += d
	}
	return t
}

// runtimeSamples are one runtime's results in a paired benchmark, in
// milliseconds.
type runtimeSamples struct {
	Runtime string             `json:"runtime"`
	TotalMs summary            `json:"total_ms"`
	Stages  map[string]summary `json:"stages_ms,omitempty"`
	Samples []float64          `json:"samples_ms"`
}

// comparison sets one runtime against another, pair by pair: sample i of
// each ran in the same round, back to back, so slow spells of the machine
// hit both.
type comparison struct {
	A string `json:"a"`
	B string `json:"b"`
	// Ratio is the distribution of A/B over the pairs; its median is what
	// the targets are about.
	Ratio   summary    `json:"ratio"`
	RatioCI [2]float64 `json:"ratio_median_ci95"`
	Ratios  []float64  `json:"ratios"`
	// DiffMs is the distribution of A-B over the pairs: what A adds to one
	// run, in milliseconds.
	DiffMs   summary    `json:"diff_ms"`
	DiffMsCI [2]float64 `json:"diff_ms_median_ci95"`
}

// pairedResult is a benchmark run in rounds, one sample per runtime per
// round.
type pairedResult struct {
	Name    string           `json:"name"`
	What    string           `json:"what"`
	Stages  []string         `json:"stages,omitempty"`
	Sides   []runtimeSamples `json:"runtimes"`
	Compare []comparison     `json:"comparisons"`
	Warmups int              `json:"warmups"`
}

// comparison returns the comparison of runtime a against b, or nil.
func (p *pairedResult) comparison(a, b string) *comparison { return findComparison(p.Compare, a, b) }

// findComparison returns the comparison of runtime a against b in cs, or
// nil.
func findComparison(cs []comparison, a, b string) *comparison {
	for i := range cs {
		if cs[i].A == a && cs[i].B == b {
			return &cs[i]
		}
	}
	return nil
}

// runPaired runs warmup untimed rounds, then n timed rounds, of one sample
// per runtime. The order of the runtimes rotates from round to round, so
// that none always runs first, or always right after another (whose
// leftovers, such as containerd's clean-up after a shim, may still run).
func runPaired(ctx context.Context, name, what string, stages []string, names []string, n, warmup int,
	run func(ctx context.Context, side, round int) (stageSample, error)) (*pairedResult, error) {
	k := len(names)
	samples := make([][]stageSample, k)
	last := time.Now()
	for i := -warmup; i < n; i++ {
		for j := range k {
			side := (j + i + warmup) % k
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			s, err := run(ctx, side, i+warmup)
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w", names[side], i+warmup, err)
			}
			if i >= 0 {
				samples[side] = append(samples[side], s)
			}
		}
		if i >= 0 && ((i+1)%10 == 0 || time.Since(last) > 30*time.Second) {
			fmt.Fprintf(os.Stderr, "  %s: %d/%d rounds\n", name, i+1, n)
			last = time.Now()
		}
	}
	res := &pairedResult{Name: name, What: what, Stages: stages, Warmups: warmup}
	for j, nm := range names {
		res.Sides = append(res.Sides, describeSamples(nm, stages, samples[j]))
	}
	for a := 0; a < k; a++ {
		for b := a + 1; b < k; b++ {
			res.Compare = append(res.Compare, compare(res.Sides[a], res.Sides[b]))
		}
	}
	return res, nil
}

func compare(a, b runtimeSamples) comparison {
	c := comparison{A: a.Runtime, B: b.Runtime}
	c.Ratios = ratios(a.Samples, b.Samples)
	c.Ratio = summarize(c.Ratios)
	c.RatioCI[0], c.RatioCI[1] = medianCI(c.Ratios, 0.95)
	diffs := differences(a.Samples, b.Samples)
	c.DiffMs = summarize(diffs)
	c.DiffMsCI[0], c.DiffMsCI[1] = medianCI(diffs, 0.95)
	return c
}

func describeSamples(name string, stages []string, ss []stageSample) runtimeSamples {
	r := runtimeSamples{Runtime: name}
	per := make([][]float64, len(stages))
	for _, s := range ss {
		r.Samples = append(r.Samples, s.total())
		for k := range stages {
			if k < len(s) {
				per[k] = append(per[k], s[k])
			}
		}
	}
	r.TotalMs = summarize(r.Samples)
	if len(stages) > 1 {
		r.Stages = map[string]summary{}
		for k, n := range stages {
			r.Stages[n] = summarize(per[k])
		}
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
