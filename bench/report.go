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
	StartupN      int      `json:"startup_n"`
	TraceN        int      `json:"trace_n"`
	CRIN          int      `json:"cri_n"`
	NodeN         int      `json:"node_n"`
	NodePods      int      `json:"node_pods"`
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

	Startup     *startupResult     `json:"startup,omitempty"`
	Ctr         []*pairedResult    `json:"ctr,omitempty"`
	Trace       *traceResult       `json:"trace,omitempty"`
	Lifecycle   *pairedResult      `json:"lifecycle,omitempty"`
	Child       *pairedResult      `json:"child,omitempty"`
	CRI         []*pairedResult    `json:"cri,omitempty"`
	Node        *nodeResult        `json:"node,omitempty"`
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
	// Note qualifies the verdict, e.g. too few samples to count.
	Note string `json:"note,omitempty"`
}

func newTarget(name string, value float64, op string, limit float64, unit string) target {
	var pass bool
	switch op {
	case ">=":
		pass = value >= limit
	case "<=":
		pass = value <= limit
	}
	return target{Name: name, Value: value, Op: op, Limit: limit, Unit: unit, Pass: pass}
}

// ciTarget passes when the interval [lo, hi] of a ratio nsiso/runc.v2
// contains 1, or lies below it: the target is that nsiso be not
// measurably slower, and one measurably faster is noted, not failed.
func ciTarget(name string, lo, hi float64) target {
	t := target{Name: name, Value: lo, Op: "..", Limit: hi, Pass: lo <= 1}
	if hi < 1 {
		t.Note = "below 1: nsiso measurably faster"
	}
	return t
}

// The goals: where users meet it, nsiso must not be told from the stock
// runc.v2 of the same containerd.
const (
	// Every paired benchmark: the median of per-pair ratios nsiso/runc.v2
	// at most maxRatio, with its 95 % confidence interval containing 1,
	// over at least minPairs pairs.
	maxRatio = 1.01
	minPairs = 200
	// A full node: the ratio at N pods within 1 % of the ratio at 0.
	maxNodeDrift = 0.01
	// A shim's resident memory at most this much over runc.v2's, at
	// start-up and serving a container.
	maxRSSDiffMiB       = 0.25
	concurrencyMinRatio = 0.98
	rewriteMaxNs        = 20000
	rewriteMaxAllocs    = 50
	// rewritePackage is the package whose benchmarks the rewrite goals
	// are about; the shim's benchmarks are reported without a goal.
	rewritePackage = "github.com/nsiso/nsiso/specmod"
)

// pairedTargets are the goals of one paired benchmark against the stock
// runc.v2 (against the runc handler, for CRI).
func pairedTargets(p *pairedResult, against string) []target {
	c := p.comparison("nsiso", against)
	if c == nil {
		return nil
	}
	note := ""
	if c.Ratio.N < minPairs {
		note = fmt.Sprintf("%d pairs, fewer than the %d the target is set for", c.Ratio.N, minPairs)
	}
	t1 := newTarget(p.Name+": median per-pair ratio nsiso/"+against, c.Ratio.Median, "<=", maxRatio, "")
	t2 := ciTarget(p.Name+": its 95% CI contains 1.00", c.RatioCI[0], c.RatioCI[1])
	t1.Note = note
	t2.Note = strings.TrimPrefix(t2.Note+"; "+note, "; ")
	t2.Note = strings.TrimSuffix(t2.Note, "; ")
	return []target{t1, t2}
}

// evaluate fills in the targets of whatever ran.
func (r *result) evaluate() {
	r.Targets = nil
	if s := r.Startup; s != nil && len(s.Sides) > 1 {
		if c := findComparison(s.Compare, "nsiso", "runc.v2"); c != nil {
			r.Targets = append(r.Targets, ciTarget("startup: 95% CI of the median per-pair wall ratio nsiso/runc.v2 contains 1.00", c.RatioCI[0], c.RatioCI[1]))
		}
		r.Targets = append(r.Targets, newTarget("startup: median peak RSS nsiso - runc.v2", s.Sides[0].MaxRSSMiB.Median-s.Sides[1].MaxRSSMiB.Median, "<=", maxRSSDiffMiB, "MiB"))
	}
	for _, p := range r.Ctr {
		r.Targets = append(r.Targets, pairedTargets(p, "runc.v2")...)
	}
	for _, p := range []*pairedResult{r.Lifecycle, r.Child} {
		if p != nil {
			r.Targets = append(r.Targets, pairedTargets(p, "runc.v2")...)
		}
	}
	for _, p := range r.CRI {
		r.Targets = append(r.Targets, pairedTargets(p, "runc")...)
	}
	if n := r.Node; n != nil && n.Empty != nil && n.Full != nil {
		r.Targets = append(r.Targets, pairedTargets(n.Empty, "runc")...)
		r.Targets = append(r.Targets, pairedTargets(n.Full, "runc")...)
		r.Targets = append(r.Targets, newTarget(fmt.Sprintf("node: |ratio at %d pods / ratio at 0 - 1|", n.Pods), math.Abs(n.Drift-1), "<=", maxNodeDrift, ""))
	}
	if c := r.Concurrency; c != nil && len(c.Sides) > 1 {
		r.Targets = append(r.Targets,
			newTarget("concurrency: median throughput nsiso/runc.v2", c.Sides[0].Throughput.Median/c.Sides[1].Throughput.Median, ">=", concurrencyMinRatio, ""),
			newTarget("concurrency: failed containers", float64(c.Failures), "<=", 0, ""))
	}
	if m := r.Memory; m != nil {
		r.Targets = append(r.Targets, newTarget("memory: median shim VmRSS nsiso - runc.v2", m.DiffMiB, "<=", maxRSSDiffMiB, "MiB"))
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
	printHost(w, r)
	s := &sections{w: w}
	if r.Startup != nil {
		printStartup(s, r.Startup)
	}
	for _, p := range r.Ctr {
		s.pairedSection(p)
	}
	if r.Trace != nil {
		printTraceSection(s, r.Trace)
	}
	for _, p := range []*pairedResult{r.Lifecycle, r.Child} {
		if p != nil {
			s.pairedSection(p)
		}
	}
	for _, p := range r.CRI {
		s.pairedSection(p)
	}
	if r.Node != nil {
		printNode(s, r.Node)
	}
	if r.Concurrency != nil {
		printConcurrency(s, r.Concurrency)
	}
	if r.Memory != nil {
		printMemory(s, r.Memory)
	}
	if len(r.Micro) > 0 {
		printMicro(s, r.Micro)
	}
	printTargets(w, r.Targets)
	if r.Error != "" {
		fmt.Fprintf(w, "ERROR: %s\n", r.Error)
	}
}

// sections numbers the report's sections as they are written.
type sections struct {
	w io.Writer
	n int
}

// head writes the next section's numbered heading.
func (s *sections) head(format string, args ...any) {
	s.n++
	fmt.Fprintf(s.w, "\n%d. "+format+"\n", append([]any{s.n}, args...)...)
}

// pairedSection writes a paired benchmark as a section of its own.
func (s *sections) pairedSection(p *pairedResult) {
	s.head("%s", p.Name)
	printPaired(s.w, p)
}

// printHost writes where the run was measured and the shim binaries.
func printHost(w io.Writer, r *result) {
	h := r.Host
	fmt.Fprintf(w, "\nnsiso vs runc.v2 on a private containerd %s (%s snapshotter), runc %s\n", h.Containerd, h.Snapshotter, strings.TrimPrefix(h.Runc, "runc version "))
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
		fmt.Fprintf(w, "WARNING: nsiso and runc.v2-lib differ in %s; that comparison is not apples to apples\n", strings.Join(r.Unfair, ", "))
	}
}

func printStartup(sec *sections, s *startupResult) {
	w := sec.w
	sec.head("startup: `shim -v`, the binary alone (%d runs each, interleaved), and its package inits (GODEBUG=inittrace=1)", s.N)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "shim\tsize MiB\twall ms\tp95\tCPU ms\tpeak RSS MiB\tminor faults\tinit ms\tinit allocs\tpackages\t")
	for _, x := range s.Sides {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%.2f\t%.0f\t%d\t\n", x.Runtime, float64(x.SizeBytes)/(1<<20), x.WallMs.Median, x.WallMs.P95,
			x.CPUMs.Median, x.MaxRSSMiB.Median, x.MinorFaults.Median, x.InitMs.Median, x.InitAllocs.Median, x.Packages)
	}
	tw.Flush()
	for _, c := range s.Compare {
		fmt.Fprintf(w, "wall %s/%s per pair: median %.3f (95%% CI %.3f..%.3f)\n", c.A, c.B, c.Ratio.Median, c.RatioCI[0], c.RatioCI[1])
	}
	for _, x := range s.Sides {
		var parts []string
		for _, t := range x.TopInits {
			parts = append(parts, fmt.Sprintf("%s %.3f", t.Package, t.Ms))
		}
		fmt.Fprintf(w, "slowest inits of %s (ms): %s\n", x.Runtime, strings.Join(parts, ", "))
	}
	for _, o := range s.Only {
		if o.A == "nsiso" || o.B == "nsiso" {
			fmt.Fprintf(w, "inits in %s, not in %s: %s\n", o.A, o.B, strings.Join(o.Packages, " "))
		}
	}
}

// printTraceSection writes the trace's modes, the probes nsiso's shim
// lacks and the profile taken meanwhile.
func printTraceSection(sec *sections, t *traceResult) {
	if t.Skipped != "" {
		sec.head("trace: skipped: %s", t.Skipped)
	}
	for _, m := range t.Modes {
		sec.head("trace %s: where the time goes (%d traced `ctr run --rm` per shim; medians, ms; \"@ client done\" is the client's whole run)", m.Mode, m.N)
		printTrace(sec.w, m)
	}
	if miss, ok := t.Missing["nsiso"]; ok {
		fmt.Fprintf(sec.w, "probes missing from nsiso's shim: %s\n", strings.Join(miss, ", "))
	}
	p := t.Profile
	switch {
	case p == nil:
	case p.Skipped != "":
		sec.head("profile: skipped: %s", p.Skipped)
	default:
		sec.head("profile: every CPU sampled at %d Hz during the trace runs (%.0f s, %s); samples of the shims' processes", perfFreq, p.Seconds, p.Perf)
		printProfile(sec.w, p)
	}
}

func printNode(sec *sections, n *nodeResult) {
	w := sec.w
	sec.head("node: %d pods under nsiso (%d with a private container besides), filled in %.0f s", n.Pods, n.PrivatePods, n.FillSeconds)
	fmt.Fprintf(w, "host mounts: %d empty, %d full: %+d, %.2f per pod; of them nsiso's own (private /dev/shm): %d\n",
		n.MountsEmpty, n.MountsFull, n.MountsFull-n.MountsEmpty, float64(n.MountsFull-n.MountsEmpty)/float64(n.Pods), n.NsisoMounts)
	fmt.Fprintf(w, "shims: %d, VmRSS total %.1f MiB (%.2f per shim), Pss total %.1f MiB (%.2f per shim)\n",
		n.Shims, n.ShimRSSMiB, n.ShimRSSMiB/float64(max(1, n.Shims)), n.ShimPssMiB, n.ShimPssMiB/float64(max(1, n.Shims)))
	for _, p := range []*pairedResult{n.Empty, n.Full} {
		if p != nil {
			fmt.Fprintf(w, "\n%s: %s\n", p.Name, p.What)
			printPaired(w, p)
		}
	}
	fmt.Fprintf(w, "ratio at %d pods / ratio at 0: %.4f\n", n.Pods, n.Drift)
}

func printConcurrency(sec *sections, c *concurrencyResult) {
	w := sec.w
	warm := ""
	if c.Warmup {
		warm = " after an untimed warm-up round each"
	}
	sec.head("concurrency: %d /bin/true tasks created+started at once, waited, deleted at once; %d rounds per runtime%s", c.Containers, c.Sides[0].WallMs.N, warm)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "runtime\tmedian wall ms\tmin\tmax\tcontainers/s\tCPU ms/container\tfailures\t")
	for _, s := range c.Sides {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%d\t\n", s.Runtime, s.WallMs.Median, s.WallMs.Min, s.WallMs.Max, s.Throughput.Median, s.CPUMs.Median, s.Failures)
	}
	tw.Flush()
	fmt.Fprintf(w, "throughput nsiso/runc.v2: of medians %.3f; per round %s\n", c.Sides[0].Throughput.Median/c.Sides[1].Throughput.Median, formatFloats(c.Ratios))
	fmt.Fprintf(w, "throughput nsiso/runc.v2-lib: of medians %.3f; per round %s\n", c.Sides[0].Throughput.Median/c.Sides[2].Throughput.Median, formatFloats(c.LibRatios))
	fmt.Fprintf(w, "CPU per container nsiso/runc.v2: of medians %.3f (%+.1f ms)\n", c.Sides[0].CPUMs.Median/c.Sides[1].CPUMs.Median, c.Sides[0].CPUMs.Median-c.Sides[1].CPUMs.Median)
	if c.WarmupFailures > 0 {
		fmt.Fprintf(w, "failed containers in the warm-up rounds: %d\n", c.WarmupFailures)
	}
	for _, rr := range c.Rounds {
		if rr.FirstFailure != "" {
			fmt.Fprintf(w, "%s round %d: first failure: %s\n", rr.Runtime, rr.Round+1, rr.FirstFailure)
		}
	}
}

func printMemory(sec *sections, m *memoryResult) {
	sec.head("memory: shim per container, %d long-running containers per runtime, read after %.0f s idle, MiB", m.PerRuntime, m.SettleMs/1000)
	tw := tabwriter.NewWriter(sec.w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "runtime\tmedian VmRSS\tmin\tmax\tmedian Pss\t")
	for _, s := range m.Sides {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t\n", s.Runtime, s.RSSMiB.Median, s.RSSMiB.Min, s.RSSMiB.Max, s.PssMiB.Median)
	}
	tw.Flush()
	fmt.Fprintf(sec.w, "VmRSS nsiso - runc.v2: %+.2f MiB; nsiso - runc.v2-lib: %+.2f MiB\n", m.DiffMiB, m.LibDiffMiB)
}

func printMicro(sec *sections, micro []microResult) {
	sec.head("micro-benchmarks (go test -bench -benchmem)")
	tw := tabwriter.NewWriter(sec.w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "benchmark\tns/op\tB/op\tallocs/op\t")
	for _, b := range micro {
		fmt.Fprintf(tw, "%s.%s\t%.0f\t%.0f\t%.0f\t\n", filepath.Base(b.Package), b.Name, b.NsPerOp, b.BytesPerOp, b.AllocsPerOp)
	}
	tw.Flush()
}

func printTargets(w io.Writer, targets []target) {
	fmt.Fprintf(w, "\ntargets\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range targets {
		verdict := "PASS"
		if !t.Pass {
			verdict = "FAIL"
		}
		value := formatValue(t.Value, t.Unit)
		limit := t.Op + " " + formatValue(t.Limit, t.Unit)
		if t.Op == ".." {
			value, limit = fmt.Sprintf("%.3f..%.3f", t.Value, t.Limit), "∋ 1.000"
		}
		note := ""
		if t.Note != "" {
			note = " (" + t.Note + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s%s\n", t.Name, value, limit, verdict, note)
	}
	tw.Flush()
}

// printPaired writes one paired benchmark: each runtime's distribution and
// stages, then every comparison.
func printPaired(w io.Writer, p *pairedResult) {
	n := 0
	if len(p.Sides) > 0 {
		n = p.Sides[0].TotalMs.N
	}
	fmt.Fprintf(w, "%s (%d rounds, %d warm-up), ms\n", p.What, n, p.Warmups)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := "runtime\tmedian\tp95\tmin\t"
	for _, s := range p.Stages {
		hdr += "median " + s + "\t"
	}
	fmt.Fprintln(tw, hdr)
	for _, s := range p.Sides {
		line := fmt.Sprintf("%s\t%.1f\t%.1f\t%.1f\t", s.Runtime, s.TotalMs.Median, s.TotalMs.P95, s.TotalMs.Min)
		for _, st := range p.Stages {
			line += fmt.Sprintf("%.1f\t", s.Stages[st].Median)
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	for _, c := range p.Compare {
		fmt.Fprintf(w, "%s/%s per pair: median %.3f (95%% CI %.3f..%.3f), p5..p95 %.3f..%.3f; difference median %+.2f ms (95%% CI %+.2f..%+.2f)\n",
			c.A, c.B, c.Ratio.Median, c.RatioCI[0], c.RatioCI[1], quantile(c.Ratios, 0.05), quantile(c.Ratios, 0.95), c.DiffMs.Median, c.DiffMsCI[0], c.DiffMsCI[1])
	}
}

// printProfile writes each shim binary's samples and hottest functions.
func printProfile(w io.Writer, p *profileResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "shim\tprocesses\tuser samples\tkernel samples\tCPU ms per container\t")
	for _, b := range p.Binaries {
		per := 0.0
		if p.Containers > 0 {
			per = float64(b.UserSample+b.KernSample) / float64(p.Containers) * 1000 / perfFreq
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.2f\t\n", b.Runtime, b.Processes, b.UserSample, b.KernSample, per)
	}
	tw.Flush()
	for _, b := range p.Binaries {
		var parts []string
		for _, s := range b.Packages {
			parts = append(parts, fmt.Sprintf("%s %d", s.Name, s.Samples))
		}
		fmt.Fprintf(w, "%s, user samples by package: %s\n", b.Runtime, strings.Join(parts, ", "))
		parts = parts[:0]
		for _, s := range b.Top {
			parts = append(parts, fmt.Sprintf("%s %d", s.Name, s.Samples))
		}
		fmt.Fprintf(w, "%s, hottest functions: %s\n", b.Runtime, strings.Join(parts, ", "))
		parts = parts[:0]
		for _, s := range b.TopKernel {
			parts = append(parts, fmt.Sprintf("%s %d", s.Name, s.Samples))
		}
		fmt.Fprintf(w, "%s, in the kernel: %s\n", b.Runtime, strings.Join(parts, ", "))
	}
}

// printTrace writes one mode's phases, a row per phase, a column per
// runtime, and nsiso's difference from runc.v2.
func printTrace(w io.Writer, m traceMode) {
	names := []string{"nsiso", "runc.v2", "runc.v2-lib"}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tnsiso\trunc.v2\trunc.v2-lib\tnsiso - runc.v2\t")
	for _, ph := range phaseOrder {
		line := ph + "\t"
		seen := false
		var v [3]float64
		var ok [3]bool
		for i, n := range names {
			s, found := m.Phases[n][ph]
			if found && s.N > 0 {
				v[i], ok[i], seen = s.Median, true, true
				line += fmt.Sprintf("%.2f\t", s.Median)
			} else {
				line += "-\t"
			}
		}
		if !seen {
			continue
		}
		if ok[0] && ok[1] {
			line += fmt.Sprintf("%+.2f\t", v[0]-v[1])
		} else {
			line += "\t"
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
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
