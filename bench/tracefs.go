package main

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// The trace benchmark times each phase of a shim's life from outside the
// shim: the kernel's exec, fork and exit tracepoints, and uprobes on the
// entry of a few functions of each shim binary (no return probes: they
// break Go's movable stacks). Nothing is logged in the shim, so what is
// timed is the binary users run, and runc.v2's stock shim can be timed the
// same way as nsiso's.

// shimProbe is a function of a shim binary whose entry is recorded.
type shimProbe struct {
	label  string
	symbol string
}

const (
	runcShimPkg = "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	nsisoPkg    = "github.com/nsiso/nsiso/shim"
)

// shimProbes are recorded in every shim binary that has them: runc.v2's
// task service is inside nsiso's shim too, so the same labels mark the same
// moments in both, and nsiso's wrapper adds its own.
var shimProbes = []shimProbe{
	// Go's runtime has set itself up and runs the package inits next.
	{"runtime.main", "runtime.main"},
	// The package inits are done.
	{"main", "main.main"},
	{"manager.Start", runcShimPkg + "/manager.manager.Start"},
	{"manager.Stop", runcShimPkg + "/manager.manager.Stop"},
	{"serve", "github.com/containerd/ttrpc.(*Server).Serve"},
	// Every reply to containerd goes through it.
	{"reply", "github.com/containerd/ttrpc.(*channel).send"},
	{"Create", runcShimPkg + "/task.(*service).Create"},
	{"Start", runcShimPkg + "/task.(*service).Start"},
	{"Delete", runcShimPkg + "/task.(*service).Delete"},
	{"Shutdown", runcShimPkg + "/task.(*service).Shutdown"},
	{"nsiso.Create", nsisoPkg + ".(*service).Create"},
	{"nsiso.Delete", nsisoPkg + ".(*service).Delete"},
	{"nsiso.cleanup", nsisoPkg + ".cleanupState"},
	// A garbage collection cycle starts.
	{"gc", "runtime.gcStart"},
}

// tracefs is a private instance of the kernel's trace buffer with uprobes
// on shim binaries and the process tracepoints enabled in it.
type tracefs struct {
	root    string // the tracefs mount
	mounted bool   // mounted by us, so unmounted at close
	inst    string // our instance directory
	group   string // our uprobe group
	events  []string
	// probes maps an event name to its probe's label.
	probes map[string]string
}

// findTracefs returns where tracefs is mounted, mounting it at the usual
// place when it is not.
func findTracefs() (root string, mounted bool, err error) {
	infos, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("tracefs"))
	if err != nil {
		return "", false, err
	}
	if len(infos) > 0 {
		return infos[0].Mountpoint, false, nil
	}
	root = "/sys/kernel/tracing"
	if err := unix.Mount("nodev", root, "tracefs", 0, ""); err != nil {
		return "", false, fmt.Errorf("mount tracefs on %s: %w", root, err)
	}
	return root, true, nil
}

// uprobeOffset returns the file offset of symbol's code in the ELF binary
// at path, which is what a uprobe is placed at.
func uprobeOffset(path, symbol string) (uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	for _, s := range syms {
		if s.Name != symbol || elf.ST_TYPE(s.Info) != elf.STT_FUNC {
			continue
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && s.Value >= p.Vaddr && s.Value < p.Vaddr+p.Filesz {
				return s.Value - p.Vaddr + p.Off, nil
			}
		}
		return 0, fmt.Errorf("%s: %s is outside the code", path, symbol)
	}
	return 0, errNoSymbol
}

var errNoSymbol = errors.New("no such symbol")

// openTracefs sets up an instance recording the process tracepoints and
// entry probes on each binary in bins. It returns the probes a binary
// lacks per binary, for the report.
func openTracefs(bins []string) (_ *tracefs, missing [][]string, retErr error) {
	root, mounted, err := findTracefs()
	if err != nil {
		return nil, nil, err
	}
	t := &tracefs{root: root, mounted: mounted, group: fmt.Sprintf("nsisobench%d", os.Getpid()), probes: map[string]string{}}
	defer func() {
		if retErr != nil {
			t.close()
		}
	}()
	missing = make([][]string, len(bins))
	for i, bin := range bins {
		for k, p := range shimProbes {
			off, err := uprobeOffset(bin, p.symbol)
			if errors.Is(err, errNoSymbol) {
				missing[i] = append(missing[i], p.label)
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			ev := fmt.Sprintf("b%dp%d", i, k)
			if err := t.appendFile("uprobe_events", fmt.Sprintf("p:%s/%s %s:0x%x", t.group, ev, bin, off)); err != nil {
				return nil, nil, fmt.Errorf("uprobe on %s in %s: %w", p.symbol, bin, err)
			}
			t.events = append(t.events, ev)
			t.probes[ev] = p.label
		}
	}
	t.inst = filepath.Join(root, "instances", t.group)
	if err := os.Mkdir(t.inst, 0o700); err != nil {
		t.inst = ""
		return nil, nil, fmt.Errorf("tracefs instance: %w", err)
	}
	settings := []struct{ file, value string }{
		{"tracing_on", "0"},
		{"buffer_size_kb", "16384"},
		{"trace_clock", "mono"},
		{"options/record-tgid", "1"},
		{"events/sched/sched_process_exec/enable", "1"},
		{"events/sched/sched_process_fork/enable", "1"},
		{"events/sched/sched_process_exit/enable", "1"},
		{"events/sched/sched_stat_runtime/enable", "1"},
		{"events/" + t.group + "/enable", "1"},
		{"tracing_on", "1"},
	}
	for _, s := range settings {
		if err := os.WriteFile(filepath.Join(t.inst, s.file), []byte(s.value), 0); err != nil {
			return nil, nil, fmt.Errorf("tracefs %s: %w", s.file, err)
		}
	}
	return t, missing, nil
}

func (t *tracefs) appendFile(name, line string) error {
	f, err := os.OpenFile(filepath.Join(t.root, name), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// mark writes a line into the instance's buffer.
func (t *tracefs) mark(msg string) error {
	return os.WriteFile(filepath.Join(t.inst, "trace_marker"), []byte(msg), 0)
}

// take returns the events recorded since the last take and empties the
// buffer.
func (t *tracefs) take() ([]traceEvent, error) {
	f, err := os.Open(filepath.Join(t.inst, "trace"))
	if err != nil {
		return nil, err
	}
	evs, err := parseTrace(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	// Opening the trace file for writing with truncation clears it.
	if err := os.WriteFile(filepath.Join(t.inst, "trace"), nil, 0); err != nil {
		return nil, err
	}
	return evs, nil
}

// close removes the instance and the probes and unmounts tracefs if it was
// mounted here. A probe can only be removed once no instance records it.
func (t *tracefs) close() error {
	var errs []error
	if t.inst != "" {
		for _, e := range []string{"tracing_on", "events/" + t.group + "/enable", "events/sched/sched_process_exec/enable", "events/sched/sched_process_fork/enable", "events/sched/sched_process_exit/enable", "events/sched/sched_stat_runtime/enable"} {
			// The group's enable is missing when no probe could be
			// added; there is nothing to disable then.
			if err := os.WriteFile(filepath.Join(t.inst, e), []byte("0"), 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("disable %s: %w", e, err))
			}
		}
		if err := os.Remove(t.inst); err != nil {
			errs = append(errs, fmt.Errorf("remove tracefs instance: %w", err))
		}
	}
	for _, ev := range t.events {
		if err := t.appendFile("uprobe_events", "-:"+t.group+"/"+ev); err != nil {
			errs = append(errs, fmt.Errorf("remove uprobe %s: %w", ev, err))
		}
	}
	if t.mounted {
		if err := unix.Unmount(t.root, 0); err != nil {
			errs = append(errs, fmt.Errorf("unmount tracefs: %w", err))
		}
	}
	return errors.Join(errs...)
}

// traceEvent is one line of the trace buffer.
type traceEvent struct {
	ms   float64 // CLOCK_MONOTONIC, milliseconds
	tgid int
	name string
	args string
}

// A line with the tgid column looks like
//
//	containerd-shim-29380 (  29376) [000] DBZff  2244.288357: b0p6: (0x9e3600)
var traceLine = regexp.MustCompile(`^\s*.*-\d+\s+\(\s*(\d+|-+)\)\s+\[\d+\]\s+\S+\s+(\d+\.\d+): ([^:]+): (.*)$`)

func parseTrace(r io.Reader) ([]traceEvent, error) {
	var evs []traceEvent
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		m := traceLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		e := traceEvent{name: m[3], args: m[4]}
		e.tgid, _ = strconv.Atoi(m[1])
		sec, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			continue
		}
		e.ms = sec * 1000
		evs = append(evs, e)
	}
	return evs, sc.Err()
}

// field returns the value of key=value in a tracepoint's arguments.
func (e traceEvent) field(key string) string {
	for _, f := range strings.Fields(e.args) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

func (e traceEvent) intField(key string) int {
	n, _ := strconv.Atoi(e.field(key))
	return n
}
