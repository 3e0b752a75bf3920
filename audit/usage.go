package audit

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/specmod"
)

// ShmUsage is the shared memory of one IPC namespace with a live container
// in it: the POSIX shared memory on its /dev/shm and the System V segments
// held in it, beside the limits of each. A namespace that several
// containers share (a pod's) is reported once.
type ShmUsage struct {
	// IPCNamespace is the namespace's inode number.
	IPCNamespace uint64 `json:"ipcNamespace"`
	// Host is true for the host's IPC namespace, which has no owner.
	Host bool `json:"host"`
	// Owner is the record of the container that owns the namespace (its
	// IpcMode is "private"; a pod's sandbox), with its pod; nil for the
	// host's.
	Owner *Record `json:"owner"`
	// Containers are the live containers in the namespace, as
	// "<namespace>/<id>", sorted.
	Containers []string `json:"containers"`
	// ShmSource is the owner's /dev/shm as in Record.ShmSource ("own",
	// "host", "container:<id>", "none", "unknown"); for the host's
	// namespace, the first member's.
	ShmSource string `json:"shmSource"`
	// ShmSize and ShmUsed are that /dev/shm's size and bytes in use
	// (statfs); both 0 when there is none, it was not read, or its file
	// system has no size (a tmpfs mounted with size=0).
	ShmSize int64 `json:"shmSize"`
	ShmUsed int64 `json:"shmUsed"`
	// SysV is the namespace's System V shared memory; nil when it could
	// not be read (a note says why).
	SysV *SysV `json:"sysv"`
}

// ReadSysVAll reads the System V shared memory of every IPC namespace of a
// live container (ReadSysV), through each namespace's earliest-started
// member that is still there. A namespace whose members all exited, or
// that cannot be read, is left out with a note: it never fails the audit.
func ReadSysVAll(facts []Facts) (map[hostns.FileID]SysV, []string) {
	groups := map[hostns.FileID][]int{}
	for i := range facts {
		if facts[i].Live {
			groups[facts[i].IPC] = append(groups[facts[i].IPC], i)
		}
	}
	keys := make([]hostns.FileID, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b hostns.FileID) int { return cmp.Compare(a.Ino, b.Ino) })
	out := map[hostns.FileID]SysV{}
	var notes []string
	for _, ns := range keys {
		members := groups[ns]
		slices.SortFunc(members, func(a, b int) int { return cmp.Compare(facts[a].StartTime, facts[b].StartTime) })
		var err error
		for _, i := range members {
			var v SysV
			if v, err = ReadSysV(facts[i].Pid, ns); err == nil {
				out[ns] = v
				break
			}
			if !errors.Is(err, errGone) && !errors.Is(err, errOtherNamespace) {
				break
			}
		}
		if err != nil {
			f := &facts[members[0]]
			why := "its containers exited while it was being read"
			if !errors.Is(err, errGone) && !errors.Is(err, errOtherNamespace) {
				why = cleanLine(err.Error())
			}
			notes = append(notes, fmt.Sprintf("IPC namespace %d (%s/%s): System V shared memory not reported: %s",
				ns.Ino, Quote(f.Namespace), Quote(f.ID), why))
		}
	}
	return out, notes
}

// Usages builds one ShmUsage per IPC namespace of a live container, from
// the facts, the records Analyze made of them (which name each namespace's
// owner) and the System V reads (ReadSysVAll). The host's namespace comes
// first, then the others by owner.
func Usages(facts []Facts, recs []Record, sysv map[hostns.FileID]SysV) []ShmUsage {
	rec := map[[2]string]int{}
	for i, r := range recs {
		rec[[2]string{r.Namespace, r.ID}] = i
	}
	byNS := map[hostns.FileID]*ShmUsage{}
	var order []hostns.FileID
	for i := range facts {
		f := &facts[i]
		ri, ok := rec[[2]string{f.Namespace, f.ID}]
		if !f.Live || !ok {
			continue
		}
		r := &recs[ri]
		u := byNS[f.IPC]
		if u == nil {
			u = &ShmUsage{IPCNamespace: f.IPC.Ino, Host: r.IPCMode == ModeHost}
			byNS[f.IPC] = u
			order = append(order, f.IPC)
		}
		u.Containers = append(u.Containers, f.Namespace+"/"+f.ID)
		// The owner's /dev/shm is the namespace's; the host's namespace
		// has no owner and takes its first member's.
		if r.IPCMode == ModePrivate || u.Host && u.ShmSource == "" {
			if r.IPCMode == ModePrivate {
				owner := *r
				u.Owner = &owner
			}
			u.ShmSource = r.ShmSource
			u.ShmSize, u.ShmUsed = 0, 0
			if f.HasShm && f.ShmBounded {
				u.ShmSize, u.ShmUsed = f.ShmSize, f.ShmUsed
			}
		}
	}
	out := make([]ShmUsage, 0, len(order))
	for _, k := range order {
		u := byNS[k]
		slices.Sort(u.Containers)
		if v, ok := sysv[k]; ok {
			u.SysV = &v
		}
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b ShmUsage) int {
		if a.Host != b.Host {
			if a.Host {
				return -1
			}
			return 1
		}
		var an, ai, bn, bi string
		if a.Owner != nil {
			an, ai = a.Owner.Namespace, a.Owner.ID
		}
		if b.Owner != nil {
			bn, bi = b.Owner.Namespace, b.Owner.ID
		}
		return cmp.Or(cmp.Compare(an, bn), cmp.Compare(ai, bi), cmp.Compare(a.IPCNamespace, b.IPCNamespace))
	})
	return out
}

// UsageInPodNamespace keeps the namespaces whose owner CRI made for a pod
// in the Kubernetes namespace ns.
func UsageInPodNamespace(us []ShmUsage, ns string) []ShmUsage {
	var out []ShmUsage
	for _, u := range us {
		if u.Owner != nil && u.Owner.PodNamespace == ns {
			out = append(out, u)
		}
	}
	return out
}

// UsageLine renders one IPC namespace's shared memory as a line of the
// text report (--shm):
//
//	k8s.io/0f57…: IpcNamespace=4026532301 ShmSize=64Mi ShmUsed=60403712 SysvSegments=1 SysvBytes=1Mi SysvMax=64Mi SysvSegmentMax=64Mi SysvSegmentsMax=4096 Containers=2 Pod=team-x/web
//	host: IpcNamespace=4026531839 ShmSize=host ...
//
// Sizes are in bytes, or in a binary unit when they are a whole number of
// it; "-" is what was not read.
func UsageLine(u ShmUsage) string {
	var b strings.Builder
	if u.Owner != nil {
		fmt.Fprintf(&b, "%s/%s:", Quote(u.Owner.Namespace), Quote(u.Owner.ID))
	} else {
		b.WriteString("host:")
	}
	fmt.Fprintf(&b, " IpcNamespace=%d", u.IPCNamespace)
	switch {
	case u.ShmSource == ShmOwn && u.ShmSize > 0:
		fmt.Fprintf(&b, " ShmSize=%s ShmUsed=%s", specmod.FormatSize(u.ShmSize), specmod.FormatSize(u.ShmUsed))
	case u.ShmSource == ShmHost && u.ShmSize > 0:
		fmt.Fprintf(&b, " ShmSize=host:%s ShmUsed=%s", specmod.FormatSize(u.ShmSize), specmod.FormatSize(u.ShmUsed))
	default:
		fmt.Fprintf(&b, " ShmSize=%s", Quote(cmp.Or(u.ShmSource, ShmUnknown)))
	}
	if v := u.SysV; v != nil {
		fmt.Fprintf(&b, " SysvSegments=%d SysvBytes=%s SysvMax=%s SysvSegmentMax=%s SysvSegmentsMax=%d",
			v.Segments, sizeText(v.Bytes), sizeText(v.MaxBytes), sizeText(v.MaxSegmentBytes), v.MaxSegments)
	} else {
		b.WriteString(" SysvSegments=-")
	}
	fmt.Fprintf(&b, " Containers=%d", len(u.Containers))
	if u.Owner != nil {
		if p := u.Owner.Pod(); !p.IsZero() {
			fmt.Fprintf(&b, " Pod=%s", p)
		}
		if p := u.Owner.Claim(); !p.IsZero() {
			fmt.Fprintf(&b, " ClaimedPod=%s", p)
		}
	}
	return b.String()
}

func sizeText(v uint64) string {
	if v > math.MaxInt64 {
		return strconv.FormatUint(v, 10)
	}
	return specmod.FormatSize(int64(v))
}

// WriteUsageText writes one UsageLine per IPC namespace.
func WriteUsageText(w io.Writer, us []ShmUsage) error {
	var b strings.Builder
	for _, u := range us {
		b.WriteString(UsageLine(u))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteUsageJSON writes the IPC namespaces as one indented JSON array,
// escaped as WriteJSON escapes records.
func WriteUsageJSON(w io.Writer, us []ShmUsage) error {
	if us == nil {
		us = []ShmUsage{}
	}
	return writeJSONValue(w, us)
}

type metricFamily struct {
	name, help string
	samples    []sample
}

// usageFamilies are the shared memory gauges, one series per IPC namespace
// that a container owns, labelled as that owner (containerLabels): a pod's
// sandbox for a pod. The host's namespace and /dev/shm are the node's
// (node_exporter's filesystem collector reports /dev/shm) and are left
// out; so is a /dev/shm that is not the owner's own tmpfs, which its own
// owner reports.
//
//	nsiso_audit_shm_size_bytes               size of the namespace's /dev/shm
//	nsiso_audit_shm_used_bytes               bytes in use on it
//	nsiso_audit_sysv_shm_segments            System V segments in the namespace
//	nsiso_audit_sysv_shm_bytes               their size, in whole pages
//	nsiso_audit_sysv_shm_limit_bytes         kernel.shmall, in bytes
//	nsiso_audit_sysv_shm_segment_limit_bytes kernel.shmmax
//	nsiso_audit_sysv_shm_segments_limit      kernel.shmmni
//	nsiso_audit_ipc_namespace_containers     live containers in the namespace
func usageFamilies(us []ShmUsage) []metricFamily {
	fams := []metricFamily{
		{name: "nsiso_audit_shm_size_bytes", help: "Size of the /dev/shm tmpfs of an IPC namespace's owner (a pod's sandbox), in bytes."},
		{name: "nsiso_audit_shm_used_bytes", help: "Bytes in use on that /dev/shm (POSIX shared memory: shm_open, DataLoader tensors, MPI)."},
		{name: "nsiso_audit_sysv_shm_segments", help: "System V shared memory segments held in the IPC namespace."},
		{name: "nsiso_audit_sysv_shm_bytes", help: "Bytes of those segments, each rounded up to whole pages (what kernel.shmall limits)."},
		{name: "nsiso_audit_sysv_shm_limit_bytes", help: "The IPC namespace's kernel.shmall in bytes: the most all its segments may take."},
		{name: "nsiso_audit_sysv_shm_segment_limit_bytes", help: "The IPC namespace's kernel.shmmax: the largest segment, in bytes."},
		{name: "nsiso_audit_sysv_shm_segments_limit", help: "The IPC namespace's kernel.shmmni: the most segments."},
		{name: "nsiso_audit_ipc_namespace_containers", help: "Live containers in the IPC namespace (a pod's sandbox and containers)."},
	}
	for _, u := range us {
		if u.Owner == nil {
			continue
		}
		ls := containerLabels(*u.Owner)
		put := func(i int, v float64) { fams[i].samples = append(fams[i].samples, sample{labels: ls, value: v}) }
		if u.ShmSource == ShmOwn && u.ShmSize > 0 {
			put(0, float64(u.ShmSize))
			put(1, float64(u.ShmUsed))
		}
		if v := u.SysV; v != nil {
			put(2, float64(v.Segments))
			put(3, float64(v.Bytes))
			put(4, float64(v.MaxBytes))
			put(5, float64(v.MaxSegmentBytes))
			put(6, float64(v.MaxSegments))
		}
		put(7, float64(len(u.Containers)))
	}
	return fams
}
