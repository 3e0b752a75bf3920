package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

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

// makeStateDir makes a bundle's nsiso directory, if it is not there yet.
// The bundle exists: one mkdir, where MkdirAll would stat its way up.
func makeStateDir(dir string) error {
	if err := os.Mkdir(dir, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
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
func criPodShm(w where, id string) (podShm, bool) {
	if w.namespace != criNamespace {
		return podShm{}, false
	}
	tasks := filepath.Dir(w.taskDir())
	if filepath.Base(tasks) != taskDirName || filepath.Base(w.taskDir()) != w.namespace {
		return podShm{}, false
	}
	return podShm{root: filepath.Dir(tasks), rel: filepath.Join(criStateName, criSandboxDir, id, "shm")}, true
}

// mountOwnShm mounts the container's own /dev/shm tmpfs at dir on the
// host, where the container's spec now binds it from.
func mountOwnShm(dir string, t *specmod.Tmpfs) error {
	if err := makeStateDir(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if st, serr := os.Lstat(dir); serr != nil || !st.IsDir() {
			return err
		}
	}
	flags, data := tmpfsOptions(t.Options)
	if err := unix.Mount("shm", dir, "tmpfs", flags, data); err != nil {
		return fmt.Errorf("mount /dev/shm tmpfs (%s): %w", data, err)
	}
	return nil
}

// mountFlags are the options runc turns into mount flags (libcontainer's
// specconv table); set tells whether the option sets or clears the flag.
// (Arrays, not maps, here and below: an array of constants is laid out by
// the linker, while a map is built at every start of the shim, which
// containerd starts three times per container.)
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

// cleanupState unmounts everything nsiso mounted for the container of this
// bundle and removes its directory. It is safe to call more than once.
//
// It runs at every Delete and again in `shim delete`, so it does only
// what the directory calls for: most containers have none (one failed
// open), a private one only its /dev/shm, a child only its pins.
func cleanupState(bundle string) error {
	dir := stateDir(bundle)
	var present, isDir [len(stateNames)]bool
	listed := false
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		// Nothing can be mounted beneath a directory that does not exist.
		return nil
	}
	if err == nil {
		entries, rerr := f.ReadDir(-1)
		f.Close()
		listed = rerr == nil
		for _, e := range entries {
			for i, n := range stateNames {
				if e.Name() == n {
					present[i], isDir[i] = true, e.IsDir()
				}
			}
		}
	}
	if !listed {
		// Not a plain directory, or unreadable: try every name, as an
		// unmount or removal of what is not there fails harmlessly.
		for i := range present {
			present[i] = true
		}
	}
	var errs []error
	for i, name := range stateNames {
		if !present[i] {
			continue
		}
		p := filepath.Join(dir, name)
		for {
			err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
			if err == nil {
				continue // stacked mounts: unmount until none is left
			}
			if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			}
			break
		}
	}
	if len(errs) > 0 {
		// Never remove what may still be a mount: a recursive removal
		// would reach into the parent's /dev/shm.
		return errors.Join(errs...)
	}
	for i, name := range stateNames {
		if !present[i] {
			continue
		}
		p := filepath.Join(dir, name)
		var err error
		switch {
		case !listed:
			err = os.Remove(p)
		case isDir[i]:
			err = os.NewSyscallError("rmdir", unix.Rmdir(p))
		default:
			err = os.NewSyscallError("unlink", unix.Unlink(p))
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	return errors.Join(errs...)
}
