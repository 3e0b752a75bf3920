package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/specmod"
)

// Names under a bundle's nsiso directory. Everything nsiso mounts for a
// container lives there, so cleanup never has to remember more than the
// bundle.
const (
	stateDirName = "nsiso"
	ownShmName   = "shm"        // the container's own /dev/shm tmpfs
	pinIPCName   = "parent-ipc" // the parent's IPC namespace
	pinPIDName   = "parent-pid" // the parent's PID namespace
	pinShmName   = "parent-shm" // the parent's /dev/shm
)

func stateDir(bundle string) string { return filepath.Join(bundle, stateDirName) }

// runcState is the part of runc's (libcontainer's) state.json nsiso reads:
// the parent's init pid and its start time, which tells a live init from a
// stranger that got its pid later.
type runcState struct {
	InitProcessPid   int    `json:"init_process_pid"`
	InitProcessStart uint64 `json:"init_process_start"`
}

// parentRef is a parent container's init, held by a pidfd.
type parentRef struct {
	id     string
	pid    int
	pidfd  int
	bundle string
}

// parentError is a rejection naming the parent as the user named it.
func parentError(req specmod.Request, child, format string, args ...any) error {
	return &specmod.Error{Container: child, Key: req.ParentKey, Value: req.Parent, Reason: fmt.Sprintf(format, args...)}
}

// openParent finds the parent's init through runc's state in the same runc
// root and containerd namespace the shim uses (so only a parent in the same
// containerd namespace is found), and holds it with a pidfd after checking
// that the pid still is that init.
func openParent(req specmod.Request, child, runcRoot, childBundle string) (*parentRef, error) {
	data, err := os.ReadFile(filepath.Join(runcRoot, req.Parent, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, parentError(req, child, "parent container has no task in this containerd namespace (it must exist and be running)")
	}
	if err != nil {
		return nil, fmt.Errorf("nsiso: parent %q: %w", req.Parent, err)
	}
	var st runcState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("nsiso: parent %q: runc state: %w", req.Parent, err)
	}
	if st.InitProcessPid <= 0 {
		return nil, parentError(req, child, "parent container is not running")
	}
	fd, err := unix.PidfdOpen(st.InitProcessPid, 0)
	if err != nil {
		return nil, parentError(req, child, "parent container is not running (init pid %d: %v)", st.InitProcessPid, err)
	}
	start, err := procStartTime(st.InitProcessPid)
	if err != nil || start != st.InitProcessStart {
		unix.Close(fd)
		return nil, parentError(req, child, "parent container is not running (its init pid %d has exited)", st.InitProcessPid)
	}
	// Containers of one containerd namespace are siblings under the task
	// directory, so the parent's bundle sits next to the child's.
	return &parentRef{id: req.Parent, pid: st.InitProcessPid, pidfd: fd, bundle: filepath.Join(filepath.Dir(childBundle), req.Parent)}, nil
}

func (p *parentRef) close() { unix.Close(p.pidfd) }

// alive tells whether the pidfd's process still exists. Checked after the
// pins are made, it proves /proc/<pid> named the parent all along: a pid is
// not reused while its process (even a zombie) exists.
func (p *parentRef) alive() bool {
	return unix.PidfdSendSignal(p.pidfd, 0, nil, 0) == nil
}

// procStartTime reads field 22 of /proc/<pid>/stat: the start time in clock
// ticks since boot, the same value runc records as init_process_start.
func procStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces and parentheses; fields resume
	// after the last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// pinParent pins what the child will join of its parent under the child's
// bundle and returns the pinned paths. On error nothing stays mounted.
func pinParent(req specmod.Request, child, runcRoot, childBundle string, need specmod.Needs) (_ specmod.Parent, retErr error) {
	par := specmod.Parent{ID: req.Parent}
	if need == (specmod.Needs{}) {
		return par, nil
	}
	ref, err := openParent(req, child, runcRoot, childBundle)
	if err != nil {
		return par, err
	}
	defer ref.close()

	dir := stateDir(childBundle)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return par, fmt.Errorf("nsiso: %w", err)
	}
	defer func() {
		if retErr != nil {
			cleanupState(childBundle)
		}
	}()
	proc := "/proc/" + strconv.Itoa(ref.pid)
	if need.IPC {
		if par.IPCPath, err = pinNamespace(proc, specs.IPCNamespace, filepath.Join(dir, pinIPCName)); err != nil {
			return par, fmt.Errorf("nsiso: pin IPC namespace of parent %q: %w", req.Parent, err)
		}
	}
	if need.PID {
		if par.PIDPath, err = pinNamespace(proc, specs.PIDNamespace, filepath.Join(dir, pinPIDName)); err != nil {
			return par, fmt.Errorf("nsiso: pin PID namespace of parent %q: %w", req.Parent, err)
		}
	}
	if need.Shm {
		if par.ShmPath, err = pinShm(req, child, ref, proc, filepath.Join(dir, pinShmName)); err != nil {
			return par, err
		}
	}
	if !ref.alive() {
		return par, parentError(req, child, "parent container exited while its namespaces were being pinned")
	}
	return par, nil
}

// pinNamespace bind-mounts the parent's namespace file onto dst, which keeps
// the namespace alive and identified for as long as the child needs it.
func pinNamespace(proc string, t specs.LinuxNamespaceType, dst string) (string, error) {
	src := filepath.Join(proc, "ns", string(t))
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o444)
	if err != nil {
		return "", err
	}
	f.Close()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind %s: %w", src, err)
	}
	want, err := hostns.Stat(src)
	if err != nil {
		return "", err
	}
	if got, err := hostns.Stat(dst); err != nil || got != want {
		return "", fmt.Errorf("pinned %s is not %s", dst, src)
	}
	return dst, nil
}

// pinShm binds the parent's /dev/shm onto dst. A mount in another mount
// namespace cannot be bound from outside it, so the parent's /dev/shm must
// be a bind of a directory the host sees (nsiso's own for a private
// container, a CRI pod's, or the host's); which one is read from the
// parent's spec, and then checked against what the parent's init sees.
func pinShm(req specmod.Request, child string, ref *parentRef, proc, dst string) (string, error) {
	src, err := parentShmSource(ref.bundle)
	if err != nil {
		return "", fmt.Errorf("nsiso: parent %q: %w", req.Parent, err)
	}
	if src == "" {
		return "", parentError(req, child, "the parent's /dev/shm lives only inside its mount namespace, so it cannot be shared; start the parent with runtime io.containerd.nsiso.v1 and nsiso/ipc-mode=private, or give this container nsiso/ipc-mode=private")
	}
	want, err := hostns.Stat(filepath.Join(proc, "root", specmod.ShmPath))
	if err != nil {
		return "", parentError(req, child, "cannot read the parent's /dev/shm: %v", err)
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return "", fmt.Errorf("nsiso: %w", err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("nsiso: bind /dev/shm of parent %q from %s: %w", req.Parent, src, err)
	}
	if got, err := hostns.Stat(dst); err != nil || got != want {
		return "", parentError(req, child, "the parent's /dev/shm source %s is no longer what the parent sees", src)
	}
	return dst, nil
}

// parentShmSource returns the host path the parent's /dev/shm binds, or ""
// when the parent mounted its own.
func parentShmSource(bundle string) (string, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return "", err
	}
	var s struct {
		Mounts []specs.Mount `json:"mounts"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return "", fmt.Errorf("%s/config.json: %w", bundle, err)
	}
	for i := len(s.Mounts) - 1; i >= 0; i-- {
		m := s.Mounts[i]
		if filepath.Clean(m.Destination) != specmod.ShmPath {
			continue
		}
		if m.Type != "bind" && !hasOption(m.Options, "bind", "rbind") {
			return "", nil
		}
		if !filepath.IsAbs(m.Source) {
			return filepath.Join(bundle, m.Source), nil
		}
		return m.Source, nil
	}
	return "", nil
}

func hasOption(opts []string, want ...string) bool {
	for _, o := range opts {
		for _, w := range want {
			if o == w {
				return true
			}
		}
	}
	return false
}

// mountOwnShm mounts the container's own /dev/shm tmpfs on the host, where
// the container's spec now binds it from.
func mountOwnShm(dir string, m *specs.Mount) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	flags, data := tmpfsFlags(m.Options)
	if err := unix.Mount("shm", dir, "tmpfs", flags, data); err != nil {
		return fmt.Errorf("mount /dev/shm tmpfs (%s): %w", data, err)
	}
	return nil
}

func ownShmDir(bundle string) string { return filepath.Join(stateDir(bundle), ownShmName) }

// tmpfsFlags splits mount options into flags and tmpfs data, the way runc
// would for the same mount.
func tmpfsFlags(opts []string) (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range opts {
		switch o {
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "nodev":
			flags |= unix.MS_NODEV
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "ro":
			flags |= unix.MS_RDONLY
		case "rw", "":
		default:
			data = append(data, o)
		}
	}
	return flags, strings.Join(data, ",")
}

// cleanupState unmounts everything nsiso mounted for the container of this
// bundle and removes its directory. It is safe to call more than once.
func cleanupState(bundle string) error {
	dir := stateDir(bundle)
	var errs []error
	for _, name := range []string{pinIPCName, pinPIDName, pinShmName, ownShmName} {
		p := filepath.Join(dir, name)
		for {
			err := unix.Unmount(p, unix.MNT_DETACH)
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
	for _, name := range []string{pinIPCName, pinPIDName, pinShmName, ownShmName, ""} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// resizeTmpfs sets the size of the tmpfs mounted at dir (a pod's /dev/shm,
// which containerd's CRI plugin mounts at 64Mi before the sandbox starts).
// It refuses anything but a tmpfs mount point, so a spec can never make the
// shim remount an arbitrary file system.
func resizeTmpfs(dir string, size int64) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return err
	}
	if fs.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("%s is not a tmpfs", dir)
	}
	if ok, err := isMountPoint(dir); err != nil || !ok {
		return fmt.Errorf("%s is not a mount point (%v)", dir, err)
	}
	// A remount resets the per-mount flags not passed in, so pass on the
	// ones CRI set.
	flags := uintptr(unix.MS_REMOUNT)
	for _, f := range []struct{ st, ms uintptr }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC}, {unix.ST_RDONLY, unix.MS_RDONLY},
	} {
		if uintptr(fs.Flags)&f.st != 0 {
			flags |= f.ms
		}
	}
	return unix.Mount("", dir, "", flags, "size="+strconv.FormatInt(size, 10))
}

// isMountPoint tells whether dir is the root of a mount: its device differs
// from its parent's, or it is the same inode as the parent (/).
func isMountPoint(dir string) (bool, error) {
	self, err := hostns.Stat(dir)
	if err != nil {
		return false, err
	}
	parent, err := hostns.Stat(filepath.Join(dir, ".."))
	if err != nil {
		return false, err
	}
	return self.Dev != parent.Dev || self.Ino == parent.Ino, nil
}
