// Package hostns tells whether a namespace file or a /dev/shm is the host's,
// by comparing device and inode numbers, which a bind mount preserves.
//
// The host is pid 1's namespaces where they can be read, else the calling
// process's own: a containerd shim and a node agent run in the host's
// namespaces, and some sandboxes hide pid 1's.
package hostns

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// FileID identifies a file across bind mounts: a namespace file's inode
// on nsfs, or a directory on its filesystem.
type FileID struct{ Dev, Ino uint64 }

// Stat returns the FileID of path, following symlinks (as /proc/<pid>/ns/*
// links must be followed).
func Stat(path string) (FileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return FileID{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return FileID{Dev: st.Dev, Ino: st.Ino}, nil
}

// Checker answers questions about the host's namespaces and /dev/shm. It
// reads each fact about the host once, on first use, and only the facts a
// question needs: a shim asks a handful of questions once in its life, so
// what it never asks about is never read. The zero value is ready to use.
type Checker struct {
	mu sync.Mutex
	ns map[specs.LinuxNamespaceType]hostNS

	shmOnce sync.Once
	shm     FileID
	shmErr  error
	// shmMount tells whether the host's /dev/shm is a file system of its
	// own (the usual tmpfs), so that "on its file system" means its device.
	shmMount bool
	// shmAbove are the directories above the host's /dev/shm (its real
	// path's parents up to /), whose recursive binds carry it along.
	shmAbove []FileID
}

type hostNS struct {
	id FileID
	ok bool
}

// hostNamespace reads the host's namespace of type t once.
func (h *Checker) hostNamespace(t specs.LinuxNamespaceType) (FileID, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n, ok := h.ns[t]; ok {
		return n.id, n.ok
	}
	id, err := Stat(filepath.Join("/proc/1/ns", string(t)))
	if err != nil {
		id, err = Stat(filepath.Join("/proc/self/ns", string(t)))
	}
	if h.ns == nil {
		h.ns = map[specs.LinuxNamespaceType]hostNS{}
	}
	h.ns[t] = hostNS{id: id, ok: err == nil}
	return id, err == nil
}

// loadShm reads the host's /dev/shm once.
func (h *Checker) loadShm() {
	h.shmOnce.Do(func() {
		h.shm, h.shmErr = Stat("/dev/shm")
		real, err := filepath.EvalSymlinks("/dev/shm")
		if err != nil {
			if h.shmErr == nil {
				h.shmErr = err
			}
			return
		}
		for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
			id, err := Stat(dir)
			if err != nil {
				h.shmErr = err
				return
			}
			h.shmAbove = append(h.shmAbove, id)
			if dir == "/" {
				break
			}
		}
		h.shmMount = h.shmErr == nil && h.shm.Dev != h.shmAbove[0].Dev
	})
}

// Namespace returns the host's namespace of type t.
func (h *Checker) Namespace(t specs.LinuxNamespaceType) (FileID, error) {
	id, ok := h.hostNamespace(t)
	if !ok {
		return FileID{}, fmt.Errorf("cannot read the host's %s namespace", t)
	}
	return id, nil
}

// Shm returns the host's /dev/shm.
func (h *Checker) Shm() (FileID, error) {
	h.loadShm()
	return h.shm, h.shmErr
}

// IsHostNamespace compares the namespace file at path with the host's.
func (h *Checker) IsHostNamespace(t specs.LinuxNamespaceType, path string) (bool, error) {
	id, err := Stat(path)
	if err != nil {
		// pid 1's namespaces name the host whether or not this process
		// may look at them; runc would fail on them too, but the user
		// deserves the policy's answer, not runc's.
		if filepath.Clean(path) == filepath.Join("/proc/1/ns", string(t)) {
			return true, nil
		}
		return false, err
	}
	ref, ok := h.hostNamespace(t)
	if !ok {
		return false, fmt.Errorf("cannot read the host's %s namespace", t)
	}
	return id == ref, nil
}

// ExposesHostShm tells whether mounting source into a container (with its
// submounts when recursive, as rbind does) shows the host's /dev/shm or
// anything on its file system there. Symlinks in source are followed, as
// the runtime follows them when it mounts.
func (h *Checker) ExposesHostShm(source string, recursive bool) (bool, error) {
	h.loadShm()
	if h.shmErr != nil {
		return false, h.shmErr
	}
	var st unix.Stat_t
	if err := unix.Stat(source, &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", source, err)
	}
	id := FileID{Dev: st.Dev, Ino: st.Ino}
	if id == h.shm || h.shmMount && id.Dev == h.shm.Dev {
		return true, nil
	}
	if !h.shmMount {
		// /dev/shm is a plain directory of the file system above it:
		// only what lies beneath it is its content.
		real, err := filepath.EvalSymlinks(source)
		if err != nil {
			return false, err
		}
		shm, err := filepath.EvalSymlinks("/dev/shm")
		if err != nil {
			return false, err
		}
		if strings.HasPrefix(real+"/", shm+"/") {
			return true, nil
		}
		// A plain bind of a directory above it shows it too.
		recursive = true
	}
	if recursive {
		for _, above := range h.shmAbove {
			if id == above {
				return true, nil
			}
		}
	}
	return false, nil
}
