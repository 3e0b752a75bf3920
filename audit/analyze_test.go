package audit

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/nsiso/nsiso/hostns"
)

// nsfs numbers every namespace on one device; only inodes differ.
const nsfsDev = 4

func nsID(ino uint64) hostns.FileID { return hostns.FileID{Dev: nsfsDev, Ino: ino} }

var fakeHost = Host{IPC: nsID(1), PID: nsID(2), Shm: hostns.FileID{Dev: 100, Ino: 1}, HasShm: true}

// ctr is a live container in namespace "default" with its own namespaces
// (inodes derived from n) and its own 64Mi /dev/shm; edits adjust it.
func ctr(id string, n uint64, edits ...func(*Facts)) Facts {
	f := Facts{
		Namespace: "default", ID: id, Runtime: "io.containerd.runc.v2", Status: "running", Live: true,
		Pid: uint32(1000 + n), IPC: nsID(100 + n), PID: nsID(200 + n), InnerPid: 1, StartTime: 1000 * n,
		HasShm: true, ShmDev: 300 + n, ShmSize: 64 << 20,
		SpecCreatesIPC: true, SpecCreatesPID: true,
	}
	for _, e := range edits {
		e(&f)
	}
	return f
}

func inNS(ns string) func(*Facts) { return func(f *Facts) { f.Namespace = ns } }

// joins puts the container into ipc and/or pid namespace of container n,
// as a child that names its parent does: not pid 1, spec not creating.
func joinsIPC(n uint64) func(*Facts) {
	return func(f *Facts) { f.IPC, f.SpecCreatesIPC = nsID(100+n), false }
}

func joinsPID(n uint64) func(*Facts) {
	return func(f *Facts) { f.PID, f.InnerPid, f.SpecCreatesPID = nsID(200+n), 7, false }
}

func sharesShm(n uint64, size int64) func(*Facts) {
	return func(f *Facts) { f.ShmDev, f.ShmSize = 300+n, size }
}

// set marks an edit written in place, so that a fact list reads as a list.
func set(edit func(*Facts)) func(*Facts) { return edit }

// summary is what a test asserts of a record: the text line and the JSON
// shm source.
func summary(r Record) string { return Line(r) + " src=" + r.ShmSource }

func TestAnalyzeOwners(t *testing.T) {
	const rt = "Runtime=io.containerd.runc.v2"
	for _, tc := range []struct {
		name  string
		facts []Facts
		want  []string
	}{{
		name:  "alone is private",
		facts: []Facts{ctr("a", 1)},
		want:  []string{"default/a: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own"},
	}, {
		name: "host IPC, host /dev/shm, host PID",
		facts: []Facts{ctr("h", 1, set(func(f *Facts) {
			f.IPC, f.PID, f.ShmDev, f.InnerPid = fakeHost.IPC, fakeHost.PID, fakeHost.Shm.Dev, 4242
		}))},
		want: []string{"default/h: IpcMode=host PidMode=host ShmSize=host " + rt + " src=host"},
	}, {
		name: "share-parent child names its parent, which is private",
		facts: []Facts{
			ctr("parent", 1, sharesShm(1, 128<<20)),
			ctr("child", 2, joinsIPC(1), joinsPID(1), sharesShm(1, 128<<20)),
		},
		want: []string{
			"default/child: IpcMode=container:parent PidMode=container:parent ShmSize=128Mi " + rt + " src=container:parent",
			"default/parent: IpcMode=private PidMode=private ShmSize=128Mi " + rt + " src=own",
		},
	}, {
		name: "every member names the same owner",
		facts: []Facts{
			ctr("c", 3, joinsIPC(2)),
			ctr("b", 2),
			ctr("d", 4, joinsIPC(2)),
			ctr("a", 1, joinsIPC(2)),
		},
		want: []string{
			"default/a: IpcMode=container:b PidMode=private ShmSize=64Mi " + rt + " src=own",
			"default/b: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
			"default/c: IpcMode=container:b PidMode=private ShmSize=64Mi " + rt + " src=own",
			"default/d: IpcMode=container:b PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		// pid 1 created the namespace, whatever the specs and start
		// times say (a spec may have been rewritten by the runtime).
		name: "PID owner is the namespace's pid 1 before spec and start time",
		facts: []Facts{
			ctr("early", 1, joinsPID(2), set(func(f *Facts) { f.SpecCreatesPID = true })),
			ctr("init", 2, set(func(f *Facts) { f.SpecCreatesPID = false })),
		},
		want: []string{
			"default/early: IpcMode=private PidMode=container:init ShmSize=64Mi " + rt + " src=own",
			"default/init: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		name: "PID owner by spec when no member is pid 1",
		facts: []Facts{
			ctr("x", 1, joinsPID(9)),
			ctr("y", 2, joinsPID(9), set(func(f *Facts) { f.SpecCreatesPID = true })),
		},
		want: []string{
			"default/x: IpcMode=private PidMode=container:y ShmSize=64Mi " + rt + " src=own",
			"default/y: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		name: "IPC owner by spec before start time",
		facts: []Facts{
			ctr("joiner", 1, joinsIPC(2)),
			ctr("creator", 2),
		},
		want: []string{
			"default/creator: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
			"default/joiner: IpcMode=container:creator PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		name: "several spec creators: the earliest started",
		facts: []Facts{
			ctr("late", 5, joinsIPC(1), set(func(f *Facts) { f.SpecCreatesIPC = true })),
			ctr("first", 3, joinsIPC(1), set(func(f *Facts) { f.SpecCreatesIPC = true })),
			ctr("kid", 1, joinsIPC(1)),
		},
		want: []string{
			"default/first: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
			"default/kid: IpcMode=container:first PidMode=private ShmSize=64Mi " + rt + " src=own",
			"default/late: IpcMode=container:first PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		name: "no creator: the earliest started, then the lowest ID",
		facts: []Facts{
			ctr("m", 2, joinsIPC(9)),
			ctr("z", 1, joinsIPC(9), set(func(f *Facts) { f.StartTime = 500 })),
			ctr("b", 3, joinsIPC(9), set(func(f *Facts) { f.StartTime = 500 })),
		},
		want: []string{
			"default/b: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
			"default/m: IpcMode=container:b PidMode=private ShmSize=64Mi " + rt + " src=own",
			"default/z: IpcMode=container:b PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		name: "owner in another containerd namespace is named with it",
		facts: []Facts{
			ctr("sandbox", 1, inNS("k8s.io")),
			ctr("app", 2, joinsIPC(1), sharesShm(1, 64<<20)),
			ctr("peer", 3, inNS("k8s.io"), joinsIPC(1)),
		},
		want: []string{
			"default/app: IpcMode=container:k8s.io/sandbox PidMode=private ShmSize=64Mi " + rt + " src=container:k8s.io/sandbox",
			"k8s.io/peer: IpcMode=container:sandbox PidMode=private ShmSize=64Mi " + rt + " src=own",
			"k8s.io/sandbox: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		name: "stopped containers neither show nor count as sharers",
		facts: []Facts{
			ctr("gone", 1, set(func(f *Facts) { f.Live, f.Status, f.SpecCreatesIPC = false, "stopped", true })),
			ctr("kid", 2, joinsIPC(1)),
		},
		want: []string{
			"default/gone: IpcMode=stopped PidMode=stopped ShmSize=- " + rt + " src=",
			"default/kid: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		name: "unset-mode child: parent's IPC namespace, own /dev/shm",
		facts: []Facts{
			ctr("runcp", 1),
			ctr("kid", 2, joinsIPC(1), set(func(f *Facts) { f.ShmSize = 96 << 20 })),
		},
		want: []string{
			"default/kid: IpcMode=container:runcp PidMode=private ShmSize=96Mi " + rt + " src=own",
			"default/runcp: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		name: "a shared /dev/shm belongs to the IPC namespace's owner",
		facts: []Facts{
			ctr("a-kid", 1, joinsIPC(2), sharesShm(2, 1<<30)),
			ctr("b-parent", 2, sharesShm(2, 1<<30)),
		},
		want: []string{
			"default/a-kid: IpcMode=container:b-parent PidMode=private ShmSize=1Gi " + rt + " src=container:b-parent",
			"default/b-parent: IpcMode=private PidMode=private ShmSize=1Gi " + rt + " src=own",
		},
	}, {
		name:  "no /dev/shm",
		facts: []Facts{ctr("bare", 1, set(func(f *Facts) { f.HasShm, f.ShmSize = false, 0 }))},
		want:  []string{"default/bare: IpcMode=private PidMode=private ShmSize=none " + rt + " src=none"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			// The verdict must not depend on the order containerd lists
			// containers in.
			for range 5 {
				in := slices.Clone(tc.facts)
				rand.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
				var got []string
				for _, r := range Analyze(fakeHost, in) {
					got = append(got, summary(r))
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
				}
			}
		})
	}
}

func TestAnalyzeJSONFields(t *testing.T) {
	recs := Analyze(fakeHost, []Facts{
		ctr("p", 1),
		ctr("k", 2, joinsIPC(1), joinsPID(1), sharesShm(1, 64<<20)),
		ctr("s", 3, set(func(f *Facts) { f.Live, f.Status = false, "created" })),
	})
	got := fmt.Sprintf("%+v", recs)
	want := "[" +
		"{Namespace:default ID:k IPCMode:container:p PIDMode:container:p ShmSize:67108864 ShmSource:container:p Runtime:io.containerd.runc.v2 Pid:1002 IPCNamespace:101 PIDNamespace:201 Status:running} " +
		"{Namespace:default ID:p IPCMode:private PIDMode:private ShmSize:67108864 ShmSource:own Runtime:io.containerd.runc.v2 Pid:1001 IPCNamespace:101 PIDNamespace:201 Status:running} " +
		"{Namespace:default ID:s IPCMode:stopped PIDMode:stopped ShmSize:0 ShmSource: Runtime:io.containerd.runc.v2 Pid:0 IPCNamespace:0 PIDNamespace:0 Status:created}" +
		"]"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestOwnerName(t *testing.T) {
	for _, tc := range []struct{ from, ns, id, want string }{
		{"default", "default", "web", "container:web"},
		{"default", "k8s.io", "abc", "container:k8s.io/abc"},
		{"", "", "x", "container:x"},
	} {
		if got := OwnerName(tc.from, tc.ns, tc.id); got != tc.want {
			t.Errorf("OwnerName(%q, %q, %q) = %q, want %q", tc.from, tc.ns, tc.id, got, tc.want)
		}
	}
}
