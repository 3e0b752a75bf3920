package shim

import (
	"fmt"
	"path/filepath"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// fileID identifies a file across bind mounts: a namespace file's inode
// on nsfs, or a directory on its filesystem.
type fileID struct{ dev, ino uint64 }

func statID(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}

// hostChecker answers specmod's questions about the host. The host is pid
// 1's namespaces where they can be read, else the shim's own: a shim runs in
// the host's namespaces, and some sandboxes hide pid 1.
type hostChecker struct {
	once   sync.Once
	ns     map[specs.LinuxNamespaceType]fileID
	shm    fileID
	shmErr error
}

func (h *hostChecker) load() {
	h.once.Do(func() {
		h.ns = map[specs.LinuxNamespaceType]fileID{}
		for _, t := range []specs.LinuxNamespaceType{specs.IPCNamespace, specs.PIDNamespace} {
			id, err := statID(filepath.Join("/proc/1/ns", string(t)))
			if err != nil {
				id, err = statID(filepath.Join("/proc/self/ns", string(t)))
			}
			if err == nil {
				h.ns[t] = id
			}
		}
		h.shm, h.shmErr = statID("/dev/shm")
	})
}

// IsHostNamespace compares the namespace file at path with the host's.
func (h *hostChecker) IsHostNamespace(t specs.LinuxNamespaceType, path string) (bool, error) {
	h.load()
	id, err := statID(path)
	if err != nil {
		// pid 1's namespaces name the host whether or not this process
		// may look at them; runc would fail on them too, but the user
		// deserves the policy's answer, not runc's.
		if filepath.Clean(path) == filepath.Join("/proc/1/ns", string(t)) {
			return true, nil
		}
		return false, err
	}
	ref, ok := h.ns[t]
	if !ok {
		return false, fmt.Errorf("cannot read the host's %s namespace", t)
	}
	return id == ref, nil
}

// IsHostShm tells whether source is the host's /dev/shm, through any bind.
func (h *hostChecker) IsHostShm(source string) (bool, error) {
	if filepath.Clean(source) == "/dev/shm" {
		return true, nil
	}
	h.load()
	if h.shmErr != nil {
		return false, h.shmErr
	}
	id, err := statID(source)
	if err != nil {
		return false, err
	}
	return id == h.shm, nil
}
