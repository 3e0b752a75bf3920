package main

import (
	"math"
	"sort"
	"strconv"
	"strings"
)

// The phases of one container's life, as the trace shows them. Each is a
// duration in milliseconds between two recorded moments; "@" phases are
// offsets from the moment the client began, which show where a difference
// between runtimes builds up.
var phaseOrder = []string{
	"shim start: exec → runtime.main",
	"shim start: package init",
	"shim start: main → exit",
	"shim serve: exec → runtime.main",
	"shim serve: package init",
	"shim serve: main → serve",
	"Create: serve → request",
	"Create: request → reply",
	"Create: nsiso's part",
	"Create: runc.v2 before runc",
	"Create: runc create",
	"Create: runc exit → reply",
	"Start: request → reply",
	"Start: runc start",
	"container: exec → exit",
	"Delete: request → reply",
	"Delete: runc delete",
	"Delete: runc exit → reply",
	"Delete: nsiso's cleanup → reply",
	"Shutdown → shim exit",
	"shim delete: exec → runtime.main",
	"shim delete: package init",
	"shim delete: main → exit",
	"shim processes: CPU",
	"GCs in the serving shim up to the Create reply (count)",
	"GCs in the serving shim, whole life (count)",
	"@ shim start exec",
	"@ Create request",
	"@ Create reply",
	"@ Start reply",
	"@ container exit",
	"@ Delete request",
	"@ Delete reply",
	"@ shim exit",
	"@ shim delete exit",
	"@ client done",
}

// proc is a process seen in one sample's trace.
type proc struct {
	pid    int
	exec   float64
	exit   float64
	file   string
	probes map[string][]float64 // label → entry times, in order
}

func (p *proc) first(label string) float64 {
	if p == nil {
		return math.NaN()
	}
	if ts := p.probes[label]; len(ts) > 0 {
		return ts[0]
	}
	return math.NaN()
}

// firstAfter returns the first entry of label at or after t.
func (p *proc) firstAfter(label string, t float64) float64 {
	if p == nil || math.IsNaN(t) {
		return math.NaN()
	}
	for _, ts := range p.probes[label] {
		if ts >= t {
			return ts
		}
	}
	return math.NaN()
}

// samplePhases turns the events of one traced container into its phases.
// shims are the paths of the shim binaries (an exec of one starts a shim
// process), runc the path of the runc binary the shims run, probes the
// uprobe events. It returns nil when the sample lacks its client markers.
func samplePhases(evs []traceEvent, shims []string, runc string, probes map[string]probeRef) map[string]float64 {
	var begin, end = math.NaN(), math.NaN()
	procs := map[int]*proc{}
	parent := map[int]int{}
	cpu := map[int]float64{}
	get := func(pid int) *proc {
		p := procs[pid]
		if p == nil {
			p = &proc{pid: pid, exec: math.NaN(), exit: math.NaN(), probes: map[string][]float64{}}
			procs[pid] = p
		}
		return p
	}
	for _, e := range evs {
		switch e.name {
		case "tracing_mark_write":
			if strings.Contains(e.args, "nsiso-bench begin") {
				begin = e.ms
			} else if strings.Contains(e.args, "nsiso-bench end") {
				end = e.ms
			}
		case "sched_process_fork":
			// Emitted by the forking thread, so the line's tgid is the
			// parent process.
			parent[e.intField("child_pid")] = e.tgid
		case "sched_process_exec":
			p := get(e.intField("pid"))
			p.exec, p.file = e.ms, e.field("filename")
		case "sched_stat_runtime":
			// Emitted for the task running on the CPU, so the line's tgid
			// is the process charged.
			if ns, err := strconv.ParseFloat(e.field("runtime"), 64); err == nil {
				cpu[e.tgid] += ns / 1e6
			}
		case "sched_process_exit":
			if e.field("group_dead") == "true" {
				get(e.tgid).exit = e.ms
			}
		default:
			if ref, ok := probes[e.name]; ok {
				p := get(e.tgid)
				p.probes[ref.label] = append(p.probes[ref.label], e.ms)
			}
		}
	}
	if math.IsNaN(begin) || math.IsNaN(end) {
		return nil
	}
	isShim := func(p *proc) bool {
		for _, s := range shims {
			if p.file == s {
				return true
			}
		}
		return false
	}
	var start, server, del *proc
	for _, p := range procs {
		if !isShim(p) {
			continue
		}
		switch {
		case len(p.probes["manager.Start"]) > 0:
			start = p
		case len(p.probes["serve"]) > 0:
			server = p
		case len(p.probes["manager.Stop"]) > 0:
			del = p
		}
	}
	// ancestor tells whether a is an ancestor of pid.
	ancestor := func(a, pid int) bool {
		for i := 0; i < 64 && pid != 0; i++ {
			if pid == a {
				return true
			}
			pid = parent[pid]
		}
		return false
	}
	// The server's runc runs, in order of their exec.
	var runcs []*proc
	for _, p := range procs {
		if p.file == runc && server != nil && parent[p.pid] == server.pid {
			runcs = append(runcs, p)
		}
	}
	sort.Slice(runcs, func(i, j int) bool { return runcs[i].exec < runcs[j].exec })
	firstRuncAfter := func(t float64) *proc {
		for _, p := range runcs {
			if p.exec >= t {
				return p
			}
		}
		return nil
	}
	ph := map[string]float64{}
	set := func(name string, from, to float64) {
		if !math.IsNaN(from) && !math.IsNaN(to) && to >= from {
			ph[name] = to - from
		}
	}
	at := func(name string, t float64) {
		if !math.IsNaN(t) {
			ph[name] = t - begin
		}
	}
	if start != nil {
		set("shim start: exec → runtime.main", start.exec, start.first("runtime.main"))
		set("shim start: package init", start.first("runtime.main"), start.first("main"))
		set("shim start: main → exit", start.first("main"), start.exit)
		at("@ shim start exec", start.exec)
	}
	if server != nil {
		set("shim serve: exec → runtime.main", server.exec, server.first("runtime.main"))
		set("shim serve: package init", server.first("runtime.main"), server.first("main"))
		set("shim serve: main → serve", server.first("main"), server.first("serve"))

		create := server.first("Create")
		req := create
		if nc := server.first("nsiso.Create"); !math.IsNaN(nc) {
			req = nc
			set("Create: nsiso's part", nc, create)
		}
		set("Create: serve → request", server.first("serve"), req)
		at("@ Create request", req)
		if rc := firstRuncAfter(create); rc != nil {
			set("Create: runc.v2 before runc", create, rc.exec)
			set("Create: runc create", rc.exec, rc.exit)
			reply := server.firstAfter("reply", rc.exit)
			set("Create: runc exit → reply", rc.exit, reply)
			set("Create: request → reply", req, reply)
			at("@ Create reply", reply)
			// The container's process: runc init's exec of anything but
			// runc itself.
			for _, p := range procs {
				if p.file != "" && p.file != runc && !strings.HasPrefix(p.file, "/proc/self/fd/") && !isShim(p) && ancestor(rc.pid, p.pid) {
					set("container: exec → exit", p.exec, p.exit)
					at("@ container exit", p.exit)
				}
			}
		}
		st := server.first("Start")
		if rs := firstRuncAfter(st); rs != nil {
			set("Start: runc start", rs.exec, rs.exit)
			reply := server.firstAfter("reply", rs.exit)
			set("Start: request → reply", st, reply)
			at("@ Start reply", reply)
		}
		dreq := server.first("Delete")
		if nd := server.first("nsiso.Delete"); !math.IsNaN(nd) {
			dreq = nd
		}
		at("@ Delete request", dreq)
		if rd := firstRuncAfter(dreq); rd != nil {
			set("Delete: runc delete", rd.exec, rd.exit)
			reply := server.firstAfter("reply", rd.exit)
			set("Delete: runc exit → reply", rd.exit, reply)
			set("Delete: request → reply", dreq, reply)
			set("Delete: nsiso's cleanup → reply", server.firstAfter("nsiso.cleanup", rd.exit), reply)
			at("@ Delete reply", reply)
		}
		set("Shutdown → shim exit", server.first("Shutdown"), server.exit)
		gcs, early := 0, 0
		createReply := ph["@ Create reply"] + begin
		for _, t := range server.probes["gc"] {
			gcs++
			if _, ok := ph["@ Create reply"]; ok && t <= createReply {
				early++
			}
		}
		ph["GCs in the serving shim, whole life (count)"] = float64(gcs)
		ph["GCs in the serving shim up to the Create reply (count)"] = float64(early)
		at("@ shim exit", server.exit)
	}
	if del != nil {
		set("shim delete: exec → runtime.main", del.exec, del.first("runtime.main"))
		set("shim delete: package init", del.first("runtime.main"), del.first("main"))
		set("shim delete: main → exit", del.first("main"), del.exit)
		at("@ shim delete exit", del.exit)
	}
	if start != nil && server != nil {
		total := 0.0
		for _, p := range []*proc{start, server, del} {
			if p != nil {
				total += cpu[p.pid]
			}
		}
		ph["shim processes: CPU"] = total
	}
	at("@ client done", end)
	return ph
}
