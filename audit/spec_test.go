package audit

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/shim"
	"github.com/nsiso/nsiso/specmod"
)

func TestNSISORuntimeIsTheShims(t *testing.T) {
	if NSISORuntime != shim.RuntimeName {
		t.Errorf("NSISORuntime = %q, the shim registers %q", NSISORuntime, shim.RuntimeName)
	}
}

// fakeFS names what a few host paths are now; any other path does not
// exist.
var fakeFS = map[string]hostns.FileID{
	"/proc/42/ns/ipc": nsID(142),
	"/proc/42/ns/pid": nsID(242),
	"/dev/shm":        fakeHost.Shm,
	"/run/pod/shm":    {Dev: 500, Ino: 2},
	"/srv/dev/shm":    {Dev: 600, Ino: 2},
}

func TestReadSpec(t *testing.T) {
	ipcNew := specs.LinuxNamespace{Type: specs.IPCNamespace}
	pidNew := specs.LinuxNamespace{Type: specs.PIDNamespace}
	devTmpfs := specs.Mount{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"}
	shmTmpfs := specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"size=65536k"}}
	bind := func(dest, src string, opts ...string) specs.Mount {
		return specs.Mount{Destination: dest, Type: "bind", Source: src, Options: opts}
	}
	// spec is containerd's default shape: its own IPC and PID namespaces
	// and /dev/shm, on a root of its own; edits adjust it.
	spec := func(edits ...func(*specs.Spec)) *specs.Spec {
		s := &specs.Spec{
			Root:   &specs.Root{Path: "rootfs"},
			Mounts: []specs.Mount{devTmpfs, shmTmpfs},
			Linux:  &specs.Linux{Namespaces: []specs.LinuxNamespace{pidNew, ipcNew}},
		}
		for _, e := range edits {
			e(s)
		}
		return s
	}
	ns := func(n ...specs.LinuxNamespace) func(*specs.Spec) {
		return func(s *specs.Spec) { s.Linux.Namespaces = n }
	}
	mounts := func(m ...specs.Mount) func(*specs.Spec) { return func(s *specs.Spec) { s.Mounts = m } }
	ann := func(kv ...string) func(*specs.Spec) {
		return func(s *specs.Spec) {
			s.Annotations = map[string]string{}
			for i := 0; i < len(kv); i += 2 {
				s.Annotations[kv[i]] = kv[i+1]
			}
		}
	}
	podContainer := []string{specmod.AnnotationCRIContainerType, "container", specmod.AnnotationCRISandboxID, "sb"}
	newNS, hostNS := SpecNS{Kind: SpecNew}, SpecNS{Kind: SpecHost}
	tmpfs := SpecShm{Kind: ShmSpecTmpfs}
	const runc, nsiso = "io.containerd.runc.v2", NSISORuntime
	for _, tc := range []struct {
		name    string
		runtime string
		spec    *specs.Spec
		want    SpecFacts
	}{
		{"containerd's default", runc, spec(), SpecFacts{IPC: newNS, PID: newNS, Shm: tmpfs}},
		{"no entries is the host's", runc, spec(ns()), SpecFacts{IPC: hostNS, PID: hostNS, Shm: tmpfs}},
		{"no linux section is the host's", runc, spec(func(s *specs.Spec) { s.Linux = nil }), SpecFacts{IPC: hostNS, PID: hostNS, Shm: tmpfs}},
		{"a path, as it is now", runc, spec(ns(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/42/ns/ipc"}, pidNew)),
			SpecFacts{IPC: SpecNS{Kind: SpecPath, Path: "/proc/42/ns/ipc", ID: nsID(142), Resolved: true}, PID: newNS, Shm: tmpfs}},
		{"a path that names nothing", runc, spec(ns(specs.LinuxNamespace{Type: specs.PIDNamespace, Path: "/proc/7/ns/pid"}, ipcNew)),
			SpecFacts{IPC: newNS, PID: SpecNS{Kind: SpecPath, Path: "/proc/7/ns/pid"}, Shm: tmpfs}},
		{"a relative path is never looked up", runc, spec(ns(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "proc/42/ns/ipc"}, pidNew)),
			SpecFacts{IPC: SpecNS{Kind: SpecPath, Path: "proc/42/ns/ipc"}, PID: newNS, Shm: tmpfs}},
		{"the first entry of a type counts", runc, spec(ns(ipcNew, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/42/ns/ipc"})),
			SpecFacts{IPC: newNS, PID: hostNS, Shm: tmpfs}},

		{"a bind of /dev/shm", runc, spec(mounts(devTmpfs, bind("/dev/shm", "/dev/shm", "rbind"))),
			SpecFacts{IPC: newNS, PID: newNS, Shm: SpecShm{Kind: ShmSpecHost, Source: "/dev/shm"}}},
		{"a bind of /dev/shm/ by type alone", runc, spec(mounts(devTmpfs, specs.Mount{Destination: "/dev/shm/", Type: "bind", Source: "/dev//shm/"})),
			SpecFacts{IPC: newNS, PID: newNS, Shm: SpecShm{Kind: ShmSpecHost, Source: "/dev//shm/"}}},
		{"a bind by option", runc, spec(mounts(devTmpfs, specs.Mount{Destination: "/dev/shm", Type: "none", Source: "/run/pod/shm", Options: []string{"rbind", "ro"}})),
			SpecFacts{IPC: newNS, PID: newNS, Shm: SpecShm{Kind: ShmSpecBind, Source: "/run/pod/shm", Dev: 500, Resolved: true}}},
		{"a bind of a path that is gone", runc, spec(mounts(devTmpfs, bind("/dev/shm", "/run/gone/shm"))),
			SpecFacts{IPC: newNS, PID: newNS, Shm: SpecShm{Kind: ShmSpecBind, Source: "/run/gone/shm"}}},
		{"the last mount on /dev/shm counts", runc, spec(mounts(devTmpfs, bind("/dev/shm", "/dev/shm"), shmTmpfs)),
			SpecFacts{IPC: newNS, PID: newNS, Shm: tmpfs}},
		{"a tmpfs on /dev hides /dev/shm", runc, spec(mounts(shmTmpfs, devTmpfs)),
			SpecFacts{IPC: newNS, PID: newNS, Shm: SpecShm{Kind: ShmSpecNone}}},
		{"a bind of the host's /dev brings its shm", runc, spec(mounts(shmTmpfs, bind("/dev", "/dev", "rbind"))),
			SpecFacts{IPC: newNS, PID: newNS, Shm: SpecShm{Kind: ShmSpecHost, Source: "/dev/shm"}}},
		{"a bind of another /dev", runc, spec(mounts(bind("/dev/", "/srv/dev"))),
			SpecFacts{IPC: newNS, PID: newNS, Shm: SpecShm{Kind: ShmSpecBind, Source: "/srv/dev/shm", Dev: 600, Resolved: true}}},
		{"no /dev/shm on the host's root sees the host's", runc, spec(mounts(devTmpfs), func(s *specs.Spec) { s.Root.Path = "//" }),
			SpecFacts{IPC: newNS, PID: newNS, Shm: SpecShm{Kind: ShmSpecHost}}},
		{"no /dev/shm on a root of its own", runc, spec(mounts(devTmpfs)),
			SpecFacts{IPC: newNS, PID: newNS, Shm: SpecShm{Kind: ShmSpecNone}}},

		{"a pod's container names its sandbox under any runtime", runc,
			spec(ann(podContainer...), ns(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/42/ns/ipc"}, pidNew),
				mounts(devTmpfs, bind("/dev/shm", "/run/pod/shm", "rbind"))),
			SpecFacts{IPC: SpecNS{Kind: SpecPath, Path: "/proc/42/ns/ipc", ID: nsID(142), Resolved: true}, PID: newNS,
				Shm: SpecShm{Kind: ShmSpecBind, Source: "/run/pod/shm", Dev: 500, Resolved: true}, Parent: "sb", ParentIsSandbox: true}},
		{"nsiso annotations mean nothing to runc", runc,
			spec(ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationParent, "p")),
			SpecFacts{IPC: newNS, PID: newNS, Shm: tmpfs}},

		{"nsiso: share-parent at the top is the host's", nsiso,
			spec(ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationPIDMode, "share-parent")),
			SpecFacts{IPC: hostNS, PID: hostNS, Shm: SpecShm{Kind: ShmSpecHost, Source: "/dev/shm"}}},
		{"nsiso: share-parent under a parent", nsiso,
			spec(ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationPIDMode, "share-parent", specmod.AnnotationParent, "p")),
			SpecFacts{IPC: SpecNS{Kind: SpecParent}, PID: SpecNS{Kind: SpecParent}, Shm: SpecShm{Kind: ShmSpecParent}, Parent: "p"}},
		{"nsiso: unset mode under a parent joins its IPC namespace only", nsiso,
			spec(ann(specmod.AnnotationParent, "p")),
			SpecFacts{IPC: SpecNS{Kind: SpecParent}, PID: newNS, Shm: tmpfs, Parent: "p"}},
		{"nsiso: private over a spec without entries", nsiso,
			spec(ns(), mounts(), ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationPIDMode, "private")),
			SpecFacts{IPC: newNS, PID: newNS, Shm: tmpfs}},
		{"nsiso: a refused spec is read as it is", nsiso,
			spec(ns(), ann(specmod.AnnotationIPCMode, "privat")),
			SpecFacts{IPC: hostNS, PID: hostNS, Shm: tmpfs}},
		{"nsiso: a pod's container", nsiso,
			spec(ann(podContainer...), ns(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/42/ns/ipc"}, pidNew),
				mounts(devTmpfs, bind("/dev/shm", "/run/pod/shm", "rbind"))),
			SpecFacts{IPC: SpecNS{Kind: SpecPath, Path: "/proc/42/ns/ipc", ID: nsID(142), Resolved: true}, PID: newNS,
				Shm: SpecShm{Kind: ShmSpecBind, Source: "/run/pod/shm", Dev: 500, Resolved: true}, Parent: "sb", ParentIsSandbox: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := json.Marshal(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			stat := func(p string) (hostns.FileID, error) {
				if id, ok := fakeFS[p]; ok {
					return id, nil
				}
				return hostns.FileID{}, errors.New("no such file")
			}
			got := ReadSpec("c1", tc.runtime, tc.spec, stat)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if after, _ := json.Marshal(tc.spec); string(after) != string(before) {
				t.Errorf("ReadSpec changed the spec it was given:\n%s\n%s", before, after)
			}
		})
	}
}
