package shim

import (
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

// Limits on what nsiso reads of a parent. runc's state.json carries the
// container's whole libcontainer config, a config.json the whole spec; both
// are far smaller than these on any real node.
const (
	maxStateSize = 8 << 20
	maxSpecSize  = 16 << 20
)

// runcState is the part of runc's (libcontainer's) state.json nsiso reads:
// the parent's init pid and its start time, which tells a live init from a
// stranger that got its pid later.
type runcState struct {
	InitProcessPid   int    `json:"init_process_pid"`
	InitProcessStart uint64 `json:"init_process_start"`
}

// where is what a Create knows of the places a parent can be found: runc's
// state root and containerd's task directory for this containerd namespace.
type where struct {
	namespace string
	runcRoot  string // runc's root; its state for the namespace is below
	bundle    string // the child's bundle
}

// taskDir is containerd's directory of the namespace's bundles: a parent's
// bundle is a sibling of the child's.
func (w where) taskDir() string { return filepath.Dir(w.bundle) }

// parentRef is a parent container's init, held by a pidfd.
type parentRef struct {
	id    string
	pid   int
	pidfd int
}

// parentError is a rejection naming the parent as the user named it.
func parentError(req specmod.Request, child, format string, args ...any) error {
	return &specmod.Error{Container: child, Key: req.ParentKey, Value: req.Parent, Reason: fmt.Sprintf(format, args...)}
}

// openParent finds the parent's init through runc's state in the same runc
// root and containerd namespace the shim uses, so only a parent in the same
// containerd namespace is found, and holds it with a pidfd after checking
// that the pid still is that init. The state file is opened beneath runc's
// root without following symlinks and read through a limit; its content is
// never echoed.
func openParent(req specmod.Request, child string, w where) (*parentRef, error) {
	// Both are validated before, by containerd and ParseRequest; they
	// become path components here, so check again where it matters.
	if err := identifiers.Validate(w.namespace); err != nil {
		return nil, fmt.Errorf("nsiso: containerd namespace: %w", err)
	}
	if err := identifiers.Validate(req.Parent); err != nil {
		return nil, parentError(req, child, "not a containerd container ID")
	}
	data, err := beneath.ReadFile(w.runcRoot, filepath.Join(w.namespace, req.Parent, "state.json"), maxStateSize)
	if errors.Is(err, os.ErrNotExist) {
		return nil, parentError(req, child, "parent container has no task in this containerd namespace (it must exist and be running)")
	}
	if err != nil {
		return nil, parentError(req, child, "cannot read the parent's runc state: %v", err)
	}
	var st runcState
	if json.Unmarshal(data, &st) != nil {
		return nil, parentError(req, child, "the parent's runc state is not runc's JSON")
	}
	if st.InitProcessPid <= 0 {
		return nil, parentError(req, child, "parent container is not running")
	}
	fd, err := unix.PidfdOpen(st.InitProcessPid, 0)
	if err != nil {
		return nil, parentError(req, child, "parent container is not running (init pid %d: %v)", st.InitProcessPid, err)
	}
	stat, err := procfs.ReadStat(st.InitProcessPid)
	if err != nil || stat.StartTime != st.InitProcessStart {
		unix.Close(fd)
		return nil, parentError(req, child, "parent container is not running (its init pid %d has exited)", st.InitProcessPid)
	}
	return &parentRef{id: req.Parent, pid: st.InitProcessPid, pidfd: fd}, nil
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
func pinParent(req specmod.Request, child string, w where, need specmod.Needs) (specmod.Parent, error) {
	par := specmod.Parent{ID: req.Parent}
	if need == (specmod.Needs{}) {
		return par, nil
	}
	ref, err := openParent(req, child, w)
	if err != nil {
		return par, err
	}
	defer ref.close()

	dir := stateDir(w.bundle)
	if err := makeStateDir(dir); err != nil {
		return par, fmt.Errorf("nsiso: %w", err)
	}
	if need.IPC {
		if par.IPCPath, err = pinNamespace(ref, specs.IPCNamespace, filepath.Join(dir, pinIPCName)); err != nil {
			return par, pinError(req, child, ref, "IPC namespace", err)
		}
	}
	if need.PID {
		if par.PIDPath, err = pinNamespace(ref, specs.PIDNamespace, filepath.Join(dir, pinPIDName)); err != nil {
			return par, pinError(req, child, ref, "PID namespace", err)
		}
	}
	if need.Shm {
		if par.ShmPath, err = pinShm(req, child, ref, w, filepath.Join(dir, pinShmName)); err != nil {
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

// pinNamespace bind-mounts the parent's namespace file onto dst, which keeps
// the namespace alive and identified for as long as the child needs it.
func pinNamespace(ref *parentRef, t specs.LinuxNamespaceType, dst string) (string, error) {
	src := filepath.Join(ref.proc(), "ns", string(t))
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_RDONLY|unix.O_NOFOLLOW, 0o444)
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
// be a bind of a directory the host sees; and nsiso binds only those it
// knows to be a container's own: nsiso's tmpfs of a private parent (or the
// pin of a parent's own parent), or the pod /dev/shm CRI made for a parent
// sandbox. Which one the parent uses is read from its spec, opened beneath
// its root without symlinks, and checked against what the parent's init
// sees before and after the bind.
func pinShm(req specmod.Request, child string, ref *parentRef, w where, dst string) (string, error) {
	src, err := openParentShm(req, child, w)
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
	if err := os.Mkdir(dst, 0o700); err != nil {
		return "", err
	}
	if err := unix.Mount(beneath.FDPath(src), dst, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind %s: %w", src.Name(), err)
	}
	if got, err := hostns.Stat(dst); err != nil || got != want {
		return "", parentError(req, child, "the parent's /dev/shm changed while it was being pinned")
	}
	return dst, nil
}

// openParentShm opens, as an O_PATH handle, the host directory the parent's
// /dev/shm binds, refusing any source nsiso does not own.
func openParentShm(req specmod.Request, child string, w where) (*os.File, error) {
	data, err := beneath.ReadFile(w.taskDir(), filepath.Join(req.Parent, "config.json"), maxSpecSize)
	if err != nil {
		return nil, parentError(req, child, "cannot read the parent's spec: %v", err)
	}
	var s struct {
		Mounts []specs.Mount `json:"mounts"`
	}
	if json.Unmarshal(data, &s) != nil {
		return nil, parentError(req, child, "the parent's spec is not OCI JSON")
	}
	src := ""
	for i := len(s.Mounts) - 1; i >= 0; i-- {
		m := s.Mounts[i]
		if specmod.MountDest(m) != specmod.ShmPath {
			continue
		}
		if specmod.IsBind(m) {
			src = filepath.Clean(m.Source)
		}
		break
	}
	if src == "" {
		return nil, parentError(req, child, "the parent's /dev/shm lives only inside its mount namespace, so it cannot be shared; start the parent with runtime %s and nsiso/ipc-mode=private, or give this container nsiso/ipc-mode=private", RuntimeName)
	}
	own := filepath.Join(w.taskDir(), req.Parent)
	for _, name := range []string{ownShmName, pinShmName} {
		if src == filepath.Join(stateDir(own), name) {
			return openDir(w.taskDir(), filepath.Join(req.Parent, stateDirName, name))
		}
	}
	if pod, ok := criPodShm(w, req.Parent); ok && src == filepath.Join(pod.root, pod.rel) {
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
