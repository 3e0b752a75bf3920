package audit

import (
	"cmp"
	"slices"

	"github.com/nsiso/nsiso/hostns"
)

// Values of Record.IPCMode and Record.PIDMode other than "container:…".
const (
	ModeHost    = "host"
	ModePrivate = "private"
	ModeStopped = "stopped"
)

// Values of Record.ShmSource other than "container:…".
const (
	ShmOwn  = "own"
	ShmHost = "host"
	ShmNone = "none"
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
	// process; a container without one is reported as stopped.
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
	// SpecCreatesIPC and SpecCreatesPID tell whether the container's own
	// OCI spec asks for a new namespace without naming a parent container
	// (see CreatesNamespace).
	SpecCreatesIPC, SpecCreatesPID bool
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
		r := Record{Namespace: f.Namespace, ID: f.ID, Runtime: f.Runtime, Status: f.Status}
		if !f.Live {
			r.IPCMode, r.PIDMode = ModeStopped, ModeStopped
			recs[i] = r
			continue
		}
		r.Pid, r.IPCNamespace, r.PIDNamespace = f.Pid, f.IPC.Ino, f.PID.Ino
		r.IPCMode = mode(fs, i, f.IPC, host.IPC, ipcOwner)
		r.PIDMode = mode(fs, i, f.PID, host.PID, pidOwner)
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
		case !f.HasShm:
			recs[i].ShmSource = ShmNone
		case host.HasShm && f.ShmDev == host.Shm.Dev:
			recs[i].ShmSource = ShmHost
		default:
			recs[i].ShmSize = f.ShmSize
			shmGroups[f.ShmDev] = append(shmGroups[f.ShmDev], i)
		}
	}
	for _, members := range shmGroups {
		o := pick(fs, members, func(i int) bool { return recs[i].IPCMode == ModePrivate })
		for _, i := range members {
			if i == o {
				recs[i].ShmSource = ShmOwn
			} else {
				recs[i].ShmSource = OwnerName(fs[i].Namespace, fs[o].Namespace, fs[o].ID)
			}
		}
	}
	return recs
}

// owners maps each namespace shared by more than one live container (other
// than the host's) to the index of its owner in fs.
func owners(fs []Facts, hostNS hostns.FileID, key func(int) hostns.FileID, rules ...func(int) bool) map[hostns.FileID]int {
	groups := map[hostns.FileID][]int{}
	for i := range fs {
		if fs[i].Live && key(i) != hostNS {
			groups[key(i)] = append(groups[key(i)], i)
		}
	}
	out := map[hostns.FileID]int{}
	for k, members := range groups {
		if len(members) > 1 {
			out[k] = pick(fs, members, rules...)
		}
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
	o, shared := owner[ns]
	if !shared || o == i {
		return ModePrivate
	}
	return OwnerName(fs[i].Namespace, fs[o].Namespace, fs[o].ID)
}
