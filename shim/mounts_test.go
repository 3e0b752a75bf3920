package shim

import (
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/specmod"
)

func TestTmpfsOptions(t *testing.T) {
	for _, tc := range []struct {
		opts  []string
		flags uintptr
		data  string
	}{
		{[]string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k", "rw"}, unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, "mode=1777,size=65536k"},
		{[]string{"noatime", "atime"}, 0, ""},
		{[]string{"ro", "rw"}, 0, ""},
		{[]string{"relatime", "sync", "dirsync", "strictatime", "nosymfollow"}, unix.MS_RELATIME | unix.MS_SYNCHRONOUS | unix.MS_DIRSYNC | unix.MS_STRICTATIME | unix.MS_NOSYMFOLLOW, ""},
		{[]string{"rprivate", "tmpcopyup", "rro", "size=1m", "nr_inodes=100"}, 0, "size=1m,nr_inodes=100"},
	} {
		flags, data := tmpfsOptions(tc.opts)
		if flags != tc.flags || data != tc.data {
			t.Errorf("tmpfsOptions(%q) = %#x %q, want %#x %q", tc.opts, flags, data, tc.flags, tc.data)
		}
	}
}

// Every option runc accepts in a tmpfs mount's options must mount on the
// host too: nsiso makes a private container's /dev/shm there, from the
// client's options.
func TestMountOwnShmEachRuncOption(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	var opts []string
	for _, f := range mountFlags {
		opts = append(opts, f.name)
	}
	opts = append(opts, ignoredOptions[:]...)
	sort.Strings(opts)
	for _, o := range opts {
		t.Run(o, func(t *testing.T) {
			bundle := t.TempDir()
			dir := ownShmDir(bundle)
			if err := mountOwnShm(bundle, &specmod.Tmpfs{Options: []string{o, "size=1m"}}); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = unix.Unmount(dir, unix.MNT_DETACH) }()
			var fs unix.Statfs_t
			if err := unix.Statfs(dir, &fs); err != nil {
				t.Fatal(err)
			}
			if fs.Type != unix.TMPFS_MAGIC || fs.Blocks*uint64(fs.Bsize) != 1<<20 {
				t.Fatalf("not a 1Mi tmpfs: type %#x, %d blocks", fs.Type, fs.Blocks)
			}
			want := map[string]int64{"ro": unix.ST_RDONLY, "nosuid": unix.ST_NOSUID, "nodev": unix.ST_NODEV, "noexec": unix.ST_NOEXEC, "noatime": unix.ST_NOATIME}[o]
			if fs.Flags&want != want {
				t.Errorf("option %s not applied: flags %#x", o, fs.Flags)
			}
		})
	}
}

func TestResizePodShm(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	root := t.TempDir()
	rel := "io.containerd.grpc.v1.cri/sandboxes/sb/shm"
	dir := filepath.Join(root, rel)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := resizePodShm(podShm{root, rel}, 4<<20); err == nil {
		t.Fatal("resized a directory that is not a tmpfs mount")
	}
	if err := unix.Mount("shm", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=1m"); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Unmount(dir, unix.MNT_DETACH) }()
	if err := resizePodShm(podShm{root, rel}, 4<<20); err != nil {
		t.Fatal(err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if got := int64(fs.Blocks) * fs.Bsize; got != 4<<20 {
		t.Errorf("size %d, want 4Mi", got)
	}
	want := int64(unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC)
	if fs.Flags&want != want {
		t.Errorf("remount lost flags: %#x", fs.Flags)
	}
}

// A tmpfs reached through a symlink, or a directory inside a tmpfs, is
// never resized: only the root of the tmpfs at CRI's own path.
func TestResizePodShmRefusesOthers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	root := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.Mkdir(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("victim", victim, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Unmount(victim, unix.MNT_DETACH) }()
	sb := filepath.Join(root, "sandboxes", "sb")
	if err := os.MkdirAll(sb, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(sb, "shm")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(victim, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"sandboxes/sb/shm", "sandboxes/sb/shm/sub"} {
		if err := resizePodShm(podShm{root, rel}, 4<<20); err == nil {
			t.Errorf("resized through %s", rel)
		}
	}
	if err := resizePodShm(podShm{filepath.Dir(victim), "victim/sub"}, 4<<20); err == nil || !strings.Contains(err.Error(), "not a mount point") {
		t.Errorf("resized a directory inside a tmpfs: %v", err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(victim, &fs); err != nil {
		t.Fatal(err)
	}
	if got := int64(fs.Blocks) * fs.Bsize; got != 1<<20 {
		t.Errorf("victim tmpfs resized to %d", got)
	}
}

// cleanupState must unmount everything nsiso made for a container and
// never delete through a mount: the parent's /dev/shm files must survive.
func TestCleanupState(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	bundle := t.TempDir()
	if err := mountOwnShm(bundle, &specmod.Tmpfs{Options: []string{"nosuid", "nodev", "noexec", "mode=1777", "size=1m"}}); err != nil {
		t.Fatal(err)
	}
	// A stand-in for a parent's /dev/shm, pinned into the child's bundle.
	parentShm := t.TempDir()
	if err := unix.Mount("shm", parentShm, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Unmount(parentShm, unix.MNT_DETACH) }()
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
	self := &parentRef{pid: os.Getpid()}
	dir, err := openStateDir(bundle, false)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if _, err := pinNamespace(self, "ipc", dir, pinIPCName); err != nil {
		t.Fatal(err)
	}
	if want, _ := hostns.Stat("/proc/self/ns/ipc"); want == (hostns.FileID{}) {
		t.Fatal("cannot stat own IPC namespace")
	}

	if err := cleanupState(bundle, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stateDir(bundle)); !os.IsNotExist(err) {
		t.Errorf("state dir still there: %v", err)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), bundle) {
		t.Errorf("mounts left under %s", bundle)
	}
	if _, err := os.Stat(filepath.Join(parentShm, "precious")); err != nil {
		t.Errorf("cleanup deleted the parent's /dev/shm contents: %v", err)
	}
	if err := cleanupState(bundle, true); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
}

// victimTmpfs is a tmpfs outside the bundle with a file in it, standing in
// for whatever of the host a container would like the shim to unmount or
// delete through a symlink.
func victimTmpfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("victim", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	for _, name := range []string{"shm", "precious"} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("victim-shm", filepath.Join(dir, "shm"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(filepath.Join(dir, "shm"), unix.MNT_DETACH) })
	return dir
}

func victimIntact(t *testing.T, victim string) {
	t.Helper()
	if ok, err := isMountRootPath(filepath.Join(victim, "shm")); err != nil || !ok {
		t.Errorf("the victim's tmpfs was unmounted (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(victim, "precious")); err != nil {
		t.Errorf("the victim's file was removed: %v", err)
	}
}

func isMountRootPath(p string) (bool, error) {
	f, err := os.OpenFile(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	return isMountRoot(f)
}

// A container that has its bundle mounted controls the names in it: the
// shim must never follow a symlink it put there, when it mounts or when it
// cleans up, and must still unmount what it mounted when the container
// moved it away.
func TestStateDirAttacks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	tmpfs := &specmod.Tmpfs{Options: []string{"nosuid", "size=1m"}}
	for _, tc := range []struct {
		name string
		// attack changes the bundle after the shim mounted the
		// container's /dev/shm (or, with before set, before it does).
		attack func(t *testing.T, bundle, victim string)
		before bool
		// moved is where the container's own tmpfs is after the attack.
		moved string
	}{
		{name: "nsiso directory replaced by a symlink", moved: "moved/shm", attack: func(t *testing.T, bundle, victim string) {
			rename(t, stateDir(bundle), filepath.Join(bundle, "moved"))
			symlink(t, victim, stateDir(bundle))
		}},
		{name: "nsiso/shm replaced by a symlink", moved: "nsiso/moved", attack: func(t *testing.T, bundle, victim string) {
			// A mount point can be renamed only where it is none: in
			// the container's mount namespace.
			asContainer(t, ownShmDir(bundle), func() error {
				if err := os.Rename(ownShmDir(bundle), filepath.Join(stateDir(bundle), "moved")); err != nil {
					return err
				}
				return os.Symlink(filepath.Join(victim, "shm"), ownShmDir(bundle))
			})
		}},
		{name: "nsiso/parent-ipc a symlink to a victim", moved: "nsiso/shm", attack: func(t *testing.T, bundle, victim string) {
			symlink(t, filepath.Join(victim, "precious"), filepath.Join(stateDir(bundle), pinIPCName))
		}},
		{name: "nsiso a symlink before the mount", before: true, attack: func(t *testing.T, bundle, victim string) {
			symlink(t, victim, stateDir(bundle))
		}},
		{name: "nsiso/shm a symlink before the mount", before: true, attack: func(t *testing.T, bundle, victim string) {
			if err := os.Mkdir(stateDir(bundle), 0o711); err != nil {
				t.Fatal(err)
			}
			symlink(t, filepath.Join(victim, "shm"), ownShmDir(bundle))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bundle, victim := t.TempDir(), victimTmpfs(t)
			if tc.before {
				tc.attack(t, bundle, victim)
				if err := mountOwnShm(bundle, tmpfs); err == nil {
					t.Error("mounted through a symlink")
				}
			} else {
				if err := mountOwnShm(bundle, tmpfs); err != nil {
					t.Fatal(err)
				}
				tc.attack(t, bundle, victim)
			}
			// It may refuse a symlinked directory; what matters is
			// what it touched, checked below.
			_ = cleanupState(bundle, true)
			victimIntact(t, victim)
			infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(bundle))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range infos {
				t.Errorf("left mounted: %s", m.Mountpoint)
			}
		})
	}
}

// asContainer runs fn as a container that sees the bundle without the
// shim's mount at hidden: in a mount namespace of its own.
func asContainer(t *testing.T, hidden string, fn func() error) {
	t.Helper()
	done := make(chan error)
	go func() {
		// The thread is left locked, so it ends with the goroutine and
		// its mount namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			done <- err
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			done <- err
			return
		}
		if err := unix.Unmount(hidden, unix.MNT_DETACH); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
