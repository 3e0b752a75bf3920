package shim

import (
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/specmod"
)

// heldNamespaces are the namespace files a client's spec names, held open
// from the moment nsiso judges them until runc has joined them: the spec
// then names the handle (/proc/<shim>/fd/<n>), not the path, so a symlink
// the client flips after the judgement changes nothing.
type heldNamespaces struct {
	files []*os.File
	// paths maps each type held to the path the client wrote.
	paths map[specs.LinuxNamespaceType]string
}

// holdNamespaces opens every namespace path of a judged type in s, as runc
// would open it (following symlinks), and points the spec at the handle.
// A path that cannot be opened is left as it is: the rules judge it by
// name (the host's pid 1, which this process may not open) or refuse it,
// and runc would fail on it. A path that opens to anything but a namespace
// file is refused, naming the container id and req's pod.
func holdNamespaces(id string, req specmod.Request, s *specs.Spec, p specmod.Policy) (*heldNamespaces, error) {
	h := &heldNamespaces{}
	if s.Linux == nil {
		return h, nil
	}
	for i, n := range s.Linux.Namespaces {
		if n.Path == "" || !filepath.IsAbs(n.Path) || !p.JudgesNamespace(n.Type) {
			continue
		}
		f, err := os.OpenFile(n.Path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		var fs unix.Statfs_t
		if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
			f.Close()
			h.close()
			return nil, &specmod.Error{Container: id, Pod: req.Pod, Key: "linux.namespaces." + string(n.Type) + ".path", Value: n.Path, Reason: "not a namespace file"}
		}
		h.files = append(h.files, f)
		if h.paths == nil {
			h.paths = map[specs.LinuxNamespaceType]string{}
		}
		h.paths[n.Type] = n.Path
		s.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
	}
	return h, nil
}

// close lets the namespaces go; runc has joined them, or will not.
func (h *heldNamespaces) close() {
	if h == nil {
		return
	}
	for _, f := range h.files {
		f.Close()
	}
	h.files = nil
}
