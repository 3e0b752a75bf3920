package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/internal/beneath"
	"github.com/nsiso/nsiso/specmod"
)

// Names under a bundle's nsiso directory. Everything nsiso mounts for a
// container lives there, so cleanup never has to remember more than the
// bundle. The names are part of nsiso's on-disk contract: a newer shim
// cleans up after an older one, so they do not change between releases.
const (
	stateDirName = "nsiso"
	ownShmName   = "shm"        // the container's own /dev/shm tmpfs
	pinIPCName   = "parent-ipc" // the parent's IPC namespace
	pinPIDName   = "parent-pid" // the parent's PID namespace
	pinShmName   = "parent-shm" // the parent's /dev/shm
)

func stateDir(bundle string) string { return filepath.Join(bundle, stateDirName) }

// openStateDir opens a bundle's nsiso directory, making it first when
// create is set. A container that has its bundle mounted can put anything
// there, so it is opened beneath the bundle without following a symlink,
// and everything nsiso does in it goes through the returned handle.
func openStateDir(bundle string, create bool) (*os.File, error) {
	b, err := os.OpenFile(bundle, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if create {
		if err := unix.Mkdirat(int(b.Fd()), stateDirName, 0o711); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, &os.PathError{Op: "mkdir", Path: stateDir(bundle), Err: err}
		}
	}
	return openAt(b, stateDirName, unix.O_PATH|unix.O_DIRECTORY)
}

// openAt opens name in the directory dir without following a symlink.
func openAt(dir *os.File, name string, flags int) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(dir.Name(), name), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name)), nil
}

// makeMountPoint makes name in the state directory, a directory or (for a
// namespace pin) an empty file, and opens it; one that is already there
// must be of that kind, and never a symlink.
func makeMountPoint(dir *os.File, name string, isDir bool) (*os.File, error) {
	if isDir {
		if err := unix.Mkdirat(int(dir.Fd()), name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, &os.PathError{Op: "mkdir", Path: filepath.Join(dir.Name(), name), Err: err}
		}
		return openAt(dir, name, unix.O_PATH|unix.O_DIRECTORY)
	}
	f, err := openAt(dir, name, unix.O_CREAT|unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a plain file", f.Name())
	}
	return f, nil
}

// reopen opens the state directory's name again, so that the handle sees
// what is mounted on it now.
func reopen(dir *os.File, name string) (*os.File, error) {
	return openAt(dir, name, unix.O_PATH)
}

func ownShmDir(bundle string) string { return filepath.Join(stateDir(bundle), ownShmName) }

// CRI's layout: containerd's state directory holds the task bundles
// (io.containerd.runtime.v2.task/<namespace>/<id>) and the CRI plugin's
// volatile files, among them each sandbox's /dev/shm
// (io.containerd.grpc.v1.cri/sandboxes/<id>/shm). CRI always works in the
// containerd namespace k8s.io.
const (
	criNamespace  = "k8s.io"
	taskDirName   = "io.containerd.runtime.v2.task"
	criStateName  = "io.containerd.grpc.v1.cri"
	criSandboxDir = "sandboxes"
)

// podShm is where a CRI sandbox's /dev/shm is, as a root and a path beneath.
type podShm struct{ root, rel string }

// criPodShm locates the /dev/shm containerd's CRI made for sandbox id, from
// the bundle layout containerd gave this shim. ok is false outside CRI's
// namespace or for a bundle not laid out by containerd.
func criPodShm(sc parentScope, id string) (podShm, bool) {
	if sc.namespace != criNamespace {
		return podShm{}, false
	}
	tasks := filepath.Dir(sc.taskDir())
	if filepath.Base(tasks) != taskDirName || filepath.Base(sc.taskDir()) != sc.namespace {
		return podShm{}, false
	}
	return podShm{root: filepath.Dir(tasks), rel: filepath.Join(criStateName, criSandboxDir, id, "shm")}, true
}

// mountOwnShm mounts the container's own /dev/shm tmpfs on the host at
// <bundle>/nsiso/shm, where the container's spec now binds it from.
func mountOwnShm(bundle string, t *specmod.Tmpfs) error {
	dir, err := openStateDir(bundle, true)
	if err != nil {
		return err
	}
	defer dir.Close()
	mp, err := makeMountPoint(dir, ownShmName, true)
	if err != nil {
		return err
	}
	defer mp.Close()
	flags, data := tmpfsOptions(t.Options)
	if err := unix.Mount("shm", beneath.FDPath(mp), "tmpfs", flags, data); err != nil {
		return fmt.Errorf("mount /dev/shm tmpfs (%s): %w", specmod.Truncate(data), err)
	}
	return nil
}

// mountFlags are the options runc turns into mount flags (libcontainer's
// specconv table); set tells whether the option sets or clears the flag.
// Arrays, not maps, here and below: no init work at each shim exec (docs/performance.md).
var mountFlags = [...]struct {
	name string
	set  bool
	flag uintptr
}{
	{"async", false, unix.MS_SYNCHRONOUS}, {"atime", false, unix.MS_NOATIME},
	{"defaults", true, 0}, {"dev", false, unix.MS_NODEV},
	{"diratime", false, unix.MS_NODIRATIME}, {"dirsync", true, unix.MS_DIRSYNC},
	{"exec", false, unix.MS_NOEXEC}, {"iversion", true, unix.MS_I_VERSION},
	{"lazytime", true, unix.MS_LAZYTIME}, {"loud", false, unix.MS_SILENT},
	{"mand", true, unix.MS_MANDLOCK}, {"noatime", true, unix.MS_NOATIME},
	{"nodev", true, unix.MS_NODEV}, {"nodiratime", true, unix.MS_NODIRATIME},
	{"noexec", true, unix.MS_NOEXEC}, {"noiversion", false, unix.MS_I_VERSION},
	{"nolazytime", false, unix.MS_LAZYTIME}, {"nomand", false, unix.MS_MANDLOCK},
	{"norelatime", false, unix.MS_RELATIME}, {"nostrictatime", false, unix.MS_STRICTATIME},
	{"nosuid", true, unix.MS_NOSUID}, {"nosymfollow", true, unix.MS_NOSYMFOLLOW},
	{"relatime", true, unix.MS_RELATIME}, {"ro", true, unix.MS_RDONLY},
	{"rw", false, unix.MS_RDONLY}, {"silent", true, unix.MS_SILENT},
	{"strictatime", true, unix.MS_STRICTATIME}, {"suid", false, unix.MS_NOSUID},
	{"sync", true, unix.MS_SYNCHRONOUS}, {"symfollow", false, unix.MS_NOSYMFOLLOW},
}

// ignoredOptions are options runc applies to a mount after making it
// (propagation, recursive attributes, copy-up, id-mapping); none of them
// changes the tmpfs nsiso makes on the host, which the container only binds.
var ignoredOptions = [...]string{
	"private", "rprivate", "slave", "rslave", "shared",
	"rshared", "unbindable", "runbindable", "tmpcopyup",
	"idmap", "ridmap", "rro", "rrw", "rnosuid",
	"rsuid", "rnodev", "rdev", "rnoexec", "rexec",
	"rnodiratime", "rdiratime", "rrelatime", "rnorelatime",
	"rnoatime", "ratime", "rstrictatime", "rnostrictatime",
	"rnosymfollow", "rsymfollow",
}

// tmpfsOptions splits a spec's tmpfs options into mount flags and tmpfs
// data the way runc does, so a client's options mean the same on the host
// tmpfs as they would have in runc's.
func tmpfsOptions(opts []string) (uintptr, string) {
	var flags uintptr
	var data []string
options:
	for _, o := range opts {
		for _, f := range mountFlags {
			if f.name == o {
				if f.set {
					flags |= f.flag
				} else {
					flags &^= f.flag
				}
				continue options
			}
		}
		if o == "" || slices.Contains(ignoredOptions[:], o) {
			continue
		}
		data = append(data, o)
	}
	return flags, strings.Join(data, ",")
}

// resizePodShm sets the size of this sandbox's pod /dev/shm. The directory
// is opened beneath containerd's state directory without following
// symlinks and must be the root of a tmpfs; the remount then goes through
// that open handle, so nothing can swap what is resized after the checks.
func resizePodShm(pod podShm, size int64) error {
	f, err := openDir(pod.root, pod.rel)
	if err != nil {
		return err
	}
	defer f.Close()
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
		return err
	}
	if fs.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("%s is not a tmpfs", f.Name())
	}
	if ok, err := isMountRoot(f); err != nil || !ok {
		return fmt.Errorf("%s is not a mount point (%v)", f.Name(), err)
	}
	// A remount resets the per-mount flags not passed in, so pass on the
	// ones CRI set.
	flags := uintptr(unix.MS_REMOUNT)
	for _, fl := range []struct{ st, ms uintptr }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_RDONLY, unix.MS_RDONLY},
	} {
		if uintptr(fs.Flags)&fl.st != 0 {
			flags |= fl.ms
		}
	}
	return unix.Mount("", beneath.FDPath(f), "", flags, "size="+strconv.FormatInt(size, 10))
}

// isMountRoot tells whether the open directory is the root of a mount.
func isMountRoot(f *os.File) (bool, error) {
	var sx unix.Statx_t
	err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, 0, &sx)
	if err != nil {
		return false, err
	}
	if sx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return sx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	// Kernels before 5.8 do not report it: a mount root's device differs
	// from its parent's.
	var self, parent unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &self); err != nil {
		return false, err
	}
	if err := unix.Fstatat(int(f.Fd()), "..", &parent, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, err
	}
	return self.Dev != parent.Dev, nil
}

// stateNames are what nsiso may make in a bundle's nsiso directory.
var stateNames = [...]string{pinIPCName, pinPIDName, pinShmName, ownShmName}

// maxStacked bounds the unmounts of one name: nsiso mounts once per name.
const maxStacked = 8

// cleanupState unmounts everything nsiso mounted for the container of this
// bundle and removes its directory. It is safe to call more than once.
//
// Nothing is reached through a name the container could have changed:
// the directory is opened beneath the bundle without following symlinks,
// and a name is unmounted only when what is opened there is the root of a
// mount, which in the host's mount namespace no container can make. When
// scan is set, mounts anywhere beneath the bundle but its rootfs are found
// in the mount table too, so one the container moved away by renaming a
// directory is still unmounted; a Delete sets it for containers nsiso
// mounted for, `shim delete` always.
func cleanupState(bundle string, scan bool) error {
	var errs []error
	if scan {
		errs = append(errs, unmountBeneath(bundle))
	}
	dir, err := openStateDir(bundle, false)
	if errors.Is(err, os.ErrNotExist) {
		return errors.Join(errs...)
	}
	if err != nil {
		// A symlink, or anything but a directory: not nsiso's, and
		// never followed.
		return errors.Join(append(errs, fmt.Errorf("%s left alone: %w", stateDir(bundle), err))...)
	}
	defer dir.Close()
	for _, name := range stateNames {
		if err := unmountAt(dir, name); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// Never remove what may still be a mount: a removal would reach
		// into the parent's /dev/shm.
		return errors.Join(errs...)
	}
	for _, name := range stateNames {
		err := unix.Unlinkat(int(dir.Fd()), name, 0)
		if errors.Is(err, unix.EISDIR) {
			err = unix.Unlinkat(int(dir.Fd()), name, unix.AT_REMOVEDIR)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove %s: %w", filepath.Join(dir.Name(), name), err))
		}
	}
	b, err := os.OpenFile(bundle, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	defer b.Close()
	if err := unix.Unlinkat(int(b.Fd()), stateDirName, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir.Name(), err))
	}
	return errors.Join(errs...)
}

// unmountAt unmounts what is mounted on name in dir, through a handle on
// the mount itself, until nothing is. A name that is missing, a symlink or
// a plain file or directory is no mount, and is left for removal.
func unmountAt(dir *os.File, name string) error {
	for range maxStacked {
		f, err := reopen(dir, name)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ELOOP) {
			return nil
		}
		if err != nil {
			return err
		}
		done, err := unmountRoot(f)
		f.Close()
		if done || err != nil {
			return err
		}
	}
	return fmt.Errorf("%s: more than %d mounts stacked", filepath.Join(dir.Name(), name), maxStacked)
}

// unmountRoot unmounts the mount whose root f is; done reports that f is
// no mount root (a symlink opened as itself is none).
func unmountRoot(f *os.File) (done bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return true, nil
	}
	root, err := isMountRoot(f)
	if err != nil || !root {
		return true, err
	}
	if err := unix.Unmount(beneath.FDPath(f), unix.MNT_DETACH); err != nil {
		return false, fmt.Errorf("unmount %s: %w", f.Name(), err)
	}
	return false, nil
}

// unmountBeneath unmounts every mount the host's mount table has beneath
// the bundle, but the rootfs containerd mounts and what is below it, each
// opened beneath the bundle without following symlinks and unmounted only
// when the handle is the root of that very mount.
func unmountBeneath(bundle string) error {
	rootfs := filepath.Join(bundle, "rootfs")
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		under := strings.HasPrefix(m.Mountpoint, bundle+"/")
		inRootfs := m.Mountpoint == rootfs || strings.HasPrefix(m.Mountpoint, rootfs+"/")
		return !under || inRootfs, false
	})
	if err != nil {
		return err
	}
	// Deepest first, so that a mount is never detached from under another.
	slices.SortFunc(mounts, func(a, b *mountinfo.Info) int { return len(b.Mountpoint) - len(a.Mountpoint) })
	var errs []error
	for _, m := range mounts {
		f, err := beneath.Open(bundle, strings.TrimPrefix(m.Mountpoint, bundle+"/"), unix.O_PATH)
		if err != nil {
			continue // gone, or moved behind a symlink: not reachable safely
		}
		if id, err := mountID(f); err == nil && id == uint64(m.ID) {
			if _, err := unmountRoot(f); err != nil {
				errs = append(errs, err)
			}
		}
		f.Close()
	}
	return errors.Join(errs...)
}

// mountID is the ID of the mount an open file is on.
func mountID(f *os.File) (uint64, error) {
	var sx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &sx); err != nil {
		return 0, err
	}
	if sx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, errors.New("the kernel does not report mount IDs")
	}
	return sx.Mnt_id, nil
}
