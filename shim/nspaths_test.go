package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/specmod"
)

// A namespace path a client flips after nsiso judged it must not change
// what runc joins: the spec names the handle nsiso judged.
func TestHoldNamespacesPinsWhatIsJudged(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "ipc")
	if err := os.Symlink("/proc/self/ns/ipc", link); err != nil {
		t.Fatal(err)
	}
	notNS := filepath.Join(dir, "file")
	if err := os.WriteFile(notNS, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := hostns.Stat("/proc/self/ns/ipc")
	if err != nil {
		t.Fatal(err)
	}
	strict := specmod.Policy{DisallowHostIPC: true, DisallowHostPID: true}
	for _, tc := range []struct {
		name    string
		ns      []specs.LinuxNamespace
		policy  specmod.Policy
		held    []specs.LinuxNamespaceType
		pod     string
		wantErr string
	}{
		{name: "judged ipc and mount paths are held", policy: strict,
			ns:   []specs.LinuxNamespace{{Type: specs.IPCNamespace, Path: link}, {Type: specs.MountNamespace, Path: "/proc/self/ns/mnt"}, {Type: specs.NetworkNamespace, Path: "/proc/self/ns/net"}},
			held: []specs.LinuxNamespaceType{specs.IPCNamespace, specs.MountNamespace}},
		{name: "nothing is held where no rule judges", policy: specmod.Policy{},
			ns: []specs.LinuxNamespace{{Type: specs.IPCNamespace, Path: link}, {Type: specs.PIDNamespace, Path: "/proc/self/ns/pid"}}},
		{name: "pid is judged by its own rule", policy: specmod.Policy{DisallowHostPID: true},
			ns:   []specs.LinuxNamespace{{Type: specs.IPCNamespace, Path: link}, {Type: specs.PIDNamespace, Path: "/proc/self/ns/pid"}},
			held: []specs.LinuxNamespaceType{specs.PIDNamespace}},
		{name: "a path that cannot be opened is left to the rules", policy: strict,
			ns: []specs.LinuxNamespace{{Type: specs.IPCNamespace, Path: "/proc/999999999/ns/ipc"}}},
		{name: "a relative path is left to the rules", policy: strict,
			ns: []specs.LinuxNamespace{{Type: specs.IPCNamespace, Path: "proc/self/ns/ipc"}}},
		{name: "not a namespace file", policy: strict,
			ns:      []specs.LinuxNamespace{{Type: specs.IPCNamespace, Path: notNS}},
			wantErr: `nsiso: container "c": linux.namespaces.ipc.path="` + notNS + `": not a namespace file`},
		{name: "not a namespace file, in a pod", policy: strict, pod: "team-a/web",
			ns:      []specs.LinuxNamespace{{Type: specs.IPCNamespace, Path: notNS}},
			wantErr: `nsiso: container "c" of pod "team-a/web": linux.namespaces.ipc.path="` + notNS + `": not a namespace file`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &specs.Spec{Linux: &specs.Linux{Namespaces: append([]specs.LinuxNamespace(nil), tc.ns...)}}
			h, err := holdNamespaces("c", specmod.Request{Pod: tc.pod}, s, tc.policy)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer h.close()
			for i, n := range s.Linux.Namespaces {
				isHeld := strings.HasPrefix(n.Path, "/proc/") && strings.Contains(n.Path, "/fd/")
				wantHeld := false
				for _, ty := range tc.held {
					wantHeld = wantHeld || ty == n.Type
				}
				if isHeld != wantHeld {
					t.Errorf("%s: path %q, held %v, want %v", n.Type, n.Path, isHeld, wantHeld)
				}
				if isHeld && h.paths[n.Type] != tc.ns[i].Path {
					t.Errorf("%s: client path %q, want %q", n.Type, h.paths[n.Type], tc.ns[i].Path)
				}
			}
			if tc.ns[0].Path != link || len(tc.held) == 0 || tc.held[0] != specs.IPCNamespace {
				return
			}
			// The client flips its link; the spec still names what was judged.
			if err := os.Remove(link); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/proc/self/ns/uts", link); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = os.Remove(link); _ = os.Symlink("/proc/self/ns/ipc", link) }()
			if got, err := hostns.Stat(s.Linux.Namespaces[0].Path); err != nil || got != want {
				t.Errorf("held path %s is %v (%v), want the IPC namespace judged %v", s.Linux.Namespaces[0].Path, got, err, want)
			}
		})
	}
}
