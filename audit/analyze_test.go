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
		name: "containers without a live task never own a namespace",
		facts: []Facts{
			stopped("gone", newSpec(), set(func(f *Facts) { f.SpecCreatesIPC = true })),
			ctr("kid", 2, joinsIPC(1)),
		},
		want: []string{
			"default/gone: IpcMode=private PidMode=private ShmSize=- " + rt + " (from spec) src=own",
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

// stopped is a container in namespace "default" without a live task,
// whose spec asks for sf.
func stopped(id string, sf SpecFacts, edits ...func(*Facts)) Facts {
	f := Facts{Namespace: "default", ID: id, Runtime: "io.containerd.runc.v2", Status: StatusNoTask, Spec: &sf}
	for _, e := range edits {
		e(&f)
	}
	return f
}

// newSpec asks for new IPC and PID namespaces and a tmpfs, as containerd's
// default spec does; edits adjust it.
func newSpec(edits ...func(*SpecFacts)) SpecFacts {
	sf := SpecFacts{IPC: SpecNS{Kind: SpecNew}, PID: SpecNS{Kind: SpecNew}, Shm: SpecShm{Kind: ShmSpecTmpfs}}
	for _, e := range edits {
		e(&sf)
	}
	return sf
}

// ipcPath makes the spec's IPC entry a path that names id now; a zero id
// names nothing.
func ipcPath(id hostns.FileID) func(*SpecFacts) {
	return func(sf *SpecFacts) {
		sf.IPC = SpecNS{Kind: SpecPath, Path: "/proc/99/ns/ipc", ID: id, Resolved: id != hostns.FileID{}}
	}
}

func shmBind(dev uint64) func(*SpecFacts) {
	return func(sf *SpecFacts) {
		sf.Shm = SpecShm{Kind: ShmSpecBind, Source: "/run/x/shm", Dev: dev, Resolved: dev != 0}
	}
}

func withParent(id string) func(*SpecFacts) { return func(sf *SpecFacts) { sf.Parent = id } }

// What a container without a live task asks for, named against the live
// containers, as starting it would make it.
func TestAnalyzeSpecs(t *testing.T) {
	const rt = "Runtime=io.containerd.runc.v2"
	hostIPC := func(sf *SpecFacts) { sf.IPC = SpecNS{Kind: SpecHost} }
	hostPID := func(sf *SpecFacts) { sf.PID = SpecNS{Kind: SpecHost} }
	hostShm := func(sf *SpecFacts) { sf.Shm = SpecShm{Kind: ShmSpecHost, Source: "/dev/shm"} }
	for _, tc := range []struct {
		name  string
		facts []Facts
		want  []string
	}{{
		name:  "no spec",
		facts: []Facts{{Namespace: "default", ID: "x", Runtime: "io.containerd.runc.v2", Status: StatusNoTask}},
		want:  []string{"default/x: IpcMode=unknown PidMode=unknown ShmSize=- " + rt + " (from spec) src=unknown"},
	}, {
		name:  "private",
		facts: []Facts{stopped("p", newSpec())},
		want:  []string{"default/p: IpcMode=private PidMode=private ShmSize=- " + rt + " (from spec) src=own"},
	}, {
		name:  "host by leaving the entries out, host /dev/shm",
		facts: []Facts{stopped("h", newSpec(hostIPC, hostPID, hostShm))},
		want:  []string{"default/h: IpcMode=host PidMode=host ShmSize=host " + rt + " (from spec) src=host"},
	}, {
		name:  "a path that names the host's namespace",
		facts: []Facts{stopped("h", newSpec(ipcPath(fakeHost.IPC)))},
		want:  []string{"default/h: IpcMode=host PidMode=private ShmSize=- " + rt + " (from spec) src=own"},
	}, {
		name:  "a bind whose device is the host's /dev/shm",
		facts: []Facts{stopped("h", newSpec(shmBind(fakeHost.Shm.Dev)))},
		want:  []string{"default/h: IpcMode=private PidMode=private ShmSize=host " + rt + " (from spec) src=host"},
	}, {
		name:  "no /dev/shm",
		facts: []Facts{stopped("n", newSpec(func(sf *SpecFacts) { sf.Shm = SpecShm{Kind: ShmSpecNone} }))},
		want:  []string{"default/n: IpcMode=private PidMode=private ShmSize=none " + rt + " (from spec) src=none"},
	}, {
		name: "a path and a bind that name a live container's: its owner",
		facts: []Facts{
			ctr("owner", 1, sharesShm(1, 64<<20)),
			ctr("member", 2, joinsIPC(1), sharesShm(1, 64<<20)),
			stopped("late", newSpec(ipcPath(nsID(101)), shmBind(301))),
		},
		want: []string{
			"default/late: IpcMode=container:owner PidMode=private ShmSize=- " + rt + " (from spec) src=container:owner",
			"default/member: IpcMode=container:owner PidMode=private ShmSize=64Mi " + rt + " src=container:owner",
			"default/owner: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		name: "a live container alone is the owner, across containerd namespaces",
		facts: []Facts{
			ctr("solo", 1, inNS("k8s.io")),
			stopped("late", newSpec(ipcPath(nsID(101)))),
		},
		want: []string{
			"default/late: IpcMode=container:k8s.io/solo PidMode=private ShmSize=- " + rt + " (from spec) src=own",
			"k8s.io/solo: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		name:  "a path that names nothing now",
		facts: []Facts{stopped("u", newSpec(ipcPath(hostns.FileID{}), shmBind(0)))},
		want:  []string{"default/u: IpcMode=unknown PidMode=private ShmSize=- " + rt + " (from spec) src=unknown"},
	}, {
		name:  "a path that names some other process's namespace",
		facts: []Facts{stopped("o", newSpec(ipcPath(nsID(777)), shmBind(900)))},
		want:  []string{"default/o: IpcMode=private PidMode=private ShmSize=- " + rt + " (from spec) src=own"},
	}, {
		// The sandbox's pid may have gone to a host process: the path
		// would name the host's namespace, but the spec asked for the
		// sandbox's.
		name: "a pod container's stale path to its stopped sandbox",
		facts: []Facts{
			stopped("app", newSpec(ipcPath(fakeHost.IPC), shmBind(0), withParent("sb"))),
			stopped("sb", newSpec()),
		},
		want: []string{
			"default/app: IpcMode=container:sb PidMode=private ShmSize=- " + rt + " (from spec) src=container:sb",
			"default/sb: IpcMode=private PidMode=private ShmSize=- " + rt + " (from spec) src=own",
		},
	}, {
		name: "a pod container's path to its running sandbox is checked",
		facts: []Facts{
			stopped("app", newSpec(ipcPath(nsID(101)), shmBind(301), withParent("sb"))),
			ctr("sb", 1),
		},
		want: []string{
			"default/app: IpcMode=container:sb PidMode=private ShmSize=- " + rt + " (from spec) src=container:sb",
			"default/sb: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
		},
	}, {
		name:  "a stale parent does not hide the host's /dev/shm",
		facts: []Facts{stopped("app", newSpec(shmBind(fakeHost.Shm.Dev), withParent("sb")))},
		want:  []string{"default/app: IpcMode=private PidMode=private ShmSize=host " + rt + " (from spec) src=host"},
	}, {
		name: "nsiso joins the parent",
		facts: []Facts{stopped("kid", newSpec(withParent("p"), func(sf *SpecFacts) {
			sf.IPC, sf.PID, sf.Shm = SpecNS{Kind: SpecParent}, SpecNS{Kind: SpecParent}, SpecShm{Kind: ShmSpecParent}
		}))},
		want: []string{"default/kid: IpcMode=container:p PidMode=container:p ShmSize=- " + rt + " (from spec) src=container:p"},
	}, {
		// A hostIPC pod's containers join the sandbox by path too; with
		// the sandbox stopped they read as what the sandbox's spec asks.
		name: "a stopped sandbox's host namespace and /dev/shm carry over",
		facts: []Facts{
			stopped("app", newSpec(ipcPath(nsID(555)), shmBind(0), withParent("sb"))),
			stopped("sb", newSpec(hostIPC, hostShm)),
		},
		want: []string{
			"default/app: IpcMode=host PidMode=private ShmSize=host " + rt + " (from spec) src=host",
			"default/sb: IpcMode=host PidMode=private ShmSize=host " + rt + " (from spec) src=host",
		},
	}, {
		name: "joining a live parent is joining whatever it is in",
		facts: []Facts{
			ctr("owner", 1),
			ctr("p", 2, joinsIPC(1), set(func(f *Facts) { f.PID, f.ShmDev = fakeHost.PID, fakeHost.Shm.Dev })),
			stopped("kid", newSpec(withParent("p"), func(sf *SpecFacts) {
				sf.IPC, sf.PID, sf.Shm = SpecNS{Kind: SpecParent}, SpecNS{Kind: SpecParent}, SpecShm{Kind: ShmSpecParent}
			})),
		},
		want: []string{
			"default/kid: IpcMode=container:owner PidMode=host ShmSize=host " + rt + " (from spec) src=host",
			"default/owner: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " src=own",
			"default/p: IpcMode=container:owner PidMode=host ShmSize=host " + rt + " src=host",
		},
	}, {
		name: "parents that name each other, or nobody",
		facts: []Facts{
			stopped("a", newSpec(withParent("b"), func(sf *SpecFacts) { sf.IPC = SpecNS{Kind: SpecParent} })),
			stopped("b", newSpec(withParent("a"), func(sf *SpecFacts) { sf.IPC = SpecNS{Kind: SpecParent} })),
			stopped("c", newSpec(withParent("gone"), func(sf *SpecFacts) { sf.IPC = SpecNS{Kind: SpecParent} })),
		},
		want: []string{
			"default/a: IpcMode=container:b PidMode=private ShmSize=- " + rt + " (from spec) src=own",
			"default/b: IpcMode=container:a PidMode=private ShmSize=- " + rt + " (from spec) src=own",
			"default/c: IpcMode=container:gone PidMode=private ShmSize=- " + rt + " (from spec) src=own",
		},
	}, {
		name: "pod names come along",
		facts: []Facts{
			stopped("sb", newSpec(hostIPC, hostShm), set(func(f *Facts) {
				f.Pod = Pod{Namespace: "team-x", Name: "hostipc-pod", Kind: KindSandbox}
			})),
			ctr("c", 1, set(func(f *Facts) {
				f.Pod = Pod{Namespace: "team-x", Name: "hostipc-pod", Container: "app", Kind: KindContainer}
			})),
		},
		want: []string{
			"default/c: IpcMode=private PidMode=private ShmSize=64Mi " + rt + " Pod=team-x/hostipc-pod Container=app src=own",
			"default/sb: IpcMode=host PidMode=private ShmSize=host " + rt + " Pod=team-x/hostipc-pod Container=(sandbox) (from spec) src=host",
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range Analyze(fakeHost, tc.facts) {
				got = append(got, summary(r))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestAnalyzeJSONFields(t *testing.T) {
	recs := Analyze(fakeHost, []Facts{
		ctr("p", 1, set(func(f *Facts) { f.Pod = Pod{Namespace: "team-x", Name: "web", Kind: KindSandbox} })),
		ctr("k", 2, joinsIPC(1), joinsPID(1), sharesShm(1, 64<<20),
			set(func(f *Facts) { f.Pod = Pod{Namespace: "team-x", Name: "web", Container: "app", Kind: KindContainer} })),
		stopped("s", newSpec(), set(func(f *Facts) {
			f.Status = "created"
			f.Claim = Pod{Namespace: "team-y", Name: "fake", Container: "app", Kind: KindContainer}
		})),
	})
	got := fmt.Sprintf("%+v", recs)
	want := "[" +
		"{Namespace:default ID:k IPCMode:container:p PIDMode:container:p ShmSize:67108864 ShmSource:container:p Runtime:io.containerd.runc.v2 Pid:1002 IPCNamespace:101 PIDNamespace:201 Status:running " +
		"Source:kernel PodNamespace:team-x PodName:web ContainerName:app Sandbox:false " +
		"ClaimedPodNamespace: ClaimedPodName: ClaimedContainerName: ClaimedSandbox:false} " +
		"{Namespace:default ID:p IPCMode:private PIDMode:private ShmSize:67108864 ShmSource:own Runtime:io.containerd.runc.v2 Pid:1001 IPCNamespace:101 PIDNamespace:201 Status:running " +
		"Source:kernel PodNamespace:team-x PodName:web ContainerName: Sandbox:true " +
		"ClaimedPodNamespace: ClaimedPodName: ClaimedContainerName: ClaimedSandbox:false} " +
		"{Namespace:default ID:s IPCMode:private PIDMode:private ShmSize:0 ShmSource:own Runtime:io.containerd.runc.v2 Pid:0 IPCNamespace:0 PIDNamespace:0 Status:created " +
		"Source:spec PodNamespace: PodName: ContainerName: Sandbox:false " +
		"ClaimedPodNamespace:team-y ClaimedPodName:fake ClaimedContainerName:app ClaimedSandbox:false}" +
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
