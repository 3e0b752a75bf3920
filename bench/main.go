// Command bench is `make bench`: it measures what the runtime
// io.containerd.nsiso.v1 costs over io.containerd.runc.v2, the way users
// meet it.
//
// Three shims run on one private containerd in the same run: nsiso, the
// stock containerd-shim-runc-v2 built with the containerd under test (what
// the targets compare against), and runc.v2 built from the containerd
// library nsiso is built on, with nsiso's build flags (so that it differs
// from nsiso only by nsiso's wrapper). Their samples are interleaved in
// rounds, the order rotating from round to round, so that a slow spell of
// the machine hits all, and every comparison is a ratio of paired samples.
// It measures:
//
//   - startup: the shim binary alone (`-v`): time, memory, package inits;
//   - ctr: `ctr run --rm ... /bin/true` as a whole process, in three modes
//     (unset, private with a /dev/shm size, share-parent child);
//   - trace: the same, traced, split into the phases of a shim's life;
//   - lifecycle and child: a task's create, start, exit and delete through
//     the Go client;
//   - cri: a pod's life through the CRI API, nsiso's handler against
//     runc's, with and without a pod /dev/shm size;
//   - node: 110 pods under nsiso, the cost of one more pod at N = 0 and at
//     N = 110, the host's mount table and the shims' memory;
//   - concurrency: many tasks created and started at once;
//   - memory: each shim's VmRSS (and Pss) with long-running containers.
//
// The spec rewrite itself is measured by `go test -bench` in specmod and
// shim; -micro reads that output into the same report.
//
// It prints tables, writes a JSON result, and leaves nothing behind: the
// daemons, their shims, containers, mounts, trace probes and files are
// removed at the end, on failure and on SIGINT or SIGTERM.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nsiso/nsiso/testenv"
)

// phases are the benchmarks -only can name, in the order they run.
var phases = []string{"startup", "ctr", "trace", "lifecycle", "child", "cri", "node", "concurrency", "memory"}

// options are the command line's settings.
type options struct {
	n, warmup, concurrency, rounds, memContainers int
	startupN, traceN, criN, nodeN, nodePods       int
	out, micro, runcShim                          string
	skip                                          []string
	check, stateTmpfs                             bool
}

// runs tells whether benchmark name is to run.
func (o options) runs(name string) bool { return !slices.Contains(o.skip, name) }

// parseFlags reads the command line into options.
func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	only := o.define(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := o.validSizes(); err != nil {
		return o, err
	}
	if err := o.skipAllBut(*only); err != nil {
		return o, err
	}
	if o.out == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			return o, err
		}
		o.out = filepath.Join(root, "_output", "bench", "result.json")
	}
	return o, nil
}

// define registers the flags on fs and returns -only's value.
func (o *options) define(fs *flag.FlagSet) *string {
	fs.IntVar(&o.n, "n", 50, "ctr, lifecycle and child: timed containers per runtime and mode")
	fs.IntVar(&o.warmup, "warmup", 3, "ctr, lifecycle, child, cri and node: untimed rounds first; concurrency: one untimed round per runtime first unless 0")
	fs.IntVar(&o.startupN, "startup-n", 200, "startup: `-v` runs per shim binary")
	fs.IntVar(&o.traceN, "trace-n", 20, "trace: traced containers per runtime and mode")
	fs.IntVar(&o.criN, "cri-n", 30, "cri: timed pods per handler and mode")
	fs.IntVar(&o.nodeN, "node-n", 30, "node: timed pods per handler at each node size")
	fs.IntVar(&o.nodePods, "node-pods", 110, "node: pods on the full node (kubelet's default maximum is 110)")
	fs.IntVar(&o.concurrency, "concurrency", 100, "concurrency: containers started at once")
	fs.IntVar(&o.rounds, "rounds", 3, "concurrency: rounds per runtime")
	fs.IntVar(&o.memContainers, "mem-containers", 10, "memory: long-running containers per runtime")
	fs.StringVar(&o.out, "out", "", "JSON result `path` (default <repo>/_output/bench/result.json)")
	fs.StringVar(&o.micro, "micro", "", "`file` holding `go test -bench -benchmem` output of specmod and shim, to include")
	fs.StringVar(&o.runcShim, "runc-shim", "", "containerd-shim-runc-v2 `binary` to compare with (default: build one from this module's containerd version)")
	fs.BoolVar(&o.stateTmpfs, "state-tmpfs", false, "keep containerd's state (the bundles) and runc's root on a tmpfs, as on hosts whose /run is one")
	fs.BoolVar(&o.check, "check", false, "exit 1 when a target is missed")
	return fs.String("only", "", "comma-separated benchmarks to run, skipping the others: "+strings.Join(phases, ","))
}

// validSizes checks that every count is at least 1 and -warmup at least 0.
func (o options) validSizes() error {
	if o.n < 1 || o.concurrency < 1 || o.rounds < 1 || o.memContainers < 1 || o.startupN < 1 || o.traceN < 1 || o.criN < 1 || o.nodeN < 1 || o.nodePods < 1 || o.warmup < 0 {
		return errors.New("-n, -startup-n, -trace-n, -cri-n, -node-n, -node-pods, -concurrency, -rounds and -mem-containers must be at least 1, -warmup at least 0")
	}
	return nil
}

// skipAllBut skips every benchmark not named in the comma-separated list
// only; an empty list runs them all.
func (o *options) skipAllBut(only string) error {
	var keep []string
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(phases, s) {
			return fmt.Errorf("-only: unknown benchmark %q (known: %s)", s, strings.Join(phases, ", "))
		}
		keep = append(keep, s)
	}
	for _, p := range phases {
		if len(keep) > 0 && !slices.Contains(keep, p) {
			o.skip = append(o.skip, p)
		}
	}
	return nil
}

// params are the options as the result records them.
func (o options) params() params {
	return params{N: o.n, Warmup: o.warmup, Concurrency: o.concurrency, Rounds: o.rounds,
		MemContainers: o.memContainers, StateTmpfs: o.stateTmpfs, Skip: o.skip,
		StartupN: o.startupN, TraceN: o.traceN, CRIN: o.criN, NodeN: o.nodeN, NodePods: o.nodePods}
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	o, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: run as root: containerd, runc and mounts need it")
		return 1
	}
	ctx, interrupted, stop := cancelOnSignal()
	defer stop()
	res := measureAll(ctx, o)
	printReport(os.Stdout, res)
	if err := writeJSON(o.out, res); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	fmt.Printf("\nresult: %s (%.0f s)\n", o.out, res.Duration)
	return exitCode(o, res, interrupted.Load())
}

// cancelOnSignal returns a context that SIGINT, SIGTERM and SIGHUP cancel,
// whether one came, and a function that releases the handler. The handler
// stays installed after the first signal: a second Ctrl-C must not kill
// the process halfway through removing what it started.
func cancelOnSignal() (context.Context, *atomic.Bool, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	var interrupted atomic.Bool
	go func() {
		for s := range sigs {
			fmt.Fprintf(os.Stderr, "bench: %v: stopping and removing everything this run started\n", s)
			interrupted.Store(true)
			cancel()
		}
	}()
	return ctx, &interrupted, func() {
		signal.Stop(sigs)
		cancel()
	}
}

// measureAll runs the benchmarks, reads the micro-benchmarks' output and
// judges the targets; any error is in the result.
func measureAll(ctx context.Context, o options) *result {
	start := time.Now()
	res := &result{Host: collectHostFacts(), Params: o.params()}
	if err := measure(ctx, o, res); err != nil {
		res.Error = err.Error()
	}
	res.Duration = time.Since(start).Seconds()
	if o.micro != "" {
		m, err := readMicro(o.micro)
		if err != nil {
			res.Error = strings.TrimPrefix(res.Error+"; "+err.Error(), "; ")
		}
		res.Micro = m
	}
	res.evaluate()
	return res
}

// exitCode is 130 after a signal, 1 after an error, a failed container or
// (with -check) a missed target, and 0 otherwise.
func exitCode(o options, res *result, interrupted bool) int {
	switch {
	case interrupted:
		return 130
	case res.Error != "":
		return 1
	case res.Concurrency != nil && res.Concurrency.Failures > 0:
		return 1
	case o.check && !res.Pass:
		return 1
	}
	return 0
}

// measure sets up the daemon, runs the benchmarks not skipped and tears
// everything down again, whatever happens.
func measure(ctx context.Context, o options, res *result) (retErr error) {
	deps, built, err := findBinaries()
	if err != nil {
		return err
	}
	scratch, err := os.MkdirTemp("", "nsiso-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	b, err := prepareShims(ctx, o, deps, built, scratch, res)
	if err != nil {
		return err
	}
	// Deferred: verifyShims adds the executables the daemon ran.
	defer func() { res.Shims = []shimBinary{b.nsiso, b.stock, b.lib} }()

	tarPath, err := writeImage(ctx, deps, scratch)
	if err != nil {
		return err
	}
	// Whatever runs, the load and any other daemon before and after it:
	// they say whether something else competed for the CPUs.
	res.Host.LoadAvg[0], res.Host.OtherDaemons[0] = loadAvg(), otherDaemons()
	defer func() { res.Host.LoadAvg[1], res.Host.OtherDaemons[1] = loadAvg(), otherDaemons() }()

	ctdDir, cfg, err := prepareDaemonDir(o, scratch)
	if err != nil {
		return err
	}
	e := b.env(filepath.Join(ctdDir, "runc"), scratch)
	pathDirs := b.pathDirs(deps)
	cri := criSetup{deps: deps, pathDirs: pathDirs, scratch: scratch, runcPath: b.runcPath, nsisoShim: b.nsisoPath,
		started: res.describeCRIDaemon}
	// Started first, so that it runs after the daemon's teardown.
	defer removeDefaultRuncRoot(benchNS)()
	if !o.needsDaemon() {
		// The CRI benchmarks start daemons of their own; this one's empty
		// directory left behind spoils nothing.
		if err := removeDaemonDir(ctdDir); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		return runBenches(ctx, o, e, cri, res)
	}
	ctd, err := startDaemon(ctx, deps, ctdDir, cfg, pathDirs)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "bench: stopping containerd")
		if err := ctd.Stop(); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	if err := e.attach(ctx, ctd, tarPath, b, res); err != nil {
		return err
	}
	return runBenches(ctx, o, e, cri, res)
}

// needsDaemon tells whether a benchmark to run needs the shared daemon;
// the CRI benchmarks start their own.
func (o options) needsDaemon() bool {
	return o.runs("ctr") || o.runs("trace") || o.runs("lifecycle") || o.runs("child") || o.runs("concurrency") || o.runs("memory")
}

// findBinaries finds the pinned dependencies and the nsiso shim `make
// build` built.
func findBinaries() (testenv.Deps, string, error) {
	deps, err := testenv.FindDeps()
	if err != nil {
		return deps, "", err
	}
	nsisoDir := os.Getenv("NSISO_BIN")
	if nsisoDir == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			return deps, "", err
		}
		nsisoDir = filepath.Join(root, "_output", "bin")
	}
	built, err := filepath.Abs(filepath.Join(nsisoDir, nsisoShim))
	if err != nil {
		return deps, "", err
	}
	if _, err := os.Stat(built); err != nil {
		return deps, "", fmt.Errorf("%s not built (run `make build`): %w", nsisoShim, err)
	}
	return deps, built, nil
}

// binaries are the run's copies of the three shims and of runc, and what
// each shim was built from.
type binaries struct {
	nsisoPath, stockPath, libPath, runcPath string
	nsiso, stock, lib                       shimBinary
}

// prepareShims copies the binaries into scratch and reads what the shims
// were built from into res.
func prepareShims(ctx context.Context, o options, deps testenv.Deps, built, scratch string, res *result) (*binaries, error) {
	b, err := copyBinaries(deps, built, scratch)
	if err != nil {
		return nil, err
	}
	res.Host.Repo = repoState()
	if err := b.inspect(ctx, o, deps, built); err != nil {
		return nil, err
	}
	res.Unfair = sameBuild(b.nsiso, b.lib)
	res.Fair = len(res.Unfair) == 0
	res.Host.Runc = runcVersion(b.runcPath)
	return b, nil
}

// copyBinaries copies the shims and runc into scratch. A rebuild of an
// original during the run (by make in another shell) must not change a
// binary halfway through, and the trace tells this run's shims and runc
// from anyone else's by path.
func copyBinaries(deps testenv.Deps, built, scratch string) (*binaries, error) {
	b := &binaries{
		nsisoPath: filepath.Join(scratch, "nsiso", nsisoShim),
		stockPath: filepath.Join(scratch, "stock", runcShim),
		libPath:   filepath.Join(scratch, "lib", runcShim),
		runcPath:  filepath.Join(scratch, "runc", "runc"),
	}
	for _, c := range [][2]string{{built, b.nsisoPath}, {deps.RuncShim, b.stockPath}, {deps.Runc, b.runcPath}} {
		if err := copyFile(c[0], c[1]); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// inspect provides the same-library runc.v2 (built, or -runc-shim's) and
// reads what each shim was built from and with.
func (b *binaries) inspect(ctx context.Context, o options, deps testenv.Deps, built string) error {
	if o.runcShim == "" {
		fmt.Fprintf(os.Stderr, "bench: building %s from %s as in go.mod\n", runcShim, containerdModule)
		if _, err := buildRuncShim(ctx, filepath.Dir(b.libPath)); err != nil {
			return err
		}
	} else if err := copyFile(o.runcShim, b.libPath); err != nil {
		return err
	}
	var err error
	if b.nsiso, err = inspectShim("nsiso", b.nsisoPath); err != nil {
		return err
	}
	b.nsiso.BuiltAt = built
	if b.stock, err = inspectShim("runc.v2", b.stockPath); err != nil {
		return err
	}
	b.stock.BuiltAt = deps.RuncShim
	if b.lib, err = inspectShim("runc.v2-lib", b.libPath); err != nil {
		return err
	}
	if o.runcShim != "" {
		b.lib.BuiltAt = o.runcShim
	}
	return nil
}

// env returns the benchmarks' environment before a daemon runs.
func (b *binaries) env(runcRoot, scratch string) *env {
	return &env{
		nsiso:    rt{Name: "nsiso", runtime: nsisoRuntime, short: "ns", shim: b.nsisoPath},
		stock:    rt{Name: "runc.v2", runtime: runcRuntime, short: "rc", shim: b.stockPath},
		lib:      rt{Name: "runc.v2-lib", runtime: b.libPath, short: "rl", shim: b.libPath},
		runcRoot: runcRoot,
		runcPath: b.runcPath,
		tmp:      scratch,
	}
}

// pathDirs are the daemon's PATH additions: the copies of runc and the
// stock runc.v2 first, so they win over the originals next to containerd;
// the same-library runc.v2 is run by its absolute path.
func (b *binaries) pathDirs(deps testenv.Deps) []string {
	return []string{filepath.Dir(b.runcPath), filepath.Dir(b.stockPath), filepath.Dir(b.nsisoPath), deps.BinDir}
}

// writeImage writes the busybox image the containers run as a tar in
// scratch.
func writeImage(ctx context.Context, deps testenv.Deps, scratch string) (string, error) {
	var img bytes.Buffer
	if err := testenv.BuildBusyboxImage(ctx, deps.Busybox, nil, imageRef, &img); err != nil {
		return "", err
	}
	tarPath := filepath.Join(scratch, "image.tar")
	if err := os.WriteFile(tarPath, img.Bytes(), 0o644); err != nil {
		return "", err
	}
	return tarPath, nil
}

// prepareDaemonDir makes the daemon's directory, with runc's root inside
// (on a tmpfs with -state-tmpfs), and the nsiso config in scratch. On
// error nothing of it is left.
func prepareDaemonDir(o options, scratch string) (string, string, error) {
	// Short: the daemon's sockets live inside and must fit in sun_path.
	dir, err := os.MkdirTemp("", "nsb-")
	if err != nil {
		return "", "", err
	}
	cfg, err := fillDaemonDir(o, dir, scratch)
	if err != nil {
		return "", "", errors.Join(err, removeDaemonDir(dir))
	}
	return dir, cfg, nil
}

// fillDaemonDir makes runc's root in dir, mounts the tmpfs of
// -state-tmpfs and writes the nsiso config; it returns the config's path.
func fillDaemonDir(o options, dir, scratch string) (string, error) {
	runcRoot := filepath.Join(dir, "runc")
	if err := os.MkdirAll(runcRoot, 0o711); err != nil {
		return "", err
	}
	if o.stateTmpfs {
		if err := mountTmpfs(filepath.Join(dir, "state"), runcRoot); err != nil {
			return "", err
		}
	}
	// Parent lookups read runc's state, so nsiso and the runc.v2
	// containers share one runc root inside the daemon's directory.
	cfg := filepath.Join(scratch, "nsiso.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "root = %q\n", runcRoot), 0o644); err != nil {
		return "", err
	}
	return cfg, nil
}

// startDaemon starts the private containerd in dir. On error dir is
// removed.
func startDaemon(ctx context.Context, deps testenv.Deps, dir, cfg string, pathDirs []string) (*testenv.Containerd, error) {
	ctd, err := testenv.StartContainerd(ctx, testenv.Options{
		Binary:      deps.Containerd,
		Dir:         dir,
		PathPrepend: pathDirs,
		Env:         []string{"NSISO_CONFIG=" + cfg},
	})
	if err != nil {
		// StartContainerd removes its directory unless it failed before
		// taking charge of it.
		return nil, errors.Join(err, removeDaemonDir(dir))
	}
	return ctd, nil
}

// attach points e at the running daemon: its namespace, the image
// imported, and the shims it runs checked against b.
func (e *env) attach(ctx context.Context, ctd *testenv.Containerd, tarPath string, b *binaries, res *result) error {
	res.Host.Containerd = ctd.Version()
	res.Host.Snapshotter = ctd.Snapshotter()
	res.Host.StateFS = testenv.FSType(filepath.Join(ctd.Dir(), "state"))
	res.Host.RuncRootFS = testenv.FSType(e.runcRoot)
	nctx, err := ctd.Namespace(ctx, benchNS)
	if err != nil {
		return err
	}
	image, err := testenv.ImportImage(nctx, ctd.Client(), tarPath)
	if err != nil {
		return err
	}
	e.ctd, e.ctx, e.image, e.fifoDir = ctd, nctx, image, ctd.FIFODir()
	e.stock.opts, e.lib.opts = ctd.RuncOptions(), ctd.RuncOptions()
	bins := map[string]*shimBinary{"nsiso": &b.nsiso, "runc.v2": &b.stock, "runc.v2-lib": &b.lib}
	if err := e.verifyShims(nctx, bins); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: containerd %s, shims %s, %s and %s\n", ctd.Version(), b.nsiso.RunningExe, b.stock.RunningExe, b.lib.RunningExe)
	return nil
}

// describeCRIDaemon records the CRI benchmarks' daemon as the host's
// when no other daemon ran: a CRI-only run has no other to describe.
func (r *result) describeCRIDaemon(ctd *testenv.Containerd) {
	if r.Host.Containerd == "" {
		r.Host.Containerd, r.Host.Snapshotter = ctd.Version(), ctd.Snapshotter()
		r.Host.StateFS = testenv.FSType(filepath.Join(ctd.Dir(), "state"))
		r.Host.RuncRootFS = testenv.FSType(filepath.Join(ctd.Dir(), "runc"))
	}
}

// runBenches runs the benchmarks not skipped, in order, into res.
func runBenches(ctx context.Context, o options, e *env, cri criSetup, res *result) error {
	benches := []struct {
		name string
		run  func() error
	}{
		{"startup", func() (err error) { res.Startup, err = e.benchStartup(ctx, o.startupN); return err }},
		{"ctr", func() (err error) { res.Ctr, err = e.benchCtr(e.ctx, o.n, o.warmup); return err }},
		{"trace", func() (err error) { res.Trace, err = e.benchTrace(e.ctx, o.traceN); return err }},
		{"lifecycle", func() (err error) { res.Lifecycle, err = e.benchLifecycle(e.ctx, o.n, o.warmup); return err }},
		{"child", func() (err error) { res.Child, err = e.benchChild(e.ctx, o.n, o.warmup); return err }},
		{"cri", func() (err error) { res.CRI, err = benchCRI(ctx, cri, o.criN, o.warmup); return err }},
		{"node", func() (err error) { res.Node, err = benchNode(ctx, cri, o.nodePods, o.nodeN, o.warmup); return err }},
		{"concurrency", func() (err error) {
			res.Concurrency, err = e.benchConcurrency(e.ctx, o.concurrency, o.rounds, o.warmup > 0)
			return err
		}},
		{"memory", func() (err error) { res.Memory, err = e.benchMemory(e.ctx, o.memContainers); return err }},
	}
	for _, b := range benches {
		if !o.runs(b.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s\n", b.name)
		if err := b.run(); err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
	}
	return nil
}
