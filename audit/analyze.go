package audit

import (
	"cmp"
	"slices"
	"strings"

	"github.com/nsiso/nsiso/hostns"
)

// Values of Record.IPCMode and Record.PIDMode other than "container:…".
const (
	ModeHost    = "host"
	ModePrivate = "private"
	// ModeUnknown is a container without a live task whose spec could not
	// be read, or names a namespace path that does not exist now (such a
	// container cannot start as it is).
	ModeUnknown = "unknown"
)

// Values of Record.ShmSource other than "container:…".
const (
	ShmOwn  = "own"
	ShmHost = "host"
	ShmNone = "none"
	// ShmUnknown is a container without a live task whose spec could not
	// be read, or binds a path that does not exist now; or a live one
	// whose /dev/shm is a symlink, which the audit does not follow.
	ShmUnknown = "unknown"
)

// Values of Record.Source: where a record's modes come from.
const (
	// SourceKernel: the live init's namespaces and /dev/shm.
	SourceKernel = "kernel"
	// SourceSpec: the container's OCI spec, for a container without a
	// live task; what starting it would do.
	SourceSpec = "spec"
)

// Host is the host's side of every comparison.
type Host struct {
	IPC, PID hostns.FileID
	// Shm is the host's /dev/shm; HasShm is false when the host has none,
	// and then no container can share it.
	Shm    hostns.FileID
	HasShm bool
}

// Facts is what containerd and the kernel tell about one container.
type Facts struct {
	Namespace, ID, Runtime string
	// Status is containerd's task status, "stopped" without a task.
	Status string
	// Live is true when the fields below were read from a live init
	// process; a container without one is reported by its spec (Spec).
	Live bool
	Pid  uint32
	IPC  hostns.FileID
	PID  hostns.FileID
	// InnerPid is the init's pid in its own PID namespace (the last NSpid
	// field): 1 for the namespace's first process, which created it.
	InnerPid int
	// StartTime is the init's start time in clock ticks after boot.
	StartTime uint64
	// HasShm is false when the container has no /dev/shm; ShmDev is the
	// device of the file system at its /dev/shm, ShmSize its size in bytes.
	HasShm  bool
	ShmDev  uint64
	ShmSize int64
	// ShmUsed is the bytes in use on it; ShmBounded is false when its file
	// system has no size, and then neither is known.
	ShmUsed    int64
	ShmBounded bool
	// ShmSymlink is set when the container's /dev/shm is a symlink, which
	// the audit does not follow (HasShm is then false).
	ShmSymlink bool
	// SpecCreatesIPC and SpecCreatesPID tell whether the container's own
	// OCI spec asks for a new namespace without naming a parent container
	// (see CreatesNamespace).
	SpecCreatesIPC, SpecCreatesPID bool
	// Spec is what the spec of a container without a live task asks for;
	// nil when it is live or its spec could not be read.
	Spec *SpecFacts
	// Pod is the Kubernetes pod containerd's CRI plugin made the container
	// for, if any (see Attribute).
	Pod Pod
	// Claim is the pod the labels and annotations of a container CRI did
	// not make name (PodOf); zero when CRI made it or they name none.
	Claim Pod
}

// Record is one container's line of the report; the JSON field names are
// part of the command's interface and do not change.
type Record struct {
	Namespace    string `json:"namespace"`
	ID           string `json:"id"`
	IPCMode      string `json:"ipcMode"`
	PIDMode      string `json:"pidMode"`
	ShmSize      int64  `json:"shmSize"`
	ShmSource    string `json:"shmSource"`
	Runtime      string `json:"runtime"`
	Pid          uint32 `json:"pid"`
	IPCNamespace uint64 `json:"ipcNamespace"`
	PIDNamespace uint64 `json:"pidNamespace"`
	Status       string `json:"status"`
	// Source is SourceKernel or SourceSpec.
	Source string `json:"source"`
	// The Kubernetes pod, as containerd's CRI plugin knows it; empty
	// outside a pod. ContainerName is empty and Sandbox true for the pod's
	// sandbox.
	PodNamespace  string `json:"podNamespace"`
	PodName       string `json:"podName"`
	ContainerName string `json:"containerName"`
	Sandbox       bool   `json:"sandbox"`
	// The pod that the labels and annotations of a container CRI did not
	// make name: a claim anyone who can create a container can write,
	// never counted as that pod's. Empty when there is none.
	ClaimedPodNamespace  string `json:"claimedPodNamespace"`
	ClaimedPodName       string `json:"claimedPodName"`
	ClaimedContainerName string `json:"claimedContainerName"`
	ClaimedSandbox       bool   `json:"claimedSandbox"`
}

// Pod is the record's Kubernetes pod.
func (r Record) Pod() Pod {
	return podOfFields(r.PodNamespace, r.PodName, r.ContainerName, r.Sandbox)
}

// Claim is the pod the record's container claims without CRI having made
// it.
func (r Record) Claim() Pod {
	return podOfFields(r.ClaimedPodNamespace, r.ClaimedPodName, r.ClaimedContainerName, r.ClaimedSandbox)
}

func podOfFields(ns, name, container string, sandbox bool) Pod {
	p := Pod{Namespace: ns, Name: name, Container: container}
	switch {
	case sandbox:
		p.Kind = KindSandbox
	case !p.IsZero():
		p.Kind = KindContainer
	}
	return p
}

// OwnerName is how a container refers to the owner of a namespace or
// /dev/shm it shares: the bare ID within the same containerd namespace,
// namespace/ID across namespaces, so that a line can be read on its own.
func OwnerName(fromNamespace, ownerNamespace, ownerID string) string {
	if fromNamespace == ownerNamespace {
		return "container:" + ownerID
	}
	return "container:" + ownerNamespace + "/" + ownerID
}

// Analyze turns the facts into records, sorted by namespace, then ID.
//
// When several containers share a namespace that is not the host's, each of
// them names the same owner and the owner itself reads "private". The owner
// is chosen among the containers of the namespace by the first rule that
// leaves any candidate:
//
//  1. for a PID namespace, the container whose init is pid 1 in it (it
//     created the namespace; no other container can be);
//  2. the container whose spec creates the namespace and names no parent
//     (SpecCreatesIPC, SpecCreatesPID);
//  3. any of them;
//
// and among several candidates the earliest started init wins, then the
// lowest namespace/ID. A /dev/shm shared by several containers is owned by
// one that owns its IPC namespace (or has one of its own), chosen the same
// way among them, else among all.
//
// A container without a live task is described by what its spec asks for
// (Facts.Spec; see specMode and specShm), named against the live ones; it
// never owns anything.
func Analyze(host Host, facts []Facts) []Record {
	fs := slices.Clone(facts)
	slices.SortFunc(fs, func(a, b Facts) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.ID, b.ID))
	})
	ipcOwner := owners(fs, host.IPC, func(i int) hostns.FileID { return fs[i].IPC },
		func(i int) bool { return fs[i].SpecCreatesIPC })
	pidOwner := owners(fs, host.PID, func(i int) hostns.FileID { return fs[i].PID },
		func(i int) bool { return fs[i].InnerPid == 1 },
		func(i int) bool { return fs[i].SpecCreatesPID })

	recs := make([]Record, len(fs))
	for i := range fs {
		f := &fs[i]
		r := Record{Namespace: f.Namespace, ID: f.ID, Runtime: f.Runtime, Status: f.Status, Source: SourceKernel,
			PodNamespace: f.Pod.Namespace, PodName: f.Pod.Name, ContainerName: f.Pod.Container, Sandbox: f.Pod.Kind == KindSandbox,
			ClaimedPodNamespace: f.Claim.Namespace, ClaimedPodName: f.Claim.Name, ClaimedContainerName: f.Claim.Container,
			ClaimedSandbox: f.Claim.Kind == KindSandbox}
		if f.Live {
			r.Pid, r.IPCNamespace, r.PIDNamespace = f.Pid, f.IPC.Ino, f.PID.Ino
			r.IPCMode = mode(fs, i, f.IPC, host.IPC, ipcOwner)
			r.PIDMode = mode(fs, i, f.PID, host.PID, pidOwner)
		}
		recs[i] = r
	}

	// A tmpfs is identified by its device: every bind of it, under any
	// path and of any subdirectory, has the same one, and a subdirectory of
	// the host's /dev/shm still shares its memory and its quota.
	shmGroups := map[uint64][]int{}
	for i := range fs {
		f := &fs[i]
		switch {
		case !f.Live:
		case f.ShmSymlink:
			recs[i].ShmSource = ShmUnknown
		case !f.HasShm:
			recs[i].ShmSource = ShmNone
		case host.HasShm && f.ShmDev == host.Shm.Dev:
			recs[i].ShmSource = ShmHost
		default:
			recs[i].ShmSize = f.ShmSize
			shmGroups[f.ShmDev] = append(shmGroups[f.ShmDev], i)
		}
	}
	shmOwner := map[uint64]int{}
	for dev, members := range shmGroups {
		o := pick(fs, members, func(i int) bool { return recs[i].IPCMode == ModePrivate })
		shmOwner[dev] = o
		for _, i := range members {
			if i == o {
				recs[i].ShmSource = ShmOwn
			} else {
				recs[i].ShmSource = OwnerName(fs[i].Namespace, fs[o].Namespace, fs[o].ID)
			}
		}
	}

	sr := specReader{fs: fs, recs: recs, host: host, ipcOwner: ipcOwner, pidOwner: pidOwner, shmOwner: shmOwner,
		index: map[[2]string]int{}, state: make([]int8, len(fs))}
	for i := range fs {
		sr.index[[2]string{fs[i].Namespace, fs[i].ID}] = i
	}
	for i := range fs {
		if !fs[i].Live {
			sr.resolve(i)
		}
	}
	return recs
}

// specReader names what the specs of containers without a live task ask
// for, against the live containers and against each other: a container
// that joins its parent's namespace reads as whatever its parent reads.
type specReader struct {
	fs                 []Facts
	recs               []Record
	host               Host
	ipcOwner, pidOwner map[hostns.FileID]int
	shmOwner           map[uint64]int
	index              map[[2]string]int
	// state is 0 before a record is resolved, 1 while, 2 after; a chain
	// of parents that comes back to itself stops at 1.
	state []int8
}

func (a *specReader) resolve(i int) {
	if a.state[i] != 0 {
		return
	}
	a.state[i] = 1
	f, r := &a.fs[i], &a.recs[i]
	r.Source = SourceSpec
	if f.Spec == nil {
		r.IPCMode, r.PIDMode, r.ShmSource = ModeUnknown, ModeUnknown, ShmUnknown
	} else {
		r.IPCMode = a.mode(i, f.Spec.IPC, a.host.IPC, a.ipcOwner, func(r *Record) string { return r.IPCMode })
		r.PIDMode = a.mode(i, f.Spec.PID, a.host.PID, a.pidOwner, func(r *Record) string { return r.PIDMode })
		r.ShmSource = a.shm(i)
	}
	a.state[i] = 2
}

// parentLive tells whether fs[i]'s spec names a parent with a live task.
func (a *specReader) parentLive(i int) bool {
	f := &a.fs[i]
	p, ok := a.index[[2]string{f.Namespace, f.Spec.Parent}]
	return ok && a.fs[p].Live
}

// viaParent is what joining its parent's namespace or /dev/shm (field of
// the parent's record) gives fs[i]: the host's when the parent's is the
// host's, the owner the parent names, else the parent itself.
func (a *specReader) viaParent(i int, field func(*Record) string) string {
	f := &a.fs[i]
	name := OwnerName(f.Namespace, f.Namespace, f.Spec.Parent)
	p, ok := a.index[[2]string{f.Namespace, f.Spec.Parent}]
	if !ok || a.state[p] == 1 {
		return name
	}
	if !a.fs[p].Live {
		a.resolve(p)
	}
	switch m := field(&a.recs[p]); {
	case m == ModeHost:
		return ModeHost
	case strings.HasPrefix(m, "container:") && m != OwnerName(f.Namespace, f.Namespace, f.ID):
		// The parent names the owner relative to its own containerd
		// namespace, which is the child's; in a ring of parents it may
		// name the child, which owns nothing.
		return m
	}
	return name
}

// mode is the IpcMode or PidMode of fs[i], from what its spec asks for.
func (a *specReader) mode(i int, n SpecNS, hostNS hostns.FileID, owner map[hostns.FileID]int, field func(*Record) string) string {
	f := &a.fs[i]
	switch n.Kind {
	case SpecHost:
		return ModeHost
	case SpecNew:
		return ModePrivate
	case SpecParent:
		return a.viaParent(i, field)
	}
	switch {
	case f.Spec.Parent != "" && !a.parentLive(i):
		// A pod's container joins its sandbox by the sandbox init's
		// /proc/<pid>/ns path. With the sandbox gone that pid is free and
		// may name any process now, the host's included; what the spec
		// asked for was the sandbox's namespace (CRI starts no container
		// in a sandbox that is not running).
		return a.viaParent(i, field)
	case !n.Resolved:
		return ModeUnknown
	case n.ID == hostNS:
		return ModeHost
	}
	if o, ok := owner[n.ID]; ok {
		return OwnerName(f.Namespace, a.fs[o].Namespace, a.fs[o].ID)
	}
	// A namespace that is neither the host's nor a container's.
	return ModePrivate
}

// shm is the ShmSource of fs[i], from what its spec asks for.
func (a *specReader) shm(i int) string {
	f := &a.fs[i]
	field := func(r *Record) string { return r.ShmSource }
	sh := f.Spec.Shm
	switch sh.Kind {
	case ShmSpecHost:
		return ShmHost
	case ShmSpecNone:
		return ShmNone
	case ShmSpecTmpfs:
		return ShmOwn
	case ShmSpecParent:
		return a.viaParent(i, field)
	}
	switch {
	case sh.Resolved && a.host.HasShm && sh.Dev == a.host.Shm.Dev:
		return ShmHost
	case f.Spec.Parent != "" && !a.parentLive(i):
		// A pod's /dev/shm is a tmpfs CRI mounts while the sandbox runs;
		// what is left at its path says nothing.
		return a.viaParent(i, field)
	case !sh.Resolved:
		return ShmUnknown
	}
	if o, ok := a.shmOwner[sh.Dev]; ok {
		return OwnerName(f.Namespace, a.fs[o].Namespace, a.fs[o].ID)
	}
	return ShmOwn
}

// owners maps each namespace of a live container (other than the host's)
// to the index of its owner in fs: the only member, or the one the rules
// pick among several.
func owners(fs []Facts, hostNS hostns.FileID, key func(int) hostns.FileID, rules ...func(int) bool) map[hostns.FileID]int {
	groups := map[hostns.FileID][]int{}
	for i := range fs {
		if fs[i].Live && key(i) != hostNS {
			groups[key(i)] = append(groups[key(i)], i)
		}
	}
	out := map[hostns.FileID]int{}
	for k, members := range groups {
		out[k] = pick(fs, members, rules...)
	}
	return out
}

// pick applies the rules in order and returns the first-started candidate
// of the first rule that has any; with none, of all members.
func pick(fs []Facts, members []int, rules ...func(int) bool) int {
	for _, rule := range rules {
		var cands []int
		for _, i := range members {
			if rule(i) {
				cands = append(cands, i)
			}
		}
		if len(cands) > 0 {
			return earliest(fs, cands)
		}
	}
	return earliest(fs, members)
}

func earliest(fs []Facts, cands []int) int {
	return slices.MinFunc(cands, func(a, b int) int {
		return cmp.Or(cmp.Compare(fs[a].StartTime, fs[b].StartTime),
			cmp.Compare(fs[a].Namespace, fs[b].Namespace),
			cmp.Compare(fs[a].ID, fs[b].ID))
	})
}

// mode is the IpcMode or PidMode of fs[i], whose namespace is ns.
func mode(fs []Facts, i int, ns, hostNS hostns.FileID, owner map[hostns.FileID]int) string {
	if ns == hostNS {
		return ModeHost
	}
	o := owner[ns]
	if o == i {
		return ModePrivate
	}
	return OwnerName(fs[i].Namespace, fs[o].Namespace, fs[o].ID)
}
