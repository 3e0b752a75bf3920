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
		{Record{Namespace: "default", ID: "old", IPCMode: ModeStopped, PIDMode: ModeStopped, Runtime: "io.containerd.runc.v2"},
			"default/old: IpcMode=stopped PidMode=stopped ShmSize=- Runtime=io.containerd.runc.v2"},
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
		{Namespace: "a", ID: "2", IPCMode: ModeStopped, PIDMode: ModeStopped, Runtime: "r"},
	}
	if err := WriteText(&b, recs); err != nil {
		t.Fatal(err)
	}
	want := "a/1: IpcMode=private PidMode=private ShmSize=1Mi Runtime=r\na/2: IpcMode=stopped PidMode=stopped ShmSize=- Runtime=r\n"
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
		Runtime: "rt", Pid: 7, IPCNamespace: 8, PIDNamespace: 9, Status: "running"}
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
		return Record{Namespace: "default", ID: id, IPCMode: ipc, PIDMode: pid, ShmSource: shm}
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
		{"stopped never offends", []Record{rec("s", ModeStopped, ModeStopped, "")}, true, nil, ExitCompliant},
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
