package audit

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nsiso/nsiso/hostns"
)

// A pod's sandbox and two containers share one IPC namespace and the
// sandbox's /dev/shm: one entry, labelled as the sandbox. A host-IPC
// container is the host's entry, with no gauges; a container with a
// symlinked /dev/shm reports no /dev/shm usage.
func TestUsages(t *testing.T) {
	host := Host{IPC: hostns.FileID{Dev: 4, Ino: 1}, PID: hostns.FileID{Dev: 4, Ino: 2}, Shm: hostns.FileID{Dev: 30}, HasShm: true}
	podNS, ctrNS, linkNS := hostns.FileID{Dev: 4, Ino: 100}, hostns.FileID{Dev: 4, Ino: 200}, hostns.FileID{Dev: 4, Ino: 300}
	live := func(ns, id string, ipc hostns.FileID, start uint64, shmDev uint64, size, used int64) Facts {
		return Facts{Namespace: ns, ID: id, Runtime: NSISORuntime, Status: "running", Live: true, Pid: uint32(start),
			IPC: ipc, PID: hostns.FileID{Dev: 4, Ino: 1000 + start}, InnerPid: 1, StartTime: start,
			HasShm: shmDev != 0, ShmDev: shmDev, ShmSize: size, ShmUsed: used, ShmBounded: size > 0}
	}
	sb := live("k8s.io", "sb", podNS, 1, 40, 64<<20, 60<<20)
	sb.Pod = Pod{Namespace: "team-x", Name: "train", Kind: KindSandbox}
	a := live("k8s.io", "a", podNS, 2, 40, 64<<20, 60<<20)
	a.Pod = Pod{Namespace: "team-x", Name: "train", Container: "a", Kind: KindContainer}
	b := a
	b.ID, b.StartTime, b.Pid, b.Pod.Container = "b", 3, 3, "b"
	db := live("default", "db", ctrNS, 4, 50, 32<<20, 0)
	hostc := live("default", "hostipc", host.IPC, 5, 30, 1<<30, 5<<20)
	link := live("default", "link", linkNS, 6, 0, 0, 0)
	link.ShmSymlink = true
	facts := []Facts{sb, a, b, db, hostc, link}
	recs := Analyze(host, facts)
	sysv := map[hostns.FileID]SysV{
		podNS: {Segments: 1, Bytes: 1 << 20, MaxBytes: 64 << 20, MaxSegmentBytes: 64 << 20, MaxSegments: 4096},
		ctrNS: {MaxBytes: 32 << 20, MaxSegmentBytes: 32 << 20, MaxSegments: 4096},
	}
	us := Usages(facts, recs, sysv)
	var lines []string
	for _, u := range us {
		lines = append(lines, UsageLine(u))
	}
	want := []string{
		"host: IpcNamespace=1 ShmSize=host:1Gi ShmUsed=5Mi SysvSegments=- Containers=1",
		"default/db: IpcNamespace=200 ShmSize=32Mi ShmUsed=0 SysvSegments=0 SysvBytes=0 SysvMax=32Mi SysvSegmentMax=32Mi SysvSegmentsMax=4096 Containers=1",
		"default/link: IpcNamespace=300 ShmSize=unknown SysvSegments=- Containers=1",
		"k8s.io/sb: IpcNamespace=100 ShmSize=64Mi ShmUsed=60Mi SysvSegments=1 SysvBytes=1Mi SysvMax=64Mi SysvSegmentMax=64Mi SysvSegmentsMax=4096 Containers=3 Pod=team-x/train",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if got := us[3].Containers; !slices.Equal(got, []string{"k8s.io/a", "k8s.io/b", "k8s.io/sb"}) {
		t.Errorf("pod's containers %q", got)
	}
	if got := UsageInPodNamespace(us, "team-x"); len(got) != 1 || got[0].Owner.ID != "sb" {
		t.Errorf("UsageInPodNamespace = %+v", got)
	}

	var buf bytes.Buffer
	if err := WritePrometheus(&buf, Outcome{Records: recs, Usage: us, End: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	mfs := parse(t, buf.String())
	sbLabels := "namespace=k8s.io,id=sb,pod_namespace=team-x,pod=train,container=,kind=sandbox,runtime=io.containerd.nsiso.v1,source=kernel"
	dbLabels := "namespace=default,id=db,runtime=io.containerd.nsiso.v1,source=kernel"
	linkLabels := "namespace=default,id=link,runtime=io.containerd.nsiso.v1,source=kernel"
	for name, w := range map[string][]string{
		"nsiso_audit_shm_size_bytes":               {"{" + sbLabels + "} 67108864", "{" + dbLabels + "} 33554432"},
		"nsiso_audit_shm_used_bytes":               {"{" + sbLabels + "} 62914560", "{" + dbLabels + "} 0"},
		"nsiso_audit_sysv_shm_segments":            {"{" + sbLabels + "} 1", "{" + dbLabels + "} 0"},
		"nsiso_audit_sysv_shm_bytes":               {"{" + sbLabels + "} 1048576", "{" + dbLabels + "} 0"},
		"nsiso_audit_sysv_shm_limit_bytes":         {"{" + sbLabels + "} 67108864", "{" + dbLabels + "} 33554432"},
		"nsiso_audit_sysv_shm_segment_limit_bytes": {"{" + sbLabels + "} 67108864", "{" + dbLabels + "} 33554432"},
		"nsiso_audit_sysv_shm_segments_limit":      {"{" + sbLabels + "} 4096", "{" + dbLabels + "} 4096"},
		"nsiso_audit_ipc_namespace_containers":     {"{" + sbLabels + "} 3", "{" + dbLabels + "} 1", "{" + linkLabels + "} 1"},
	} {
		mf, ok := mfs[name]
		if !ok {
			t.Errorf("family %s missing", name)
			continue
		}
		var ws []string
		for _, x := range w {
			ws = append(ws, canon(name+x))
		}
		slices.Sort(ws)
		if got := series(mf); !slices.Equal(got, ws) {
			t.Errorf("%s:\n got %q\nwant %q", name, got, ws)
		}
	}
}
