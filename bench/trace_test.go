package main

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// traceText renders events as the tracefs instance prints them with
// record-tgid on; times are in milliseconds.
func traceText(t *testing.T, evs ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# tracer: nop\n#\n")
	for _, e := range evs {
		var ms float64
		var comm string
		var tid, tgid int
		var rest string
		if _, err := fmt.Sscanf(e, "%f %s %d %d", &ms, &comm, &tid, &tgid); err != nil {
			t.Fatalf("event %q: %v", e, err)
		}
		rest = strings.SplitN(e, " ", 5)[4]
		fmt.Fprintf(&b, "%16s-%-7d (%7d) [001] ..... %.6f: %s\n", comm, tid, tgid, ms/1000, rest)
	}
	return b.String()
}

// One nsiso container's life, as the trace of a `ctr run --rm` shows it.
func TestSamplePhases(t *testing.T) {
	const shim, runc = "/s/nsiso/containerd-shim-nsiso-v1", "/s/runc/runc"
	probes := map[string]string{}
	for i, p := range shimProbes {
		probes[fmt.Sprintf("b0p%d", i)] = p.label
	}
	ev := func(label string) string {
		for k, l := range probes {
			if l == label {
				return k + ": (0x1)"
			}
		}
		t.Fatalf("no probe %s", label)
		return ""
	}
	text := traceText(t,
		"0 bench 1 1 tracing_mark_write: nsiso-bench begin x",
		"1 containerd 50 50 sched_process_exec: filename="+shim+" pid=100 old_pid=100",
		"2 containerd-shim 100 100 "+ev("runtime.main"),
		"3 containerd-shim 100 100 "+ev("main"),
		"4 containerd-shim 100 100 "+ev("manager.Start"),
		"4.5 containerd-shim 100 100 sched_process_fork: comm=containerd-shim pid=100 child_comm=containerd-shim child_pid=101",
		"5 containerd-shim 101 101 sched_process_exec: filename="+shim+" pid=101 old_pid=101",
		"5.5 containerd-shim 100 100 sched_stat_runtime: comm=containerd-shim pid=100 runtime=2000000 [ns]",
		"6 containerd-shim 100 100 sched_process_exit: comm=containerd-shim pid=100 prio=120 group_dead=true",
		"6 containerd-shim 101 101 "+ev("runtime.main"),
		"7 containerd-shim 102 101 "+ev("main"),
		"8 containerd-shim 102 101 "+ev("serve"),
		"9 containerd-shim 104 101 "+ev("gc"),
		"10 containerd-shim 103 101 "+ev("nsiso.Create"),
		"11 containerd-shim 103 101 "+ev("Create"),
		"11.5 containerd-shim 103 101 sched_process_fork: comm=containerd-shim pid=103 child_comm=containerd-shim child_pid=110",
		"12 runc 110 110 sched_process_exec: filename="+runc+" pid=110 old_pid=110",
		"12.5 runc 110 110 sched_process_fork: comm=runc pid=110 child_comm=runc child_pid=111",
		"13 runc:[0:PARENT] 111 111 sched_process_exec: filename=/proc/self/fd/6 pid=111 old_pid=111",
		"13.5 runc:[0:PARENT] 111 111 sched_process_fork: comm=runc:[0:PARENT] pid=111 child_comm=runc:[1:CHILD] child_pid=112",
		"18 runc 110 110 sched_process_exit: comm=runc pid=110 prio=120 group_dead=true",
		"19 containerd-shim 102 101 "+ev("reply"),
		"20 true 112 112 sched_process_exec: filename=/bin/true pid=112 old_pid=112",
		"25 containerd-shim 102 101 "+ev("Start"),
		"25.5 containerd-shim 102 101 sched_process_fork: comm=containerd-shim pid=102 child_comm=containerd-shim child_pid=120",
		"26 runc 120 120 sched_process_exec: filename="+runc+" pid=120 old_pid=120",
		"28 runc 120 120 sched_process_exit: comm=runc pid=120 prio=120 group_dead=true",
		"29 containerd-shim 102 101 "+ev("reply"),
		"30 true 112 112 sched_process_exit: comm=true pid=112 prio=120 group_dead=true",
		"31 containerd-shim 102 101 "+ev("gc"),
		"35 containerd-shim 102 101 "+ev("nsiso.Delete"),
		"35.1 containerd-shim 102 101 "+ev("Delete"),
		"35.5 containerd-shim 102 101 sched_process_fork: comm=containerd-shim pid=102 child_comm=containerd-shim child_pid=130",
		"36 runc 130 130 sched_process_exec: filename="+runc+" pid=130 old_pid=130",
		"40 runc 130 130 sched_process_exit: comm=runc pid=130 prio=120 group_dead=true",
		"41 containerd-shim 102 101 "+ev("nsiso.cleanup"),
		"42 containerd-shim 102 101 "+ev("reply"),
		"43 containerd-shim 103 101 "+ev("Shutdown"),
		"43.5 containerd-shim 102 101 sched_stat_runtime: comm=containerd-shim pid=102 runtime=5000000 [ns]",
		"44 containerd-shim 101 101 sched_process_exit: comm=containerd-shim pid=101 prio=120 group_dead=true",
		"45 containerd 50 50 sched_process_exec: filename="+shim+" pid=107 old_pid=107",
		"46 containerd-shim 107 107 "+ev("runtime.main"),
		"47 containerd-shim 107 107 "+ev("main"),
		"48 containerd-shim 108 107 "+ev("manager.Stop"),
		"49 containerd-shim 108 107 sched_stat_runtime: comm=containerd-shim pid=108 runtime=1000000 [ns]",
		"50 containerd-shim 107 107 sched_process_exit: comm=containerd-shim pid=107 prio=120 group_dead=true",
		"55 bench 1 1 tracing_mark_write: nsiso-bench end x",
	)
	evs, err := parseTrace(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	got := samplePhases(evs, []string{shim}, runc, probes)
	want := map[string]float64{
		"shim start: exec → runtime.main": 1, "shim start: package init": 1, "shim start: main → exit": 3,
		"shim serve: exec → runtime.main": 1, "shim serve: package init": 1, "shim serve: main → serve": 1,
		"Create: serve → request": 2, "Create: nsiso's part": 1, "Create: runc.v2 before runc": 1,
		"Create: runc create": 6, "Create: runc exit → reply": 1, "Create: request → reply": 9,
		"Start: runc start": 2, "Start: request → reply": 4, "container: exec → exit": 10,
		"Delete: runc delete": 4, "Delete: runc exit → reply": 2, "Delete: nsiso's cleanup → reply": 1, "Delete: request → reply": 7,
		"Shutdown → shim exit":             1,
		"shim delete: exec → runtime.main": 1, "shim delete: package init": 1, "shim delete: main → exit": 3,
		"shim processes: CPU":                         8,
		"GCs in the serving shim, whole life (count)": 2, "GCs in the serving shim up to the Create reply (count)": 1,
		"@ client done": 55,
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || math.Abs(g-w) > 1e-6 {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected phase %s = %v", k, got[k])
		}
	}
	for _, k := range phaseOrder {
		if _, ok := want[k]; !ok {
			t.Errorf("phase %s is in the report's order but not in this test", k)
		}
	}
	// A sample without its client markers is no sample.
	if ph := samplePhases(evs[1:], []string{shim}, runc, probes); ph != nil {
		t.Errorf("phases without a begin marker: %v", ph)
	}
}

func TestReadPerfScript(t *testing.T) {
	in := `   13457  4a1b2c runtime.scanobject (/tmp/x/nsiso/containerd-shim-nsiso-v1)
   13457  ffffffff81000000 finish_task_switch.isra.0 ([kernel.kallsyms])
   13460  7f00 __memmove_avx_unaligned_erms (/usr/lib/x86_64-linux-gnu/libc.so.6)
   13460  4a1b2c encoding/json.(*decodeState).object (/tmp/x/stock/containerd-shim-runc-v2)
   99  1234 [unknown] (/usr/bin/other)
garbage line
`
	samples, err := readPerfScript(strings.NewReader(in))
	if err != nil || len(samples) != 5 {
		t.Fatalf("%d samples, %v", len(samples), err)
	}
	bins := map[string]string{"/tmp/x/nsiso/containerd-shim-nsiso-v1": "nsiso", "/tmp/x/stock/containerd-shim-runc-v2": "runc.v2"}
	got := summarizeProfile(samples, bins)
	if len(got) != 2 {
		t.Fatalf("%+v", got)
	}
	n, r := got[0], got[1]
	if n.Runtime != "nsiso" || n.UserSample != 1 || n.KernSample != 1 || n.Processes != 1 || n.Top[0].Name != "runtime.scanobject" {
		t.Errorf("nsiso: %+v", n)
	}
	if r.Runtime != "runc.v2" || r.UserSample != 2 || r.KernSample != 0 || r.Packages[0].Name != "encoding/json" && r.Packages[0].Name != "libc.so.6" {
		t.Errorf("runc.v2: %+v", r)
	}
}

func TestGoPackage(t *testing.T) {
	for sym, want := range map[string]string{
		"runtime.mallocgc":                       "runtime",
		"encoding/json.(*decodeState).object":    "encoding/json",
		"github.com/nsiso/nsiso/shim.readBundle": "github.com/nsiso/nsiso/shim",
		"aeshashbody":                            "aeshashbody",
	} {
		if got := goPackage(sym); got != want {
			t.Errorf("goPackage(%q) = %q, want %q", sym, got, want)
		}
	}
}
