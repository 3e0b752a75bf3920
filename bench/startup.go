package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/internal/procfs"
)

// The startup benchmark is the shim binary alone: containerd execs a shim
// at least three times per container (`start`, the serving shim, and
// `delete` after it exits), and every one of them pays the binary's
// loading, Go's runtime set-up and every package's init before it does
// anything. `-v` prints the version and exits, so its run is exactly that
// cost.

// startupSide is one binary's start-up.
type startupSide struct {
	Runtime   string  `json:"runtime"`
	Path      string  `json:"path"`
	SizeBytes int64   `json:"size_bytes"`
	WallMs    summary `json:"wall_ms"`
	CPUMs     summary `json:"cpu_ms"`
	// MaxRSSMiB is the peak resident set of a `-v` run (VmHWM at its
	// exit): start-up memory.
	MaxRSSMiB   summary   `json:"max_rss_mib"`
	MinorFaults summary   `json:"minor_faults"`
	Wall        []float64 `json:"wall_samples_ms"`
	// InitMs and InitAllocs sum GODEBUG=inittrace=1's package inits;
	// TopInits are the slowest ones.
	InitMs     summary    `json:"init_ms"`
	InitAllocs summary    `json:"init_allocs"`
	Packages   int        `json:"packages_with_init"`
	TopInits   []initCost `json:"top_inits"`
}

// initCost is one package's init, the mean of the inittrace runs.
type initCost struct {
	Package string  `json:"package"`
	Ms      float64 `json:"ms"`
}

// startupResult is the startup benchmark.
type startupResult struct {
	N       int           `json:"n"`
	Sides   []startupSide `json:"runtimes"`
	Compare []comparison  `json:"wall_comparisons"`
	// Only lists the packages with an init in one binary and not in
	// another.
	Only []initOnly `json:"init_only_in,omitempty"`
}

// initOnly are the packages whose init runs in runtime A's shim and not in
// B's.
type initOnly struct {
	A        string   `json:"a"`
	B        string   `json:"b"`
	Packages []string `json:"packages"`
}

// inittraceRuns is how many GODEBUG=inittrace=1 runs per binary are
// summed up, and peakRSSRuns how many runs per binary read the peak
// resident memory; both vary little.
const (
	inittraceRuns = 20
	peakRSSRuns   = 50
)

// benchStartup is the startup benchmark: n timed `-v` runs per shim
// binary, interleaved, then the peak memory and package inits of more.
func (e *env) benchStartup(ctx context.Context, n int) (*startupResult, error) {
	rts := e.runtimes()
	v, err := timeVersionRuns(ctx, rts, n)
	if err != nil {
		return nil, err
	}
	rss, err := measurePeakRSS(rts, min(n, peakRSSRuns))
	if err != nil {
		return nil, err
	}
	res := &startupResult{N: n}
	inits := make([]map[string]initCost, len(rts))
	for k, r := range rts {
		s := startupSide{Runtime: r.Name, Path: r.shim, Wall: v.wall[k],
			WallMs: summarize(v.wall[k]), CPUMs: summarize(v.cpu[k]), MaxRSSMiB: summarize(rss[k]), MinorFaults: summarize(v.faults[k])}
		if st, err := os.Stat(r.shim); err == nil {
			s.SizeBytes = st.Size()
		}
		if inits[k], err = s.addInits(ctx, r.shim); err != nil {
			return nil, err
		}
		res.Sides = append(res.Sides, s)
	}
	res.Only = initsOnlyIn(rts, inits)
	for a := range rts {
		for b := a + 1; b < len(rts); b++ {
			res.Compare = append(res.Compare, compare(
				runtimeSamples{Runtime: rts[a].Name, Samples: v.wall[a]},
				runtimeSamples{Runtime: rts[b].Name, Samples: v.wall[b]}))
		}
	}
	return res, nil
}

// versionRuns are the timed `-v` runs' samples, per runtime.
type versionRuns struct {
	wall, cpu, faults [][]float64
}

// timeVersionRuns runs `shim -v` n times per runtime, the order rotating,
// and records each run's wall time, CPU time and minor page faults.
func timeVersionRuns(ctx context.Context, rts []rt, n int) (versionRuns, error) {
	v := versionRuns{wall: make([][]float64, len(rts)), cpu: make([][]float64, len(rts)), faults: make([][]float64, len(rts))}
	for i := 0; i < n; i++ {
		for j := range rts {
			k := (i + j) % len(rts)
			if err := ctx.Err(); err != nil {
				return v, err
			}
			cmd := exec.CommandContext(ctx, rts[k].shim, "-v")
			t0 := time.Now()
			if err := cmd.Run(); err != nil {
				return v, fmt.Errorf("%s -v: %w", rts[k].shim, err)
			}
			d := time.Since(t0)
			ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
			if !ok {
				return v, fmt.Errorf("%s -v: no resource usage", rts[k].shim)
			}
			v.wall[k] = append(v.wall[k], ms(d))
			v.cpu[k] = append(v.cpu[k], ms(time.Duration(ru.Utime.Nano()+ru.Stime.Nano())))
			v.faults[k] = append(v.faults[k], float64(ru.Minflt))
		}
	}
	return v, nil
}

// measurePeakRSS reads the peak resident set, in MiB, of n `-v` runs per
// runtime. They are runs of their own: the exit stop that reads it costs
// time.
func measurePeakRSS(rts []rt, n int) ([][]float64, error) {
	rss := make([][]float64, len(rts))
	for i := 0; i < n; i++ {
		for j := range rts {
			k := (i + j) % len(rts)
			kb, err := peakRSS(rts[k].shim, "-v")
			if err != nil {
				return nil, err
			}
			rss[k] = append(rss[k], float64(kb)/1024)
		}
	}
	return rss, nil
}

// addInits sums the package inits of inittraceRuns runs of bin into s and
// returns each package's mean cost.
func (s *startupSide) addInits(ctx context.Context, bin string) (map[string]initCost, error) {
	var total, allocs []float64
	sum := map[string]initCost{}
	for range inittraceRuns {
		pk, err := inittrace(ctx, bin)
		if err != nil {
			return nil, err
		}
		var t, a float64
		for _, c := range pk {
			t += c.ms
			a += c.allocs
			x := sum[c.pkg]
			x.Package = c.pkg
			x.Ms += c.ms / inittraceRuns
			sum[c.pkg] = x
		}
		total, allocs = append(total, t), append(allocs, a)
	}
	s.InitMs, s.InitAllocs = summarize(total), summarize(allocs)
	s.Packages = len(sum)
	for _, c := range sum {
		s.TopInits = append(s.TopInits, c)
	}
	sort.Slice(s.TopInits, func(i, j int) bool { return s.TopInits[i].Ms > s.TopInits[j].Ms })
	s.TopInits = s.TopInits[:min(8, len(s.TopInits))]
	return sum, nil
}

// initsOnlyIn lists, for each ordered pair of runtimes, the packages with
// an init in the first one's binary and not in the second one's.
func initsOnlyIn(rts []rt, inits []map[string]initCost) []initOnly {
	var out []initOnly
	for a := range rts {
		for b := range rts {
			if a == b {
				continue
			}
			var only []string
			for p := range inits[a] {
				if _, ok := inits[b][p]; !ok {
					only = append(only, p)
				}
			}
			sort.Strings(only)
			if len(only) > 0 {
				out = append(out, initOnly{A: rts[a].Name, B: rts[b].Name, Packages: only})
			}
		}
	}
	return out
}

// pkgInit is one package's init in one run.
type pkgInit struct {
	pkg        string
	ms, allocs float64
}

// inittrace runs `bin -v` with GODEBUG=inittrace=1 and returns what each
// package's init cost. Lines look like
//
//	init github.com/x/y @0.52 ms, 0.013 ms clock, 984 bytes, 4 allocs
func inittrace(ctx context.Context, bin string) ([]pkgInit, error) {
	cmd := exec.CommandContext(ctx, bin, "-v")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s -v with inittrace: %w", bin, err)
	}
	var out []pkgInit
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 11 || f[0] != "init" || f[5] != "ms" || f[6] != "clock," {
			continue
		}
		var p pkgInit
		p.pkg = f[1]
		p.ms, _ = strconv.ParseFloat(f[4], 64)
		p.allocs, _ = strconv.ParseFloat(f[9], 64)
		out = append(out, p)
	}
	return out, sc.Err()
}

// peakRSS runs bin with args and returns its peak resident set (VmHWM) in
// KiB, read at its exit under ptrace. getrusage cannot tell it: a child
// that Go starts shares the parent's memory until its exec (vfork), and
// the kernel carries that memory's peak over into the child's maxrss.
func peakRSS(bin string, args ...string) (int64, error) {
	// Every ptrace request must come from the thread that attached.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("%s: %w", bin, err)
	}
	pid := cmd.Process.Pid
	var ws syscall.WaitStatus
	// abandon ends a run that already failed; how the child ends adds
	// nothing to that failure.
	abandon := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	// The child stops with SIGTRAP after its exec.
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || !ws.Stopped() {
		abandon()
		return 0, fmt.Errorf("%s: no stop after exec (%v)", bin, err)
	}
	if err := syscall.PtraceSetOptions(pid, syscall.PTRACE_O_TRACEEXIT|unix.PTRACE_O_EXITKILL); err != nil {
		abandon()
		return 0, fmt.Errorf("%s: ptrace: %w", bin, err)
	}
	var kb int64 = -1
	sig := 0
	for {
		if err := syscall.PtraceCont(pid, sig); err != nil {
			return 0, fmt.Errorf("%s: ptrace: %w", bin, err)
		}
		if _, err := syscall.Wait4(pid, &ws, syscall.WALL, nil); err != nil {
			return 0, fmt.Errorf("%s: wait: %w", bin, err)
		}
		if ws.Exited() || ws.Signaled() {
			break
		}
		sig = 0
		if ws.Stopped() && ws.TrapCause() == syscall.PTRACE_EVENT_EXIT {
			kb, _ = procfs.ReadKB(pid, "status", "VmHWM")
		} else if ws.Stopped() && ws.StopSignal() != syscall.SIGTRAP {
			// Pass on signals the child is sent; Go's runtime uses some.
			sig = int(ws.StopSignal())
		}
	}
	// Release what Start set up. Wait4 reaped the process already, so
	// Wait can only say that there is no child.
	_ = cmd.Wait()
	if kb < 0 {
		return 0, fmt.Errorf("%s: no VmHWM at exit", bin)
	}
	return kb, nil
}
