package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/containerd/v2/pkg/identifiers"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/internal/beneath"
	"github.com/nsiso/nsiso/internal/procfs"
	"github.com/nsiso/nsiso/specmod"
)

// maxSpecSize bounds what nsiso reads of a config.json, the whole spec:
// far larger than any real one.
const maxSpecSize = 16 << 20

// parentScope is where a Create may find its parent: containerd's tasks of
// the caller's containerd namespace, and that namespace's bundles.
type parentScope struct {
	namespace string
	tasks     taskSource
	bundle    string // the child's bundle
}

// taskDir is containerd's directory of the namespace's bundles: a parent's
// bundle is a sibling of the child's.
func (sc parentScope) taskDir() string { return filepath.Dir(sc.bundle) }

// parentRef is a parent container's init, held by a pidfd.
type parentRef struct {
	id    string
	pid   int
	pidfd int
}

// parentError is a rejection naming the parent as the user named it.
func parentError(req specmod.Request, child, format string, args ...any) error {
	return &specmod.Error{Container: child, Pod: req.Pod, Key: req.ParentKey, Value: req.Parent, Reason: fmt.Sprintf(format, args...)}
}

// openParent asks containerd for the init of the parent's task in the
// caller's containerd namespace, so only a parent in that namespace is
// found and no file a client wrote names it, and holds the init with a
// pidfd. The pidfd holds that init when the process at the pid started
// before containerd was asked: alive from before the question until after
// the pidfd, it is the one containerd answered about. Otherwise (a parent
// started within the last clock tick) containerd is asked again: a pid is
// not reused before its process is reaped, which the parent's shim
// reports as stopped.
func openParent(ctx context.Context, req specmod.Request, child string, sc parentScope) (*parentRef, error) {
	// Both are validated before, by containerd and ParseRequest; check
	// again where they name what the shim will join.
	if err := identifiers.Validate(sc.namespace); err != nil {
		return nil, fmt.Errorf("nsiso: containerd namespace: %w", err)
	}
	if err := identifiers.Validate(req.Parent); err != nil {
		return nil, parentError(req, child, "not a containerd container ID")
	}
	asked, clockErr := bootTicks()
	pid, err := sc.tasks.initPID(ctx, sc.namespace, req.Parent)
	switch {
	case errors.Is(err, errNoTask):
		return nil, parentError(req, child, "parent container has no task in this containerd namespace (it must exist and be running)")
	case errors.Is(err, errNotRunning):
		return nil, parentError(req, child, "parent container is not running")
	case err != nil:
		return nil, parentError(req, child, "cannot look up the parent's task: %v", err)
	}
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		return nil, parentError(req, child, "parent container is not running (init pid %d: %v)", pid, err)
	}
	if st, err := procfs.ReadStat(int(pid)); clockErr == nil && err == nil && st.StartTime < asked {
		return &parentRef{id: req.Parent, pid: int(pid), pidfd: fd}, nil
	}
	if again, err := sc.tasks.initPID(ctx, sc.namespace, req.Parent); err != nil || again != pid {
		unix.Close(fd)
		return nil, parentError(req, child, "parent container is not running (its init pid %d has exited)", pid)
	}
	return &parentRef{id: req.Parent, pid: int(pid), pidfd: fd}, nil
}

// bootTicks is the time since boot in the clock ticks (USER_HZ, 100 a
// second on Linux) of a process's start time in /proc/<pid>/stat, rounded
// down, so that a start time below it is a start before this call.
func bootTicks() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, err
	}
	return uint64(ts.Sec)*100 + uint64(ts.Nsec)/10_000_000, nil
}

func (p *parentRef) close() { unix.Close(p.pidfd) }

// alive tells whether the pidfd's process still exists. Checked after the
// pins are made, it proves /proc/<pid> named the parent all along: a pid is
// not reused while its process (even a zombie) exists.
func (p *parentRef) alive() bool {
	return unix.PidfdSendSignal(p.pidfd, 0, nil, 0) == nil
}

func (p *parentRef) proc() string { return "/proc/" + strconv.Itoa(p.pid) }

// pinParent pins what the child will join of its parent under the child's
// state directory and returns the pinned paths. What it mounted before an
// error stays for the caller's cleanup, which owns the state directory.
func pinParent(ctx context.Context, req specmod.Request, child string, sc parentScope, need specmod.Needs) (specmod.Parent, error) {
	par := specmod.Parent{ID: req.Parent}
	if need == (specmod.Needs{}) {
		return par, nil
	}
	ref, err := openParent(ctx, req, child, sc)
	if err != nil {
		return par, err
	}
	defer ref.close()

	dir, err := openStateDir(sc.bundle, true)
	if err != nil {
		return par, fmt.Errorf("nsiso: %w", err)
	}
	defer dir.Close()
	if need.IPC {
		if par.IPCPath, err = pinNamespace(ref, specs.IPCNamespace, dir, pinIPCName); err != nil {
			return par, pinError(req, child, ref, "IPC namespace", err)
		}
	}
	if need.PID {
		if par.PIDPath, err = pinNamespace(ref, specs.PIDNamespace, dir, pinPIDName); err != nil {
			return par, pinError(req, child, ref, "PID namespace", err)
		}
	}
	if need.Shm {
		if par.ShmPath, err = pinShm(req, child, ref, sc, dir, pinShmName); err != nil {
			return par, pinError(req, child, ref, "/dev/shm", err)
		}
	}
	if !ref.alive() {
		return par, parentError(req, child, "parent container exited while this container was being created")
	}
	return par, nil
}

// pinError reports a failed pin; a parent that died meanwhile is the
// likely cause and the one a user can act on.
func pinError(req specmod.Request, child string, ref *parentRef, what string, err error) error {
	var pe *specmod.Error
	if errors.As(err, &pe) {
		return err
	}
	if !ref.alive() {
		return parentError(req, child, "parent container exited while this container was being created")
	}
	return parentError(req, child, "cannot pin the parent's %s: %v", what, err)
}

// pinNamespace bind-mounts the parent's namespace file onto name in the
// state directory, which keeps the namespace alive and identified for as
// long as the child needs it.
func pinNamespace(ref *parentRef, t specs.LinuxNamespaceType, dir *os.File, name string) (string, error) {
	src := filepath.Join(ref.proc(), "ns", string(t))
	want, err := hostns.Stat(src)
	if err != nil {
		return "", err
	}
	mp, err := makeMountPoint(dir, name, false)
	if err != nil {
		return "", err
	}
	defer mp.Close()
	if err := unix.Mount(src, beneath.FDPath(mp), "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind %s: %w", src, err)
	}
	if got, err := pinnedID(dir, name); err != nil || got != want {
		return "", fmt.Errorf("pinned %s is not %s", mp.Name(), src)
	}
	return mp.Name(), nil
}

// pinnedID is the file now mounted on name in the state directory.
func pinnedID(dir *os.File, name string) (hostns.FileID, error) {
	f, err := reopen(dir, name)
	if err != nil {
		return hostns.FileID{}, err
	}
	defer f.Close()
	return fileID(f)
}

// pinShm binds the parent's /dev/shm onto dst. A mount in another mount
// namespace cannot be bound from outside it, so the parent's /dev/shm must
// be a bind of a directory the host sees; and nsiso binds only those it
// knows to be a container's own: nsiso's tmpfs of a private parent (or the
// pin of a parent's own parent), or the pod /dev/shm CRI made for a parent
// sandbox. Which one the parent uses is read from its spec, opened beneath
// its root without symlinks, and checked against what the parent's init
// sees before and after the bind.
func pinShm(req specmod.Request, child string, ref *parentRef, sc parentScope, dir *os.File, name string) (string, error) {
	src, err := openParentShm(req, child, sc)
	if err != nil {
		return "", err
	}
	defer src.Close()
	want, err := fileID(src)
	if err != nil {
		return "", err
	}
	seen, err := parentSeesShm(ref)
	if err != nil {
		return "", parentError(req, child, "cannot read the parent's /dev/shm: %v", err)
	}
	if seen != want {
		return "", parentError(req, child, "the parent's /dev/shm is not the one its spec binds")
	}
	mp, err := makeMountPoint(dir, name, true)
	if err != nil {
		return "", err
	}
	defer mp.Close()
	if err := unix.Mount(beneath.FDPath(src), beneath.FDPath(mp), "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind %s: %w", src.Name(), err)
	}
	if got, err := pinnedID(dir, name); err != nil || got != want {
		return "", parentError(req, child, "the parent's /dev/shm changed while it was being pinned")
	}
	return mp.Name(), nil
}

// openParentShm opens, as an O_PATH handle, the host directory the parent's
// /dev/shm binds, refusing any source nsiso does not own.
func openParentShm(req specmod.Request, child string, sc parentScope) (*os.File, error) {
	data, err := beneath.ReadFile(sc.taskDir(), filepath.Join(req.Parent, "config.json"), maxSpecSize)
	if err != nil {
		return nil, parentError(req, child, "cannot read the parent's spec: %v", err)
	}
	var s struct {
		Mounts []specs.Mount `json:"mounts"`
	}
	if json.Unmarshal(data, &s) != nil {
		return nil, parentError(req, child, "the parent's spec is not OCI JSON")
	}
	m, ok := specmod.ShmMount(s.Mounts)
	if !ok || !specmod.IsBind(m) {
		return nil, parentError(req, child, "the parent's /dev/shm lives only inside its mount namespace, so it cannot be shared; start the parent with runtime %s and nsiso/ipc-mode=private, or give this container nsiso/ipc-mode=private", RuntimeName)
	}
	src := filepath.Clean(m.Source)
	own := filepath.Join(sc.taskDir(), req.Parent)
	for _, name := range []string{ownShmName, pinShmName} {
		if src == filepath.Join(stateDir(own), name) {
			return openDir(sc.taskDir(), filepath.Join(req.Parent, stateDirName, name))
		}
	}
	if pod, ok := criPodShm(sc, req.Parent); ok && src == filepath.Join(pod.root, pod.rel) {
		return openDir(pod.root, pod.rel)
	}
	if src == specmod.HostShmSource {
		// A parent on the host's /dev/shm: the child would share the
		// host's, which the node's rules then judge like any other.
		return openDir("/", "dev/shm")
	}
	return nil, parentError(req, child, "the parent's /dev/shm is a bind of %s, which is not the parent's own (nsiso shares only the /dev/shm it made for a private parent, a pod's, or the host's)", specmod.Truncate(src))
}

func openDir(root, rel string) (*os.File, error) {
	return beneath.Open(root, rel, unix.O_PATH|unix.O_DIRECTORY)
}

// parentSeesShm is the /dev/shm the parent's init sees, opened through its
// root without following a symlink the container may have put there.
func parentSeesShm(ref *parentRef) (hostns.FileID, error) {
	f, err := openDir(filepath.Join(ref.proc(), "root"), "dev/shm")
	if err != nil {
		return hostns.FileID{}, err
	}
	defer f.Close()
	return fileID(f)
}

func fileID(f *os.File) (hostns.FileID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return hostns.FileID{}, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	return hostns.FileID{Dev: st.Dev, Ino: st.Ino}, nil
}
