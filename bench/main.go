// Command bench is `make bench`: it measures what the runtime
// io.containerd.nsiso.v1 costs over io.containerd.runc.v2.
//
// Both runtimes run on one private containerd in the same run, their
// samples interleaved (nsiso, runc.v2, nsiso, runc.v2, ...) so that a slow
// spell of the machine hits both, and every comparison is a ratio of
// paired samples. The runc.v2 shim is built from the same containerd
// module version and with the same flags as nsiso's, so the two binaries
// differ only by nsiso's wrapper. It measures:
//
//  1. lifecycle: create, start, exit and delete of a /bin/true task;
//  2. child: the same for a child joining a running parent's IPC and PID
//     namespaces (nsiso by annotation, runc.v2 by namespace path);
//  3. concurrency: many tasks created and started at once;
//  4. memory: each shim's VmRSS (and Pss) with long-running containers.
//
// The spec rewrite itself is measured by `go test -bench` in specmod and
// shim; -micro reads that output into the same report.
//
// It prints tables, writes a JSON result, and leaves nothing behind: the
// daemon, its shims, containers, mounts and files are removed at the end,
// on failure and on SIGINT or SIGTERM.
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

// phases are the benchmarks -skip can name, in the order they run.
var phases = []string{"lifecycle", "child", "concurrency", "memory"}

type options struct {
	n, warmup, concurrency, rounds, memContainers int
	out, micro, runcShim, debugLog                string
	skip                                          []string
	check, stateTmpfs                             bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&o.n, "n", 50, "lifecycle and child: timed containers per runtime")
	fs.IntVar(&o.warmup, "warmup", 3, "lifecycle and child: untimed containers per runtime first; concurrency: one untimed round per runtime first unless 0")
	fs.IntVar(&o.concurrency, "concurrency", 100, "concurrency: containers started at once")
	fs.IntVar(&o.rounds, "rounds", 3, "concurrency: rounds per runtime")
	fs.IntVar(&o.memContainers, "mem-containers", 10, "memory: long-running containers per runtime")
	fs.StringVar(&o.out, "out", "", "JSON result `path` (default <repo>/_output/bench/result.json)")
	skip := fs.String("skip", "", "comma-separated benchmarks to skip: "+strings.Join(phases, ","))
	fs.StringVar(&o.micro, "micro", "", "`file` holding `go test -bench -benchmem` output of specmod and shim, to include")
	fs.StringVar(&o.runcShim, "runc-shim", "", "containerd-shim-runc-v2 `binary` to compare with (default: build one from this module's containerd version)")
	fs.StringVar(&o.debugLog, "debug-log", "", "run containerd and the shims at debug level and keep the daemon log at `path`")
	fs.BoolVar(&o.stateTmpfs, "state-tmpfs", false, "keep containerd's state (the bundles) and runc's root on a tmpfs, as on hosts whose /run is one")
	fs.BoolVar(&o.check, "check", false, "exit 1 when a target is missed")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.n < 1 || o.concurrency < 1 || o.rounds < 1 || o.memContainers < 1 || o.warmup < 0 {
		return o, errors.New("-n, -concurrency, -rounds and -mem-containers must be at least 1, -warmup at least 0")
	}
	for _, s := range strings.Split(*skip, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(phases, s) {
			return o, fmt.Errorf("-skip: unknown benchmark %q (known: %s)", s, strings.Join(phases, ", "))
		}
		o.skip = append(o.skip, s)
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

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Keep the handler installed after the first signal: a second Ctrl-C
	// must not kill the process halfway through removing what it started.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var interrupted atomic.Bool
	go func() {
		for s := range sigs {
			fmt.Fprintf(os.Stderr, "bench: %v: stopping and removing everything this run started\n", s)
			interrupted.Store(true)
			cancel()
		}
	}()

	start := time.Now()
	res := &result{
		Host: collectHostFacts(),
		Params: params{N: o.n, Warmup: o.warmup, Concurrency: o.concurrency, Rounds: o.rounds,
			MemContainers: o.memContainers, StateTmpfs: o.stateTmpfs, Skip: o.skip},
	}
	if err := measure(ctx, o, res); err != nil {
		res.Error = err.Error()
	}
	res.Duration = time.Since(start).Seconds()
	if o.debugLog != "" {
		times, err := prepareInSitu(o.debugLog)
		if err != nil {
			res.Error = strings.TrimPrefix(res.Error+"; "+err.Error(), "; ")
		}
		attachPrepareInSitu(res.Lifecycle, times)
		attachPrepareInSitu(res.Child, times)
	}
	if o.micro != "" {
		m, err := readMicro(o.micro)
		if err != nil {
			res.Error = strings.TrimPrefix(res.Error+"; "+err.Error(), "; ")
		}
		res.Micro = m
	}
	res.evaluate()
	printReport(os.Stdout, res)
	if err := writeJSON(o.out, res); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	fmt.Printf("\nresult: %s (%.0f s)\n", o.out, res.Duration)
	switch {
	case interrupted.Load():
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
	deps, err := testenv.FindDeps()
	if err != nil {
		return err
	}
	nsisoDir := os.Getenv("NSISO_BIN")
	if nsisoDir == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			return err
		}
		nsisoDir = filepath.Join(root, "_output", "bin")
	}
	built, err := filepath.Abs(filepath.Join(nsisoDir, nsisoShim))
	if err != nil {
		return err
	}
	if _, err := os.Stat(built); err != nil {
		return fmt.Errorf("%s not built (run `make build`): %w", nsisoShim, err)
	}

	scratch, err := os.MkdirTemp("", "nsiso-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	// Run a copy: a rebuild of the original during the run (by make in
	// another shell) must not change the binary halfway through.
	nsisoPath := filepath.Join(scratch, "nsiso", nsisoShim)
	if err := copyFile(built, nsisoPath); err != nil {
		return err
	}
	res.Host.Repo = repoState()

	runcPath := o.runcShim
	if runcPath == "" {
		fmt.Fprintf(os.Stderr, "bench: building %s from %s as in go.mod\n", runcShim, containerdModule)
		if runcPath, err = buildRuncShim(ctx, filepath.Join(scratch, "shim")); err != nil {
			return err
		}
	}
	if runcPath, err = filepath.Abs(runcPath); err != nil {
		return err
	}
	if filepath.Base(runcPath) != runcShim {
		return fmt.Errorf("-runc-shim %s: containerd only runs a binary named %s", runcPath, runcShim)
	}
	nb, err := inspectShim("nsiso", nsisoPath)
	if err != nil {
		return err
	}
	nb.BuiltAt = built
	rb, err := inspectShim("runc.v2", runcPath)
	if err != nil {
		return err
	}
	res.Unfair = sameBuild(nb, rb)
	res.Fair = len(res.Unfair) == 0
	bins := map[string]*shimBinary{"nsiso": &nb, "runc.v2": &rb}
	defer func() { res.Shims = []shimBinary{nb, rb} }()
	res.Host.Runc = runcVersion(deps.Runc)

	var img bytes.Buffer
	if err := testenv.BuildBusyboxImage(ctx, deps.Busybox, nil, imageRef, &img); err != nil {
		return err
	}
	tarPath := filepath.Join(scratch, "image.tar")
	if err := os.WriteFile(tarPath, img.Bytes(), 0o644); err != nil {
		return err
	}

	// Short: the daemon's sockets live inside and must fit in sun_path.
	ctdDir, err := os.MkdirTemp("", "nsb-")
	if err != nil {
		return err
	}
	runcRoot := filepath.Join(ctdDir, "runc")
	if err := os.MkdirAll(runcRoot, 0o711); err != nil {
		removeDaemonDir(ctdDir)
		return err
	}
	if o.stateTmpfs {
		if err := mountTmpfs(filepath.Join(ctdDir, "state"), runcRoot); err != nil {
			removeDaemonDir(ctdDir)
			return err
		}
	}
	// Parent lookups read runc's state, so nsiso and the runc.v2
	// containers share one runc root inside the daemon's directory.
	cfg := filepath.Join(scratch, "nsiso.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "root = %q\n", runcRoot), 0o644); err != nil {
		removeDaemonDir(ctdDir)
		return err
	}
	opts := testenv.Options{
		Binary: deps.Containerd,
		Dir:    ctdDir,
		// The freshly built runc.v2 shim first, so it wins over the one
		// installed next to containerd.
		PathPrepend: []string{filepath.Dir(runcPath), filepath.Dir(nsisoPath), deps.BinDir},
		Env:         []string{"NSISO_CONFIG=" + cfg},
	}
	if o.debugLog != "" {
		opts.LogLevel = "debug"
		if opts.LogPath, err = filepath.Abs(o.debugLog); err != nil {
			removeDaemonDir(ctdDir)
			return err
		}
	}
	ctd, err := testenv.StartContainerd(ctx, opts)
	if err != nil {
		// StartContainerd removes its directory unless it failed before
		// taking charge of it.
		removeDaemonDir(ctdDir)
		return err
	}
	res.Host.LoadAvg[0], res.Host.OtherDaemons[0] = loadAvg(), otherDaemons(ctd.PID())
	defer func() {
		res.Host.LoadAvg[1], res.Host.OtherDaemons[1] = loadAvg(), otherDaemons(ctd.PID())
		fmt.Fprintln(os.Stderr, "bench: stopping containerd")
		if err := ctd.Stop(); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	res.Host.Containerd = ctd.Version()
	res.Host.Snapshotter = ctd.Snapshotter()
	res.Host.StateFS = testenv.FSType(filepath.Join(ctdDir, "state"))
	res.Host.RuncRootFS = testenv.FSType(runcRoot)
	nctx, err := ctd.Namespace(ctx, benchNS)
	if err != nil {
		return err
	}
	image, err := testenv.ImportImage(nctx, ctd.Client(), tarPath)
	if err != nil {
		return err
	}
	e := &env{
		ctd:   ctd,
		ctx:   nctx,
		image: image,
		nsiso: rt{Name: "nsiso", runtime: nsisoRuntime},
		runc:  rt{Name: "runc.v2", runtime: runcRuntime, opts: ctd.RuncOptions()},
	}
	if err := e.verifyShims(nctx, bins); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: containerd %s, shims %s and %s\n", ctd.Version(), nb.RunningExe, rb.RunningExe)

	benches := []struct {
		name string
		run  func() error
	}{
		{"lifecycle", func() (err error) { res.Lifecycle, err = e.benchLifecycle(nctx, o.n, o.warmup); return err }},
		{"child", func() (err error) { res.Child, err = e.benchChild(nctx, o.n, o.warmup); return err }},
		{"concurrency", func() (err error) {
			res.Concurrency, err = e.benchConcurrency(nctx, o.concurrency, o.rounds, o.warmup > 0)
			return err
		}},
		{"memory", func() (err error) { res.Memory, err = e.benchMemory(nctx, o.memContainers); return err }},
	}
	for _, b := range benches {
		if slices.Contains(o.skip, b.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s\n", b.name)
		if err := b.run(); err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
	}
	return nil
}
