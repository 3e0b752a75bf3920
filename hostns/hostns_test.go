package hostns

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
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
}

// A namespace of a process's own is never the host's: an implementation
// that compared with the wrong reference, or answered true for every
// readable file, would say it is.
func TestCheckerNewNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("new namespaces need root")
	}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWIPC | syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var h Checker
	for _, ty := range []specs.LinuxNamespaceType{specs.IPCNamespace} {
		p := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "ns", string(ty))
		if got, err := h.IsHostNamespace(ty, p); got || err != nil {
			t.Errorf("IsHostNamespace(%s, a new namespace) = %v, %v; want false", ty, got, err)
		}
	}
	// CLONE_NEWPID puts the children in the new namespace; the process
	// itself stays in the host's.
	if got, err := h.IsHostNamespace(specs.PIDNamespace, filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "ns", "pid_for_children")); got || err != nil {
		t.Errorf("IsHostNamespace(pid, a new namespace) = %v, %v; want false", got, err)
	}
}

// ExposesHostShm must recognise the host's /dev/shm by device and inode
// wherever it is reached: a bind of it at another path, a file in it, a
// symlink to it, a recursive bind of /dev; and must not flag a plain bind
// of /dev, another tmpfs, or an ordinary directory.
func TestExposesHostShm(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	dir := t.TempDir()
	alias := filepath.Join(dir, "alias")
	other := filepath.Join(dir, "other")
	for _, d := range []string{alias, other} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("/dev/shm", alias, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Unmount(alias, unix.MNT_DETACH) }()
	if err := unix.Mount("other", other, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Unmount(other, unix.MNT_DETACH) }()
	f, err := os.CreateTemp("/dev/shm", "nsiso-hostns-")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer os.Remove(f.Name())
	link := filepath.Join(dir, "link")
	if err := os.Symlink("/dev/shm", link); err != nil {
		t.Fatal(err)
	}
	var h Checker
	for _, tc := range []struct {
		source    string
		recursive bool
		want      bool
	}{
		{alias, false, true},
		{f.Name(), false, true},
		{filepath.Join(alias, filepath.Base(f.Name())), false, true},
		{link, false, true},
		{"/dev", true, true},
		{"/", true, true},
		{"/dev", false, false},
		{other, true, false},
		{dir, true, false},
		{"/proc", true, false},
	} {
		got, err := h.ExposesHostShm(tc.source, tc.recursive)
		if err != nil || got != tc.want {
			t.Errorf("ExposesHostShm(%s, recursive=%v) = %v, %v; want %v", tc.source, tc.recursive, got, err, tc.want)
		}
	}
	if _, err := h.ExposesHostShm(filepath.Join(dir, "missing"), false); err == nil {
		t.Error("want an error for a source that does not exist")
	}
}
