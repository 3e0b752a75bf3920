package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
)

// params are the knobs a result was measured with.
type params struct {
	N             int      `json:"n"`
	Warmup        int      `json:"warmup"`
	Concurrency   int      `json:"concurrency"`
	Rounds        int      `json:"rounds"`
	MemContainers int      `json:"memory_containers"`
	StateTmpfs    bool     `json:"state_tmpfs"`
	Skip          []string `json:"skip,omitempty"`
}

// result is the machine-readable outcome of a run, written as JSON.
type result struct {
	Host   hostFacts    `json:"host"`
	Shims  []shimBinary `json:"shims"`
	Fair   bool         `json:"same_library_and_flags"`
	Unfair []string     `json:"differences,omitempty"`
	Params params       `json:"params"`

	Lifecycle   *pairedResult      `json:"lifecycle,omitempty"`
	Child       *pairedResult      `json:"child,omitempty"`
	Concurrency *concurrencyResult `json:"concurrency,omitempty"`
	Memory      *memoryResult      `json:"memory,omitempty"`
	Micro       []microResult      `json:"micro,omitempty"`

	Targets  []target `json:"targets"`
	Pass     bool     `json:"pass"`
	Error    string   `json:"error,omitempty"`
	Duration float64  `json:"duration_s"`
}

// target is one of the performance goals and how the run fared.
type target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Op    string  `json:"op"`
	Limit float64 `json:"limit"`
	Unit  string  `json:"unit,omitempty"`
	Pass  bool    `json:"pass"`
}

func newTarget(name string, value float64, op string, limit float64, unit string) target {
	pass := value <= limit
	if op == ">=" {
		pass = value >= limit
	}
	return target{Name: name, Value: value, Op: op, Limit: limit, Unit: unit, Pass: pass}
}

// The goals: nsiso must cost next to nothing over runc.v2.
const (
	lifecycleMaxRatio   = 1.02
	childMaxRatio       = 1.05
	concurrencyMinRatio = 0.98
	memoryMaxDiffMiB    = 1.0
	rewriteMaxNs        = 20000
	rewriteMaxAllocs    = 50
	// rewritePackage is the package whose benchmarks the rewrite goals
	// are about; the shim's benchmarks are reported without a goal.
	rewritePackage = "github.com/nsiso/nsiso/specmod"
)

// evaluate fills in the targets of whatever ran.
func (r *result) evaluate() {
	r.Targets = nil
	if r.Lifecycle != nil {
		r.Targets = append(r.Targets, newTarget("lifecycle: median of per-pair ratios nsiso/runc.v2", r.Lifecycle.Ratio.Median, "<=", lifecycleMaxRatio, ""))
	}
	if r.Child != nil {
		r.Targets = append(r.Targets, newTarget("child: median of per-pair ratios nsiso/runc.v2", r.Child.Ratio.Median, "<=", childMaxRatio, ""))
	}
	if c := r.Concurrency; c != nil {
		r.Targets = append(r.Targets,
			newTarget("concurrency: median throughput nsiso/runc.v2", c.A.Throughput.Median/c.B.Throughput.Median, ">=", concurrencyMinRatio, ""),
			newTarget("concurrency: failed containers", float64(c.Failures), "<=", 0, ""))
	}
	if m := r.Memory; m != nil {
		r.Targets = append(r.Targets, newTarget("memory: median shim VmRSS nsiso - runc.v2", m.DiffMiB, "<=", memoryMaxDiffMiB, "MiB"))
	}
	for _, b := range r.Micro {
		if b.Package != rewritePackage {
			continue
		}
		r.Targets = append(r.Targets,
			newTarget("rewrite "+b.Name+": time", b.NsPerOp, "<=", rewriteMaxNs, "ns/op"),
			newTarget("rewrite "+b.Name+": allocations", b.AllocsPerOp, "<=", rewriteMaxAllocs, "allocs/op"))
	}
	r.Pass = r.Error == ""
	for _, t := range r.Targets {
		r.Pass = r.Pass && t.Pass
	}
}

// microResult is one benchmark line of `go test -bench -benchmem`.
type microResult struct {
	Package     string  `json:"package"`
	Name        string  `json:"name"`
	Iterations  int64   `json:"iterations"`
	NsPerOp     float64 `json:"ns_per_op"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
}

// parseMicro reads `go test -bench -benchmem` output. Benchmark names lose
// their -GOMAXPROCS suffix.
func parseMicro(r io.Reader) ([]microResult, error) {
	var out []microResult
	pkg := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		iters, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		m := microResult{Package: pkg, Name: f[0], Iterations: iters}
		if i := strings.LastIndexByte(m.Name, '-'); i > 0 {
			if _, err := strconv.Atoi(m.Name[i+1:]); err == nil {
				m.Name = m.Name[:i]
			}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark line %q: %w", line, err)
			}
			switch f[i+1] {
			case "ns/op":
				m.NsPerOp = v
			case "B/op":
				m.BytesPerOp = v
			case "allocs/op":
				m.AllocsPerOp = v
			}
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func readMicro(path string) ([]microResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("micro-benchmark output: %w", err)
	}
	defer f.Close()
	m, err := parseMicro(f)
	if err != nil {
		return nil, fmt.Errorf("micro-benchmark output %s: %w", path, err)
	}
	return m, nil
}

func writeJSON(path string, r *result) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// printReport writes the human-readable tables.
func printReport(w io.Writer, r *result) {
	h := r.Host
	fmt.Fprintf(w, "\nnsiso vs runc.v2 on one private containerd %s (%s snapshotter), runc %s\n", h.Containerd, h.Snapshotter, strings.TrimPrefix(h.Runc, "runc version "))
	fmt.Fprintf(w, "%d CPUs (%s), kernel %s, cgroup %s, containerd state on %s, runc root on %s, %s\n", h.CPUs, h.CPUModel, h.Kernel, h.Cgroup, h.StateFS, h.RuncRootFS, h.Date)
	fmt.Fprintf(w, "repository %s, load average at start %s, at end %s\n", h.Repo, h.LoadAvg[0], h.LoadAvg[1])
	if h.OtherDaemons[0]+h.OtherDaemons[1] > 0 {
		fmt.Fprintf(w, "WARNING: other containerd daemons were running (%d at start, %d at end); their load is in these numbers\n", h.OtherDaemons[0], h.OtherDaemons[1])
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "shim\tbinary\tsha256\tversion\tcontainerd library\tGo\tCGO_ENABLED\t-trimpath")
	for _, s := range r.Shims {
		path := s.Path
		if s.BuiltAt != "" {
			path = s.BuiltAt
		}
		fmt.Fprintf(tw, "%s\t%s\t%.12s\t%s\t%s\t%s\t%s\t%v\n", s.Runtime, path, s.SHA256, s.Version, s.ContainerdLib, s.GoVersion, s.CGOEnabled, s.Trimpath)
	}
	tw.Flush()
	if !r.Fair {
		fmt.Fprintf(w, "WARNING: the shims differ in %s; the comparison is not apples to apples\n", strings.Join(r.Unfair, ", "))
	}

	for i, p := range []*pairedResult{r.Lifecycle, r.Child} {
		if p == nil {
			continue
		}
		fmt.Fprintf(w, "\n%d. %s: %s (%d pairs, %d warm-up pairs), ms\n", i+1, p.Name, p.What, p.A.TotalMs.N, p.Warmups)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "runtime\tmedian\tp95\tmin\tmedian create\tstart\texit\tdelete\t")
		for _, s := range []runtimeSamples{p.A, p.B} {
			fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", s.Runtime, s.TotalMs.Median, s.TotalMs.P95, s.TotalMs.Min,
				s.Stages["create"].Median, s.Stages["start"].Median, s.Stages["exit"].Median, s.Stages["delete"].Median)
		}
		tw.Flush()
		fmt.Fprintf(w, "nsiso/runc.v2 per pair: median %.3f (95%% CI %.3f..%.3f), p5..p95 %.3f..%.3f; ratio of medians %.3f\n",
			p.Ratio.Median, p.RatioCI[0], p.RatioCI[1], quantile(p.Ratios, 0.05), quantile(p.Ratios, 0.95), p.A.TotalMs.Median/p.B.TotalMs.Median)
		fmt.Fprintf(w, "nsiso-runc.v2 per pair: median %+.2f ms (95%% CI %+.2f..%+.2f)\n", p.DiffMs.Median, p.DiffMsCI[0], p.DiffMsCI[1])
		if s := p.PrepareInSituMs; s != nil {
			fmt.Fprintf(w, "nsiso prepare in the shim (debug log, upper bound): median %.2f ms, p95 %.2f ms over %d containers\n", s.Median, s.P95, s.N)
		}
	}
	if c := r.Concurrency; c != nil {
		warm := ""
		if c.Warmup {
			warm = " after an untimed warm-up round each"
		}
		fmt.Fprintf(w, "\n3. concurrency: %d /bin/true tasks created+started at once, waited, deleted at once; %d rounds per runtime%s\n", c.Containers, c.A.WallMs.N, warm)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "runtime\tmedian wall ms\tmin\tmax\tcontainers/s\tCPU ms/container\tfailures\t")
		for _, s := range []concurrencySide{c.A, c.B} {
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%d\t\n", s.Runtime, s.WallMs.Median, s.WallMs.Min, s.WallMs.Max, s.Throughput.Median, s.CPUMs.Median, s.Failures)
		}
		tw.Flush()
		fmt.Fprintf(w, "throughput nsiso/runc.v2: of medians %.3f; per round pair %s\n", c.A.Throughput.Median/c.B.Throughput.Median, formatFloats(c.Ratios))
		fmt.Fprintf(w, "CPU per container nsiso/runc.v2: of medians %.3f (%+.1f ms)\n", c.A.CPUMs.Median/c.B.CPUMs.Median, c.A.CPUMs.Median-c.B.CPUMs.Median)
		if c.WarmupFailures > 0 {
			fmt.Fprintf(w, "failed containers in the warm-up rounds: %d\n", c.WarmupFailures)
		}
		for _, rr := range c.Rounds {
			if rr.FirstFailure != "" {
				fmt.Fprintf(w, "%s round %d: first failure: %s\n", rr.Runtime, rr.Round+1, rr.FirstFailure)
			}
		}
	}
	if m := r.Memory; m != nil {
		fmt.Fprintf(w, "\n4. memory: shim per container, %d long-running containers per runtime, read after %.0f s idle, MiB\n", m.PerRuntime, m.SettleMs/1000)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "runtime\tmedian VmRSS\tmin\tmax\tmedian Pss\t")
		for _, s := range []memorySide{m.A, m.B} {
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t\n", s.Runtime, s.RSSMiB.Median, s.RSSMiB.Min, s.RSSMiB.Max, s.PssMiB.Median)
		}
		tw.Flush()
	}
	if len(r.Micro) > 0 {
		fmt.Fprintf(w, "\n5. micro-benchmarks (go test -bench -benchmem)\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "benchmark\tns/op\tB/op\tallocs/op\t")
		for _, b := range r.Micro {
			fmt.Fprintf(tw, "%s.%s\t%.0f\t%.0f\t%.0f\t\n", filepath.Base(b.Package), b.Name, b.NsPerOp, b.BytesPerOp, b.AllocsPerOp)
		}
		tw.Flush()
	}

	fmt.Fprintf(w, "\ntargets\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range r.Targets {
		verdict := "PASS"
		if !t.Pass {
			verdict = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\n", t.Name, formatValue(t.Value, t.Unit), t.Op, formatValue(t.Limit, t.Unit), verdict)
	}
	tw.Flush()
	if r.Error != "" {
		fmt.Fprintf(w, "ERROR: %s\n", r.Error)
	}
}

func formatValue(v float64, unit string) string {
	var s string
	switch {
	case v == float64(int64(v)):
		s = strconv.FormatInt(int64(v), 10)
	case math.Abs(v) >= 100:
		s = strconv.FormatFloat(v, 'f', 0, 64)
	default:
		s = strconv.FormatFloat(v, 'f', 3, 64)
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}

func formatFloats(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 3, 64)
	}
	return strings.Join(parts, " ")
}
