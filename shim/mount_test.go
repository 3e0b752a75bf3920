package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"golang.org/x/sys/unix"
)

func TestResizeTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := resizeTmpfs(dir, 4<<20); err == nil {
		t.Fatal("resized a directory that is not a tmpfs mount")
	}
	if err := unix.Mount("shm", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if err := resizeTmpfs(dir, 4<<20); err != nil {
		t.Fatal(err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if got := int64(fs.Blocks) * fs.Bsize; got != 4<<20 {
		t.Errorf("size %d, want 4Mi", got)
	}
	want := uint64(unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC)
	if uint64(fs.Flags)&want != want {
		t.Errorf("remount lost flags: %#x", fs.Flags)
	}
}

// cleanupState must unmount everything nsiso made for a container and
// never delete through a mount: the parent's /dev/shm files must survive.
func TestCleanupState(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	bundle := t.TempDir()
	if err := mountOwnShm(ownShmDir(bundle), &specs.Mount{Options: []string{"nosuid", "nodev", "noexec", "mode=1777", "size=1m"}}); err != nil {
		t.Fatal(err)
	}
	// A stand-in for a parent's /dev/shm, pinned into the child's bundle.
	parentShm := t.TempDir()
	if err := unix.Mount("shm", parentShm, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(parentShm, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(parentShm, "precious"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(stateDir(bundle), pinShmName)
	if err := os.Mkdir(pin, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(parentShm, pin, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	// An IPC namespace pin, as for a share-parent child.
	if _, err := pinNamespace("/proc/self", specs.IPCNamespace, filepath.Join(stateDir(bundle), pinIPCName)); err != nil {
		t.Fatal(err)
	}

	if err := cleanupState(bundle); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stateDir(bundle)); !os.IsNotExist(err) {
		t.Errorf("state dir still there: %v", err)
	}
	data, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(data), bundle) {
		t.Errorf("mounts left under %s", bundle)
	}
	if _, err := os.Stat(filepath.Join(parentShm, "precious")); err != nil {
		t.Errorf("cleanup deleted the parent's /dev/shm contents: %v", err)
	}
	if err := cleanupState(bundle); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
}
