package main

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The phases of one container's life, as the trace shows them. Each is a
// duration in milliseconds between two recorded moments; "@ client done"
// is the client's whole run, from its exec to its exit.
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
func samplePhases(evs []traceEvent, shims []string, runc string, probes map[string]string) map[string]float64 {
	s := readSample(evs, shims, runc, probes)
	if math.IsNaN(s.begin) || math.IsNaN(s.end) {
		return nil
	}
	start, server, del := s.shimRoles()
	ph := phaseSet{}
	if start != nil {
		ph.shimLife("shim start", start)
	}
	if server != nil {
		s.serverPhases(ph, server)
	}
	if del != nil {
		ph.shimLife("shim delete", del)
	}
	if start != nil && server != nil {
		total := 0.0
		for _, p := range []*proc{start, server, del} {
			if p != nil {
				total += s.cpu[p.pid]
			}
		}
		ph["shim processes: CPU"] = total
	}
	ph["@ client done"] = s.end - s.begin
	return ph
}

// sample is what one traced container's events say: the client's
// markers and the processes that ran meanwhile.
type sample struct {
	shims      []string
	runc       string
	begin, end float64
	procs      map[int]*proc
	parent     map[int]int     // pid → its parent's pid
	cpu        map[int]float64 // tgid → CPU time, ms
}

// readSample sorts evs into the processes they belong to.
func readSample(evs []traceEvent, shims []string, runc string, probes map[string]string) *sample {
	s := &sample{shims: shims, runc: runc, begin: math.NaN(), end: math.NaN(),
		procs: map[int]*proc{}, parent: map[int]int{}, cpu: map[int]float64{}}
	for _, e := range evs {
		s.record(e, probes)
	}
	return s
}

func (s *sample) record(e traceEvent, probes map[string]string) {
	switch e.name {
	case "tracing_mark_write":
		if strings.Contains(e.args, "nsiso-bench begin") {
			s.begin = e.ms
		} else if strings.Contains(e.args, "nsiso-bench end") {
			s.end = e.ms
		}
	case "sched_process_fork":
		// Emitted by the forking thread, so the line's tgid is the
		// parent process.
		s.parent[e.intField("child_pid")] = e.tgid
	case "sched_process_exec":
		p := s.get(e.intField("pid"))
		p.exec, p.file = e.ms, e.field("filename")
	case "sched_stat_runtime":
		// Emitted for the task running on the CPU, so the line's tgid
		// is the process charged.
		if ns, err := strconv.ParseFloat(e.field("runtime"), 64); err == nil {
			s.cpu[e.tgid] += ns / 1e6
		}
	case "sched_process_exit":
		if e.field("group_dead") == "true" {
			s.get(e.tgid).exit = e.ms
		}
	default:
		if label, ok := probes[e.name]; ok {
			p := s.get(e.tgid)
			p.probes[label] = append(p.probes[label], e.ms)
		}
	}
}

// get returns the process pid, creating its record on first sight.
func (s *sample) get(pid int) *proc {
	p := s.procs[pid]
	if p == nil {
		p = &proc{pid: pid, exec: math.NaN(), exit: math.NaN(), probes: map[string][]float64{}}
		s.procs[pid] = p
	}
	return p
}

func (s *sample) isShim(p *proc) bool {
	return slices.Contains(s.shims, p.file)
}

// shimRoles finds the three shim processes of a container's life by the
// probes each one hit: `shim start`, the server and `shim delete`.
func (s *sample) shimRoles() (start, server, del *proc) {
	for _, p := range s.procs {
		if !s.isShim(p) {
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
	return start, server, del
}

// ancestor tells whether a is an ancestor of pid.
func (s *sample) ancestor(a, pid int) bool {
	for i := 0; i < 64 && pid != 0; i++ {
		if pid == a {
			return true
		}
		pid = s.parent[pid]
	}
	return false
}

// runcsOf returns the runc runs of server, in order of their exec.
func (s *sample) runcsOf(server *proc) []*proc {
	var runcs []*proc
	for _, p := range s.procs {
		if p.file == s.runc && s.parent[p.pid] == server.pid {
			runcs = append(runcs, p)
		}
	}
	sort.Slice(runcs, func(i, j int) bool { return runcs[i].exec < runcs[j].exec })
	return runcs
}

// firstRuncAfter returns the first of runcs to exec at or after t, or nil.
func firstRuncAfter(runcs []*proc, t float64) *proc {
	for _, p := range runcs {
		if p.exec >= t {
			return p
		}
	}
	return nil
}

// serverPhases sets the phases of the serving shim: its start, the
// Create, Start and Delete requests, its GCs and its exit.
func (s *sample) serverPhases(ph phaseSet, server *proc) {
	ph.set("shim serve: exec → runtime.main", server.exec, server.first("runtime.main"))
	ph.set("shim serve: package init", server.first("runtime.main"), server.first("main"))
	ph.set("shim serve: main → serve", server.first("main"), server.first("serve"))
	runcs := s.runcsOf(server)
	createReply := s.createPhases(ph, server, runcs)
	startPhases(ph, server, runcs)
	deletePhases(ph, server, runcs)
	ph.set("Shutdown → shim exit", server.first("Shutdown"), server.exit)
	gcPhases(ph, server, createReply)
}

// createPhases splits the Create request at its runc run, and times the
// container's process that runc started. It returns the moment of the
// Create reply, NaN when unseen.
func (s *sample) createPhases(ph phaseSet, server *proc, runcs []*proc) float64 {
	create := server.first("Create")
	req := create
	if nc := server.first("nsiso.Create"); !math.IsNaN(nc) {
		req = nc
		ph.set("Create: nsiso's part", nc, create)
	}
	ph.set("Create: serve → request", server.first("serve"), req)
	rc := firstRuncAfter(runcs, create)
	if rc == nil {
		return math.NaN()
	}
	ph.set("Create: runc.v2 before runc", create, rc.exec)
	ph.set("Create: runc create", rc.exec, rc.exit)
	reply := server.firstAfter("reply", rc.exit)
	ph.set("Create: runc exit → reply", rc.exit, reply)
	ph.set("Create: request → reply", req, reply)
	// The container's process: runc init's exec of anything but runc
	// itself.
	for _, p := range s.procs {
		if p.file != "" && p.file != s.runc && !strings.HasPrefix(p.file, "/proc/self/fd/") && !s.isShim(p) && s.ancestor(rc.pid, p.pid) {
			ph.set("container: exec → exit", p.exec, p.exit)
		}
	}
	return reply
}

func startPhases(ph phaseSet, server *proc, runcs []*proc) {
	st := server.first("Start")
	if rs := firstRuncAfter(runcs, st); rs != nil {
		ph.set("Start: runc start", rs.exec, rs.exit)
		reply := server.firstAfter("reply", rs.exit)
		ph.set("Start: request → reply", st, reply)
	}
}

func deletePhases(ph phaseSet, server *proc, runcs []*proc) {
	dreq := server.first("Delete")
	if nd := server.first("nsiso.Delete"); !math.IsNaN(nd) {
		dreq = nd
	}
	if rd := firstRuncAfter(runcs, dreq); rd != nil {
		ph.set("Delete: runc delete", rd.exec, rd.exit)
		reply := server.firstAfter("reply", rd.exit)
		ph.set("Delete: runc exit → reply", rd.exit, reply)
		ph.set("Delete: request → reply", dreq, reply)
		ph.set("Delete: nsiso's cleanup → reply", server.firstAfter("nsiso.cleanup", rd.exit), reply)
	}
}

// gcPhases counts the serving shim's GCs, in all and up to the Create
// reply (none when the reply, NaN, went unseen).
func gcPhases(ph phaseSet, server *proc, createReply float64) {
	gcs, early := 0, 0
	for _, t := range server.probes["gc"] {
		gcs++
		if t <= createReply {
			early++
		}
	}
	ph["GCs in the serving shim, whole life (count)"] = float64(gcs)
	ph["GCs in the serving shim up to the Create reply (count)"] = float64(early)
}

// phaseSet collects one sample's phases, by name, in milliseconds.
type phaseSet map[string]float64

// set records the phase from → to when both moments were seen in order.
func (ph phaseSet) set(name string, from, to float64) {
	if !math.IsNaN(from) && !math.IsNaN(to) && to >= from {
		ph[name] = to - from
	}
}

// shimLife records a short-lived shim process's (`shim start`, `shim
// delete`) start and run, as the phases named prefix.
func (ph phaseSet) shimLife(prefix string, p *proc) {
	ph.set(prefix+": exec → runtime.main", p.exec, p.first("runtime.main"))
	ph.set(prefix+": package init", p.first("runtime.main"), p.first("main"))
	ph.set(prefix+": main → exit", p.first("main"), p.exit)
}
