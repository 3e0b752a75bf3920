package audit

import (
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/specmod"
)

// NSISORuntime is the runtime name under which nsiso's annotations decide
// what a container's spec becomes (see ReadSpec).
const NSISORuntime = "io.containerd.nsiso.v1"

// What a spec asks for one namespace (SpecNS.Kind).
const (
	// SpecHost: no entry of this type; the container stays in the
	// runtime's namespace, which is the host's.
	SpecHost = "host"
	// SpecNew: an entry without a path, a namespace of its own.
	SpecNew = "new"
	// SpecPath: an entry that joins the namespace at a path.
	SpecPath = "path"
	// SpecParent: nsiso joins the container's parent's namespace.
	SpecParent = "parent"
)

// What a spec puts on /dev/shm (SpecShm.Kind).
const (
	// ShmSpecHost: the host's /dev/shm, bound by its path, or seen through
	// the host's root without anything mounted over it.
	ShmSpecHost = "host"
	// ShmSpecTmpfs: a tmpfs of its own.
	ShmSpecTmpfs = "tmpfs"
	// ShmSpecNone: nothing the runtime mounts; whatever the image has.
	ShmSpecNone = "none"
	// ShmSpecBind: a bind of a path on the host.
	ShmSpecBind = "bind"
	// ShmSpecParent: nsiso binds the container's parent's /dev/shm.
	ShmSpecParent = "parent"
)

// SpecNS is what a spec asks for one namespace type.
type SpecNS struct {
	Kind string
	// Path is the path of a SpecPath entry; ID is the namespace it names
	// now, and Resolved is false when it names none (the process is gone,
	// or the path is not absolute).
	Path     string
	ID       hostns.FileID
	Resolved bool
}

// SpecShm is what a spec puts on /dev/shm.
type SpecShm struct {
	Kind string
	// Source is the host path of a ShmSpecBind; Dev is the device of the
	// file system there now, and Resolved is false when there is none.
	Source   string
	Dev      uint64
	Resolved bool
}

// SpecFacts is what a container's spec asks for, for a container without a
// live task: what starting it would do.
type SpecFacts struct {
	IPC, PID SpecNS
	Shm      SpecShm
	// Parent is the container the spec names as its parent, as the
	// runtime reads it: a Kubernetes pod's sandbox for a pod's container
	// under any runtime, nsiso/parent under nsiso. Empty for none.
	Parent string
	// ParentIsSandbox tells that Parent is the pod sandbox CRI's
	// annotation names (see Attribute), not nsiso/parent.
	ParentIsSandbox bool
}

// Placeholders that stand for the parent's namespaces and /dev/shm while
// specmod rewrites a spec as the shim would; the shim puts pinned paths
// there. The NUL keeps them apart from any path a spec can name.
const (
	parentIPCMark = "\x00nsiso-audit:parent-ipc"
	parentPIDMark = "\x00nsiso-audit:parent-pid"
	parentShmMark = "\x00nsiso-audit:parent-shm"
	// ownShmMark stands for the tmpfs the shim mounts on the host for a
	// private container.
	ownShmMark = "\x00nsiso-audit:own-shm"
)

// ReadSpec tells what a container's spec asks for. Under nsiso the spec is
// first rewritten by specmod as the shim rewrites it at every start (the
// node's rules aside: whether nsiso would refuse the container is not
// the audit's question, what it asks for is). stat names what a path on the
// host is now (hostns.Stat); it is given only absolute paths.
//
// A container's record keeps the spec its client made; a runtime may still
// change it at start, and a runtime other than runc and nsiso may read it
// differently. The verdict on a container that is not running can only
// rest on the spec, as the CIS benchmark's `docker inspect` of the
// configuration does.
func ReadSpec(id, runtime string, spec *specs.Spec, stat func(string) (hostns.FileID, error)) SpecFacts {
	var out SpecFacts
	s := spec
	req, reqErr := specmod.ParseRequest(id, spec.Annotations)
	if reqErr == nil && (req.ParentKey == specmod.AnnotationCRISandboxID || runtime == NSISORuntime) {
		out.Parent = req.Parent
		out.ParentIsSandbox = req.ParentKey == specmod.AnnotationCRISandboxID
	}
	if runtime == NSISORuntime && reqErr == nil {
		// nsiso refuses a spec whose annotations do not parse; then the
		// client's spec is all there is to report.
		rewritten := cloneSpec(spec)
		in := specmod.Input{ID: id, Request: req, OwnShmDir: ownShmMark, Parent: specmod.Parent{
			ID: req.Parent, IPCPath: parentIPCMark, PIDPath: parentPIDMark, ShmPath: parentShmMark}}
		if _, err := specmod.Rewrite(rewritten, in); err == nil {
			s = rewritten
		}
	}
	out.IPC = readNS(s, specs.IPCNamespace, parentIPCMark, stat)
	out.PID = readNS(s, specs.PIDNamespace, parentPIDMark, stat)
	out.Shm = readShm(s, stat)
	return out
}

func readNS(s *specs.Spec, t specs.LinuxNamespaceType, parentMark string, stat func(string) (hostns.FileID, error)) SpecNS {
	var entry *specs.LinuxNamespace
	if s.Linux != nil {
		for i := range s.Linux.Namespaces {
			// runc uses the first entry of a type.
			if s.Linux.Namespaces[i].Type == t {
				entry = &s.Linux.Namespaces[i]
				break
			}
		}
	}
	switch {
	case entry == nil:
		return SpecNS{Kind: SpecHost}
	case entry.Path == "":
		return SpecNS{Kind: SpecNew}
	case entry.Path == parentMark:
		return SpecNS{Kind: SpecParent}
	}
	n := SpecNS{Kind: SpecPath, Path: entry.Path}
	if filepath.IsAbs(entry.Path) {
		if id, err := stat(entry.Path); err == nil {
			n.ID, n.Resolved = id, true
		}
	}
	return n
}

// readShm follows the mounts in order, as runc makes them: a later mount on
// /dev hides an earlier one on /dev/shm, and a bind of a directory on /dev
// brings that directory's shm with it.
func readShm(s *specs.Spec, stat func(string) (hostns.FileID, error)) SpecShm {
	var sh SpecShm
	mounted := false
	for _, m := range s.Mounts {
		dest := specmod.MountDest(m)
		switch dest {
		case specmod.ShmPath:
		case "/dev", "/":
			// A mount over /dev/shm's parent: a tmpfs or a device file
			// system hides whatever was there; a bind shows the source's
			// own shm (an rbind with whatever is mounted on it).
			if !specmod.IsBind(m) {
				mounted = false
				continue
			}
			rel, _ := filepath.Rel(dest, specmod.ShmPath)
			m = specs.Mount{Type: "bind", Source: filepath.Join(m.Source, rel)}
		default:
			continue
		}
		mounted = true
		switch {
		case m.Source == parentShmMark:
			sh = SpecShm{Kind: ShmSpecParent}
		case m.Source == ownShmMark:
			sh = SpecShm{Kind: ShmSpecTmpfs}
		case specmod.IsBind(m):
			sh = SpecShm{Kind: ShmSpecBind, Source: m.Source}
		default:
			sh = SpecShm{Kind: ShmSpecTmpfs}
		}
	}
	switch {
	case !mounted && s.Root != nil && filepath.Clean(s.Root.Path) == "/":
		// A container on the host's root sees the host's /dev/shm.
		return SpecShm{Kind: ShmSpecHost}
	case !mounted:
		return SpecShm{Kind: ShmSpecNone}
	case sh.Kind != ShmSpecBind:
		return sh
	case filepath.Clean(sh.Source) == specmod.HostShmSource:
		return SpecShm{Kind: ShmSpecHost, Source: sh.Source}
	}
	if filepath.IsAbs(sh.Source) {
		if id, err := stat(sh.Source); err == nil {
			sh.Dev, sh.Resolved = id.Dev, true
		}
	}
	return sh
}

// cloneSpec copies the parts of a spec that specmod rewrites, so that the
// caller's spec stays as the client made it.
func cloneSpec(s *specs.Spec) *specs.Spec {
	c := *s
	c.Mounts = append([]specs.Mount(nil), s.Mounts...)
	if s.Linux != nil {
		l := *s.Linux
		l.Namespaces = append([]specs.LinuxNamespace(nil), s.Linux.Namespaces...)
		c.Linux = &l
	}
	return &c
}
