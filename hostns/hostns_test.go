package hostns

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// These run in the test process's namespaces, which are the host's on a
// developer machine and in CI; an unprivileged run may not read pid 1's.
func TestChecker(t *testing.T) {
	var h Checker
	for _, tc := range []struct {
		name string
		t    specs.LinuxNamespaceType
		path string
		want bool
	}{
		{"own IPC is the host's", specs.IPCNamespace, "/proc/self/ns/ipc", true},
		{"pid 1's IPC is the host's even unreadable", specs.IPCNamespace, "/proc/1/ns/ipc", true},
		{"own PID is the host's", specs.PIDNamespace, "/proc/self/ns/pid", true},
		{"IPC is not the host's PID namespace", specs.PIDNamespace, "/proc/self/ns/ipc", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := h.IsHostNamespace(tc.t, tc.path)
			if err != nil || got != tc.want {
				t.Fatalf("IsHostNamespace(%s, %s) = %v, %v; want %v", tc.t, tc.path, got, err, tc.want)
			}
		})
	}
	if _, err := h.IsHostNamespace(specs.IPCNamespace, "/proc/0/ns/ipc"); err == nil {
		t.Error("want an error for a namespace file that does not exist")
	}
	if ok, err := h.IsHostShm("/dev/shm/"); !ok || err != nil {
		t.Errorf("IsHostShm(/dev/shm/) = %v, %v", ok, err)
	}
	if ok, err := h.IsHostShm(t.TempDir()); ok || err != nil {
		t.Errorf("IsHostShm(tempdir) = %v, %v", ok, err)
	}
}
