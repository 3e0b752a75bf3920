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
	InitBytes  summary    `json:"init_bytes"`
	Packages   int        `json:"packages_with_init"`
	TopInits   []initCost `json:"top_inits"`
}

type initCost struct {
	Package string  `json:"package"`
	Ms      float64 `json:"ms"`
	Bytes   float64 `json:"bytes"`
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

func (e *env) benchStartup(ctx context.Context, n int) (*startupResult, error) {
	rts := e.runtimes()
	res := &startupResult{N: n}
	wall := make([][]float64, len(rts))
	cpu := make([][]float64, len(rts))
	rss := make([][]float64, len(rts))
	flt := make([][]float64, len(rts))
	for i := 0; i < n; i++ {
		for j := range rts {
			k := (i + j) % len(rts)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			cmd := exec.CommandContext(ctx, rts[k].shim, "-v")
			t0 := time.Now()
			if err := cmd.Run(); err != nil {
				return nil, fmt.Errorf("%s -v: %w", rts[k].shim, err)
			}
			d := time.Since(t0)
			ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
			if !ok {
				return nil, fmt.Errorf("%s -v: no resource usage", rts[k].shim)
			}
			wall[k] = append(wall[k], ms(d))
			cpu[k] = append(cpu[k], ms(time.Duration(ru.Utime.Nano()+ru.Stime.Nano())))
			flt[k] = append(flt[k], float64(ru.Minflt))
		}
	}
	// Peak memory in runs of their own: the exit stop that reads it
	// costs time.
	for i := 0; i < min(n, peakRSSRuns); i++ {
		for j := range rts {
			k := (i + j) % len(rts)
			kb, err := peakRSS(rts[k].shim, "-v")
			if err != nil {
				return nil, err
			}
			rss[k] = append(rss[k], float64(kb)/1024)
		}
	}
	inits := make([]map[string]initCost, len(rts))
	for k, r := range rts {
		s := startupSide{Runtime: r.Name, Path: r.shim, Wall: wall[k],
			WallMs: summarize(wall[k]), CPUMs: summarize(cpu[k]), MaxRSSMiB: summarize(rss[k]), MinorFaults: summarize(flt[k])}
		if st, err := os.Stat(r.shim); err == nil {
			s.SizeBytes = st.Size()
		}
		var total, allocs, bytes []float64
		sum := map[string]initCost{}
		for range inittraceRuns {
			pk, err := inittrace(ctx, r.shim)
			if err != nil {
				return nil, err
			}
			var t, a, b float64
			for _, c := range pk {
				t += c.ms
				a += c.allocs
				b += c.bytes
				x := sum[c.pkg]
				x.Package = c.pkg
				x.Ms += c.ms / inittraceRuns
				x.Bytes += c.bytes / inittraceRuns
				sum[c.pkg] = x
			}
			total, allocs, bytes = append(total, t), append(allocs, a), append(bytes, b)
		}
		s.InitMs, s.InitAllocs, s.InitBytes = summarize(total), summarize(allocs), summarize(bytes)
		s.Packages = len(sum)
		for _, c := range sum {
			s.TopInits = append(s.TopInits, c)
		}
		sort.Slice(s.TopInits, func(i, j int) bool { return s.TopInits[i].Ms > s.TopInits[j].Ms })
		s.TopInits = s.TopInits[:min(8, len(s.TopInits))]
		inits[k] = sum
		res.Sides = append(res.Sides, s)
	}
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
				res.Only = append(res.Only, initOnly{A: rts[a].Name, B: rts[b].Name, Packages: only})
			}
		}
	}
	for a := range rts {
		for b := a + 1; b < len(rts); b++ {
			res.Compare = append(res.Compare, compare(
				runtimeSamples{Runtime: rts[a].Name, Samples: wall[a]},
				runtimeSamples{Runtime: rts[b].Name, Samples: wall[b]}))
		}
	}
	return res, nil
}

type pkgInit struct {
	pkg               string
	ms, bytes, allocs float64
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
		p.bytes, _ = strconv.ParseFloat(f[7], 64)
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
			kb, _ = procStatusKB(pid, "status", "VmHWM")
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
