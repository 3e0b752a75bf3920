package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// With Linux's perf on PATH, the trace benchmark also samples every CPU
// while it runs (perf record -a, 999 Hz, no call graphs) and reports, per
// shim binary, where its processes spent their CPU time: a profile of a
// shim's whole life, start-up included, which no in-process profiler of a
// short-lived shim can give. Without perf the profile is skipped and the
// report says so.

// perfFreq is the sampling frequency: not a multiple of the kernel's tick.
const perfFreq = 999

// profileResult is the profile of the shims' processes during the trace
// benchmark.
type profileResult struct {
	Perf    string  `json:"perf,omitempty"`
	Skipped string  `json:"skipped,omitempty"`
	Seconds float64 `json:"seconds"`
	// Containers is how many containers each runtime ran meanwhile.
	Containers int             `json:"containers_per_runtime"`
	Binaries   []profileBinary `json:"binaries,omitempty"`
}

// profileBinary is one shim binary's processes: samples in user space
// (its own code, and the C library for a shim built with cgo), in the
// kernel on its behalf, and its hottest functions.
type profileBinary struct {
	Runtime    string       `json:"runtime"`
	Processes  int          `json:"processes"`
	UserSample int          `json:"user_samples"`
	KernSample int          `json:"kernel_samples"`
	Top        []profileSym `json:"top_user_symbols"`
	TopKernel  []profileSym `json:"top_kernel_symbols"`
	// Packages sums the user samples by Go package.
	Packages []profileSym `json:"user_packages"`
}

type profileSym struct {
	Name    string `json:"name"`
	Samples int    `json:"samples"`
}

// perfSession is a running perf record.
type perfSession struct {
	cmd   *exec.Cmd
	out   string
	start time.Time
	ver   string
}

// startPerf starts sampling every CPU into a file under dir; nil without
// perf.
func startPerf(dir string) (*perfSession, string) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return nil, "perf is not installed (Debian: linux-perf)"
	}
	ver, _ := exec.Command(perf, "--version").Output()
	p := &perfSession{out: filepath.Join(dir, "perf.data"), ver: strings.TrimSpace(string(ver))}
	p.cmd = exec.Command(perf, "record", "-a", "-F", strconv.Itoa(perfFreq), "-o", p.out, "--quiet")
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Sprintf("perf record: %v", err)
	}
	p.start = time.Now()
	return p, ""
}

// stop ends the recording and reads it: the processes of each shim
// binary (one of bins, named by runtime) and their samples.
func (p *perfSession) stop(ctx context.Context, bins map[string]string) (*profileResult, error) {
	res := &profileResult{Perf: p.ver, Seconds: time.Since(p.start).Seconds()}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		// perf would record on: end it. Its exit adds nothing to err.
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		return nil, fmt.Errorf("stop perf record: %w", err)
	}
	if err := p.cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return nil, fmt.Errorf("perf record: %w", err)
		}
	}
	defer os.Remove(p.out)
	cmd := exec.CommandContext(ctx, "perf", "script", "-i", p.out, "-F", "pid,ip,sym,dso")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf script: %w", err)
	}
	samples, err := readPerfScript(stdout)
	if werr := cmd.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("perf script: %w", werr)
	}
	if err != nil {
		return nil, err
	}
	res.Binaries = summarizeProfile(samples, bins)
	return res, nil
}

// perfSample is one sample: the process, and the function and object the
// CPU was in.
type perfSample struct {
	pid      int
	sym, dso string
}

// readPerfScript reads `perf script -F pid,ip,sym,dso` lines:
//
//	13457  4a1b2c runtime.scanobject (/tmp/x/containerd-shim-nsiso-v1)
func readPerfScript(r io.Reader) ([]perfSample, error) {
	var out []perfSample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		open := strings.LastIndexByte(line, '(')
		if open < 0 || !strings.HasSuffix(line, ")") {
			continue
		}
		f := strings.Fields(line[:open])
		if len(f) < 2 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		sym := "[unknown]"
		if len(f) > 2 {
			sym = strings.Join(f[2:], " ")
		}
		out = append(out, perfSample{pid: pid, sym: sym, dso: line[open+1 : len(line)-1]})
	}
	return out, sc.Err()
}

// summarizeProfile attributes samples to shim binaries: a process is a
// binary's when it has samples in that binary's code; its kernel samples
// count for it too.
func summarizeProfile(samples []perfSample, bins map[string]string) []profileBinary {
	owner := map[int]string{}
	for _, s := range samples {
		if rt, ok := bins[s.dso]; ok {
			owner[s.pid] = rt
		}
	}
	type acc struct {
		procs       map[int]bool
		user, kern  int
		syms, ksyms map[string]int
		pkgs        map[string]int
	}
	per := map[string]*acc{}
	for _, rt := range bins {
		per[rt] = &acc{procs: map[int]bool{}, syms: map[string]int{}, ksyms: map[string]int{}, pkgs: map[string]int{}}
	}
	for _, s := range samples {
		rt, ok := owner[s.pid]
		if !ok {
			continue
		}
		a := per[rt]
		a.procs[s.pid] = true
		switch {
		case strings.HasPrefix(s.dso, "["+"kernel"):
			a.kern++
			a.ksyms[s.sym]++
		case bins[s.dso] == rt:
			a.user++
			a.syms[s.sym]++
			a.pkgs[goPackage(s.sym)]++
		default:
			// The C library of a shim built with cgo, the vDSO.
			a.user++
			name := s.sym + " (" + filepath.Base(s.dso) + ")"
			a.syms[name]++
			a.pkgs[filepath.Base(s.dso)]++
		}
	}
	var out []profileBinary
	for _, rt := range []string{"nsiso", "runc.v2", "runc.v2-lib"} {
		a, ok := per[rt]
		if !ok {
			continue
		}
		out = append(out, profileBinary{Runtime: rt, Processes: len(a.procs), UserSample: a.user, KernSample: a.kern,
			Top: topSyms(a.syms, 15), TopKernel: topSyms(a.ksyms, 8), Packages: topSyms(a.pkgs, 12)})
	}
	return out
}

// goPackage is the package of a Go symbol, e.g. "encoding/json" of
// "encoding/json.(*decodeState).object".
func goPackage(sym string) string {
	slash := strings.LastIndexByte(sym, '/')
	if dot := strings.IndexByte(sym[slash+1:], '.'); dot >= 0 {
		return sym[:slash+1+dot]
	}
	return sym
}

func topSyms(m map[string]int, n int) []profileSym {
	out := make([]profileSym, 0, len(m))
	for k, v := range m {
		out = append(out, profileSym{Name: k, Samples: v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Samples != out[j].Samples {
			return out[i].Samples > out[j].Samples
		}
		return out[i].Name < out[j].Name
	})
	return out[:min(n, len(out))]
}
