package audit

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestLine(t *testing.T) {
	for _, tc := range []struct {
		r    Record
		want string
	}{
		{Record{Namespace: "default", ID: "web", IPCMode: "private", PIDMode: "private", ShmSize: 64 << 20, ShmSource: ShmOwn, Runtime: "io.containerd.nsiso.v1"},
			"default/web: IpcMode=private PidMode=private ShmSize=64Mi Runtime=io.containerd.nsiso.v1"},
		{Record{Namespace: "default", ID: "kid", IPCMode: "container:web", PIDMode: "container:web", ShmSize: 64 << 20, ShmSource: "container:web", Runtime: "io.containerd.nsiso.v1"},
			"default/kid: IpcMode=container:web PidMode=container:web ShmSize=64Mi Runtime=io.containerd.nsiso.v1"},
		{Record{Namespace: "k8s.io", ID: "x", IPCMode: "host", PIDMode: "host", ShmSource: ShmHost, Runtime: "io.containerd.runc.v2"},
			"k8s.io/x: IpcMode=host PidMode=host ShmSize=host Runtime=io.containerd.runc.v2"},
		{Record{Namespace: "default", ID: "old", IPCMode: "private", PIDMode: "private", ShmSource: ShmOwn, Runtime: "io.containerd.runc.v2", Source: SourceSpec},
			"default/old: IpcMode=private PidMode=private ShmSize=- Runtime=io.containerd.runc.v2 (from spec)"},
		{Record{Namespace: "default", ID: "hostold", IPCMode: "host", PIDMode: "host", ShmSource: ShmHost, Runtime: "r", Source: SourceSpec},
			"default/hostold: IpcMode=host PidMode=host ShmSize=host Runtime=r (from spec)"},
		{Record{Namespace: "default", ID: "bareold", IPCMode: "unknown", PIDMode: "unknown", ShmSource: ShmNone, Runtime: "r", Source: SourceSpec},
			"default/bareold: IpcMode=unknown PidMode=unknown ShmSize=none Runtime=r (from spec)"},
		{Record{Namespace: "k8s.io", ID: "0f57", IPCMode: "host", PIDMode: "private", ShmSource: ShmHost, Runtime: "r", Source: SourceKernel,
			PodNamespace: "team-x", PodName: "hostipc-pod", Sandbox: true},
			"k8s.io/0f57: IpcMode=host PidMode=private ShmSize=host Runtime=r Pod=team-x/hostipc-pod Container=(sandbox)"},
		{Record{Namespace: "k8s.io", ID: "9a1c", IPCMode: "host", PIDMode: "private", ShmSource: ShmHost, Runtime: "r", Source: SourceSpec,
			PodNamespace: "team-x", PodName: "hostipc-pod", ContainerName: "app"},
			"k8s.io/9a1c: IpcMode=host PidMode=private ShmSize=host Runtime=r Pod=team-x/hostipc-pod Container=app (from spec)"},
		{Record{Namespace: "evil", ID: "fake", IPCMode: "host", PIDMode: "private", ShmSource: ShmHost, Runtime: "r",
			ClaimedPodNamespace: "team-b", ClaimedPodName: "web", ClaimedContainerName: "app"},
			"evil/fake: IpcMode=host PidMode=private ShmSize=host Runtime=r ClaimedPod=team-b/web ClaimedContainer=app"},
		{Record{Namespace: "k8s.io", ID: "fsb", IPCMode: "host", PIDMode: "private", ShmSource: ShmHost, Runtime: "r", Source: SourceSpec,
			ClaimedPodNamespace: "team-b", ClaimedPodName: "web", ClaimedSandbox: true},
			"k8s.io/fsb: IpcMode=host PidMode=private ShmSize=host Runtime=r ClaimedPod=team-b/web ClaimedContainer=(sandbox) (from spec)"},
		{Record{Namespace: "evil", ID: "nl", IPCMode: "private", PIDMode: "private", ShmSource: ShmOwn, ShmSize: 64 << 20, Runtime: "r\nevil/x: IpcMode=private",
			ClaimedPodNamespace: "team b", ClaimedPodName: "a/b", ClaimedContainerName: "(sandbox)"},
			`evil/nl: IpcMode=private PidMode=private ShmSize=64Mi Runtime="r\nevil/x: IpcMode=private" ClaimedPod="team b"/"a/b" ClaimedContainer="(sandbox)"`},
		{Record{Namespace: "default", ID: "bare", IPCMode: "private", PIDMode: "private", ShmSource: ShmNone, Runtime: "r"},
			"default/bare: IpcMode=private PidMode=private ShmSize=none Runtime=r"},
		{Record{Namespace: "default", ID: "odd", IPCMode: "private", PIDMode: "private", ShmSize: 1536 << 10, ShmSource: ShmOwn, Runtime: "r"},
			"default/odd: IpcMode=private PidMode=private ShmSize=1536Ki Runtime=r"},
		{Record{Namespace: "default", ID: "half", IPCMode: "private", PIDMode: "private", ShmSize: 4063232 * 1024, ShmSource: ShmOwn, Runtime: "r"},
			"default/half: IpcMode=private PidMode=private ShmSize=3968Mi Runtime=r"},
	} {
		if got := Line(tc.r); got != tc.want {
			t.Errorf("Line:\n got %s\nwant %s", got, tc.want)
		}
	}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	recs := []Record{
		{Namespace: "a", ID: "1", IPCMode: "private", PIDMode: "private", ShmSize: 1 << 20, ShmSource: ShmOwn, Runtime: "r"},
		{Namespace: "a", ID: "2", IPCMode: "container:1", PIDMode: ModePrivate, ShmSource: "container:1", Runtime: "r", Source: SourceSpec},
	}
	if err := WriteText(&b, recs); err != nil {
		t.Fatal(err)
	}
	want := "a/1: IpcMode=private PidMode=private ShmSize=1Mi Runtime=r\na/2: IpcMode=container:1 PidMode=private ShmSize=- Runtime=r (from spec)\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

// The JSON field names are an interface: scripts read them.
func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, nil); err != nil || strings.TrimSpace(b.String()) != "[]" {
		t.Errorf("no records: %q, %v; want []", b.String(), err)
	}
	b.Reset()
	r := Record{Namespace: "n", ID: "i", IPCMode: "container:o", PIDMode: "private", ShmSize: 5, ShmSource: "container:o",
		Runtime: "rt", Pid: 7, IPCNamespace: 8, PIDNamespace: 9, Status: "running", Source: "kernel",
		PodNamespace: "team-x", PodName: "web-0", ContainerName: "app", Sandbox: false,
		ClaimedPodNamespace: "team-y", ClaimedPodName: "fake", ClaimedContainerName: "sb", ClaimedSandbox: true}
	if err := WriteJSON(&b, []Record{r}); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"namespace": "n", "id": "i", "ipcMode": "container:o", "pidMode": "private", "shmSize": 5.0,
		"shmSource": "container:o", "runtime": "rt", "pid": 7.0, "ipcNamespace": 8.0, "pidNamespace": 9.0, "status": "running",
		"source": "kernel", "podNamespace": "team-x", "podName": "web-0", "containerName": "app", "sandbox": false,
		"claimedPodNamespace": "team-y", "claimedPodName": "fake", "claimedContainerName": "sb", "claimedSandbox": true,
	}
	if len(got) != 1 || len(got[0]) != len(want) {
		t.Fatalf("got %v, want one object with the fields of %v", got, want)
	}
	for k, v := range want {
		if got[0][k] != v {
			t.Errorf("field %q = %v, want %v", k, got[0][k], v)
		}
	}
}

func TestFindingsAndExitStatus(t *testing.T) {
	rec := func(id, ipc, pid, shm string) Record {
		return Record{Namespace: "default", ID: id, IPCMode: ipc, PIDMode: pid, ShmSource: shm, Source: SourceKernel}
	}
	fromSpec := func(r Record) Record { r.Source = SourceSpec; return r }
	inPod := func(r Record, ns, pod, ctr string) Record {
		r.Namespace, r.PodNamespace, r.PodName, r.ContainerName, r.Sandbox = "k8s.io", ns, pod, ctr, ctr == ""
		return r
	}
	claim := func(r Record, ns, pod, ctr string) Record {
		r.ClaimedPodNamespace, r.ClaimedPodName, r.ClaimedContainerName, r.ClaimedSandbox = ns, pod, ctr, ctr == ""
		return r
	}
	for _, tc := range []struct {
		name     string
		recs     []Record
		checkPID bool
		want     []string
		status   int
	}{
		{"nobody shares", []Record{rec("a", "private", "private", ShmOwn), rec("b", "container:a", "container:a", "container:a")}, true,
			nil, ExitCompliant},
		{"no containers", nil, true, nil, ExitCompliant},
		{"a spec that shares nothing", []Record{fromSpec(rec("s", "private", "private", ShmOwn))}, true, nil, ExitCompliant},
		{"unknown does not offend", []Record{fromSpec(rec("u", ModeUnknown, ModeUnknown, ShmUnknown))}, true, nil, ExitCompliant},
		{"a spec that shares offends", []Record{fromSpec(rec("s", "host", "host", ShmHost))}, true,
			[]string{"default/s has no running task; its spec shares the host's IPC namespace and /dev/shm (CIS Docker Benchmark 5.16) and the host's PID namespace (CIS Docker Benchmark 5.15)"}, ExitNonCompliant},
		{"pod sandbox and container are named", []Record{
			inPod(rec("sb", "host", "private", ShmHost), "team-x", "hostipc-pod", ""),
			fromSpec(inPod(rec("c", "host", "private", ShmHost), "team-x", "hostipc-pod", "app")),
			inPod(rec("ok", "private", "private", ShmOwn), "team-x", "hostipc-pod", "ok")}, false,
			[]string{
				"k8s.io/sb (pod team-x/hostipc-pod, sandbox) shares the host's IPC namespace and /dev/shm (CIS Docker Benchmark 5.16)",
				"k8s.io/c (pod team-x/hostipc-pod, container app) has no running task; its spec shares the host's IPC namespace and /dev/shm (CIS Docker Benchmark 5.16)",
			}, ExitNonCompliant},
		{"a claimed pod is named as a claim", []Record{
			claim(rec("fake", "host", "private", ShmOwn), "team-b", "web", "app\x1b[2J"),
			claim(rec("fsb", "host", "private", ShmOwn), "team-b", "web", "")}, false,
			[]string{
				`default/fake (claimed pod team-b/web, container "app\x1b[2J") shares the host's IPC namespace (CIS Docker Benchmark 5.16)`,
				"default/fsb (claimed pod team-b/web, sandbox) shares the host's IPC namespace (CIS Docker Benchmark 5.16)",
			}, ExitNonCompliant},
		{"host IPC", []Record{rec("x", "host", "private", ShmOwn)}, false,
			[]string{"default/x shares the host's IPC namespace (CIS Docker Benchmark 5.16)"}, ExitNonCompliant},
		{"host IPC and /dev/shm", []Record{rec("x", "host", "private", ShmHost)}, false,
			[]string{"default/x shares the host's IPC namespace and /dev/shm (CIS Docker Benchmark 5.16)"}, ExitNonCompliant},
		{"host /dev/shm alone", []Record{rec("x", "private", "private", ShmHost)}, false,
			[]string{"default/x shares the host's /dev/shm (CIS Docker Benchmark 5.16)"}, ExitNonCompliant},
		{"host PID without --pid passes", []Record{rec("p", "private", "host", ShmOwn)}, false, nil, ExitCompliant},
		{"host PID with --pid fails", []Record{rec("p", "private", "host", ShmOwn)}, true,
			[]string{"default/p shares the host's PID namespace (CIS Docker Benchmark 5.15)"}, ExitNonCompliant},
		{"everything, one line", []Record{rec("all", "host", "host", ShmHost)}, true,
			[]string{"default/all shares the host's IPC namespace and /dev/shm (CIS Docker Benchmark 5.16) and the host's PID namespace (CIS Docker Benchmark 5.15)"}, ExitNonCompliant},
		{"one line per offender, in order", []Record{rec("a", "host", "private", ShmHost), rec("b", "private", "private", ShmOwn), rec("c", "host", "private", ShmOwn)}, false,
			[]string{"default/a shares the host's IPC namespace and /dev/shm (CIS Docker Benchmark 5.16)", "default/c shares the host's IPC namespace (CIS Docker Benchmark 5.16)"}, ExitNonCompliant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := Findings(tc.recs, tc.checkPID)
			var got []string
			for _, f := range fs {
				got = append(got, f.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("findings:\n got %q\nwant %q", got, tc.want)
			}
			if s := ExitStatus(fs); s != tc.status {
				t.Errorf("exit status %d, want %d", s, tc.status)
			}
		})
	}
}

func TestNotCounted(t *testing.T) {
	r := Record{Namespace: "k8s.io", ID: "fake", ClaimedPodNamespace: "team-b", ClaimedPodName: "web\n", ClaimedContainerName: "app"}
	want := `k8s.io/fake (claimed pod team-b/"web\n", container app) is not counted: containerd's CRI plugin did not make it`
	if got := NotCounted(r); got != want {
		t.Errorf("NotCounted = %s, want %s", got, want)
	}
}
