package specmod

import (
	"fmt"
	"path"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Config keys of the node rules, named in rejections so an operator can find
// the switch that caused one.
const (
	RuleDisallowHostIPC = "disallow_sharing_host_ipc_namespace"
	RuleDisallowHostPID = "disallow_sharing_host_pid_namespace"
	RuleDefaultShmSize  = "default_container_shm_size"
	RuleMaxShmSize      = "max_container_shm_size"
)

// Policy is the node's rules, from the operator's config.
type Policy struct {
	// DisallowHostIPC rejects any container whose final spec shares the
	// host's IPC namespace or exposes the host's /dev/shm.
	DisallowHostIPC bool
	// DisallowHostPID rejects any container whose final spec shares the
	// host's PID namespace.
	DisallowHostPID bool
	// DefaultShmSize sizes a container's own /dev/shm when the container
	// does not ask; 0 keeps the client's size.
	DefaultShmSize int64
	// MaxShmSize caps every /dev/shm a container or pod owns; 0 means no
	// cap.
	MaxShmSize int64
	// MaxSysvShmSize caps the System V shared memory of every IPC
	// namespace nsiso lets runc create; 0 means MaxShmSize.
	MaxSysvShmSize int64
	// PageSize is the kernel's page size, the unit of kernel.shmall; 0
	// means DefaultPageSize. The caller reads it, so the engine does no I/O.
	PageSize int64
}

// Parent holds the parent container's namespaces as the caller pinned them,
// so that what the child joins cannot change between lookup and clone.
type Parent struct {
	ID string
	// IPCPath and PIDPath are namespace files; ShmPath is a directory
	// holding the parent's /dev/shm. Each is set when Needs asked for it.
	IPCPath string
	PIDPath string
	ShmPath string
}

// HostChecker tells whether a namespace file is the host's and whether a
// mount source exposes the host's /dev/shm. It is the engine's only window
// on the running system.
type HostChecker interface {
	IsHostNamespace(t specs.LinuxNamespaceType, path string) (bool, error)
	// ExposesHostShm tells whether mounting source (with its submounts
	// when recursive) would show the host's /dev/shm, or anything on its
	// file system, inside a container.
	ExposesHostShm(source string, recursive bool) (bool, error)
}

// Needs says which of the parent container's namespaces (and whether its
// /dev/shm) a request joins, so the caller pins only those.
type Needs struct {
	IPC bool
	Shm bool
	PID bool
}

// ParentNeeds reports what Rewrite will need from the parent container of a
// nested request; a top-level container needs nothing (its parent is the
// host, which is always there).
func ParentNeeds(s *specs.Spec, r Request) Needs {
	if !r.Nested() {
		return Needs{}
	}
	var n Needs
	switch r.IPC {
	case ModeShareParent:
		n.IPC, n.Shm = true, true
	case ModeUnset:
		ns, ok := namespace(s, specs.IPCNamespace)
		n.IPC = ok && ns.Path == ""
	}
	n.PID = r.PID == ModeShareParent
	return n
}

// Input is everything Rewrite decides from.
type Input struct {
	ID      string
	Request Request
	Policy  Policy
	// Parent must hold the paths ParentNeeds asked for when the request is
	// nested.
	Parent Parent
	Host   HostChecker
	// Bundle is the container's bundle directory, against which runc
	// resolves relative bind sources.
	Bundle string
	// OwnShmDir is the host directory where the shim will mount the
	// container's own /dev/shm tmpfs when the plan asks for one.
	OwnShmDir string
	// PodShmPath is the /dev/shm containerd's CRI made for this very
	// sandbox, or "" when the container is not a CRI pod sandbox in CRI's
	// containerd namespace. It is the only tmpfs a plan ever resizes.
	PodShmPath string
	// ClientPaths maps a namespace type whose path in the spec the caller
	// replaced by a handle it holds open (judged and joined as one file) to
	// the path the client wrote, which refusals name.
	ClientPaths map[specs.LinuxNamespaceType]string
}

// clientPath is the path the client wrote for a namespace whose spec path
// is p.
func (in Input) clientPath(t specs.LinuxNamespaceType, p string) string {
	if c, ok := in.ClientPaths[t]; ok {
		return c
	}
	return p
}

// Plan is what Rewrite decided beyond the spec edits it made: the side
// effects the shim carries out before runc runs. Every field is checked
// with the spec as a whole, so the shim has nothing left to decide.
type Plan struct {
	// OwnShm is the container's own /dev/shm tmpfs, to be mounted on the
	// host at Input.OwnShmDir, which the spec now binds; nil for none.
	OwnShm *Tmpfs
	// PodShm is the resize of this sandbox's pod /dev/shm; nil for none.
	PodShm *PodShm
}

// Tmpfs is a tmpfs to mount: its options as a spec gives them (flags and
// data mixed, as runc parses them) and its size in bytes.
type Tmpfs struct {
	Options []string
	Size    int64
}

// PodShm is a resize of the /dev/shm that containerd's CRI plugin mounts on
// the host for a whole pod and binds into the sandbox and its containers
// (Kubernetes has no field for its size; containerd makes it 64Mi).
type PodShm struct {
	Path string
	Size int64
}

// cause records which setting produced the final namespace or mount, so a
// rejection names what the user wrote rather than what nsiso derived.
type cause struct {
	key, value, why string
}

// decision is the outcome of decide: the edits, the cause of each result
// and the side effects.
type decision struct {
	opts          []Opt
	ipc, pid, shm cause
	// shmSize names the setting that sized the container's /dev/shm.
	shmSize *cause
	// ownShm moves the container's own tmpfs to the host.
	ownShm bool
	podShm *PodShm
}

// Rewrite changes s in place to follow the request and the node's policy,
// checks the final spec against the node's rules, and returns the side
// effects the caller must carry out. On error s may be partly changed and
// must not be used.
func Rewrite(s *specs.Spec, in Input) (Plan, error) {
	d, err := decide(s, in)
	if err != nil {
		return Plan{}, err
	}
	if err := Apply(s, d.opts...); err != nil {
		return Plan{}, err
	}
	if err := capShmSize(s, in, d); err != nil {
		return Plan{}, err
	}
	var p Plan
	if d.ownShm {
		p.OwnShm = moveShmToHost(s, in.OwnShmDir)
	}
	p.PodShm = d.podShm
	if err := enforce(s, in, d, p); err != nil {
		return Plan{}, err
	}
	if err := limitSysV(s, in, d.ipc); err != nil {
		return Plan{}, err
	}
	return p, nil
}

func decide(s *specs.Spec, in Input) (decision, error) {
	r := in.Request
	if r.Nested() {
		need := ParentNeeds(s, r)
		if need.IPC && in.Parent.IPCPath == "" || need.Shm && in.Parent.ShmPath == "" ||
			need.PID && in.Parent.PIDPath == "" {
			return decision{}, fmt.Errorf("specmod: parent %q of %q was not pinned", r.Parent, in.ID)
		}
	}
	if err := CheckNamespacePaths(in.ID, in.Request, s); err != nil {
		return decision{}, err
	}
	var d decision
	if err := decideIPC(s, in, &d); err != nil {
		return decision{}, err
	}
	decidePID(s, in, &d)
	return d, nil
}

func parentWhy(r Request) string {
	if r.Nested() {
		return fmt.Sprintf("parent container %q", r.Parent)
	}
	return "the parent of a top-level container is the host"
}

// decideIPC decides the IPC namespace and /dev/shm together: POSIX shared
// memory lives in /dev/shm, so the two must always belong together.
func decideIPC(s *specs.Spec, in Input, d *decision) error {
	r := in.Request
	clientIPC, hasIPC := namespace(s, specs.IPCNamespace)
	i := shmMountIndex(s.Mounts)
	podShm := r.Sandbox && in.PodShmPath != "" && i >= 0 && IsBind(s.Mounts[i]) &&
		path.Clean(s.Mounts[i].Source) == path.Clean(in.PodShmPath)
	switch r.IPC {
	case ModeShareParent:
		d.ipc = cause{r.key(AnnotationIPCMode), string(ModeShareParent), parentWhy(r)}
		d.shm = d.ipc
		if r.Nested() {
			d.opts = append(d.opts, WithNamespacePath(specs.IPCNamespace, in.Parent.IPCPath), WithShmBind(in.Parent.ShmPath))
		} else {
			d.opts = append(d.opts, WithHostNamespace(specs.IPCNamespace), WithShmBind(HostShmSource))
		}
		return nil
	case ModePrivate:
		d.ipc = cause{r.key(AnnotationIPCMode), string(ModePrivate), ""}
		d.opts = append(d.opts, WithNewNamespace(specs.IPCNamespace))
		if podShm {
			// A pod's private /dev/shm is the one CRI made for the whole
			// pod, shared with its containers.
			d.shm = cause{"mounts./dev/shm.source", s.Mounts[i].Source, ""}
			return sizePodShm(in, d)
		}
		if r.Sandbox && i >= 0 && IsBind(s.Mounts[i]) {
			// A sandbox's /dev/shm is its pod's, whatever CRI bound
			// (the host's, for a hostIPC pod): the rules judge it,
			// and nothing but this pod's own is ever resized.
			d.shm = cause{"mounts./dev/shm.source", s.Mounts[i].Source, ""}
			return nil
		}
		// Only a private container's /dev/shm can be shared with a child,
		// and only from the host: a tmpfs runc mounts lives in the
		// container's mount namespace, where nothing can bind it.
		d.ownShm = true
		d.opts = append(d.opts, WithShmTmpfs(ownShmSize(in, d)))
		return nil
	}
	switch {
	case !hasIPC:
		d.ipc = cause{"linux.namespaces", "no ipc entry", "the spec leaves the container in the runtime's IPC namespace"}
	case clientIPC.Path != "":
		d.ipc = cause{"linux.namespaces.ipc.path", in.clientPath(specs.IPCNamespace, clientIPC.Path), ""}
	case r.Nested():
		d.ipc = cause{r.ParentKey, r.Parent, "with nsiso/ipc-mode unset a nested container joins its parent's IPC namespace"}
		d.opts = append(d.opts, WithNamespacePath(specs.IPCNamespace, in.Parent.IPCPath))
	default:
		d.ipc = cause{AnnotationIPCMode, "", ""}
	}
	switch {
	case podShm:
		d.shm = cause{"mounts./dev/shm.source", s.Mounts[i].Source, ""}
		return sizePodShm(in, d)
	case i >= 0 && IsBind(s.Mounts[i]):
		// The client already chose whose /dev/shm to see (CRI's pod
		// /dev/shm, for one); the rules still apply to it.
		d.shm = cause{"mounts./dev/shm.source", s.Mounts[i].Source, ""}
	case i < 0 && s.Root != nil && path.Clean(s.Root.Path) == "/":
		// A container running on the host's root sees the host's
		// /dev/shm unless something is mounted over it.
		d.shm = cause{"root.path", s.Root.Path, "a container on the host's root sees the host's /dev/shm"}
	default:
		// Every other container keeps runc's tmpfs inside it, exactly as
		// under runc.v2: each host mount lengthens every later scan of
		// the host's mount table on a busy node.
		d.opts = append(d.opts, WithShmTmpfs(ownShmSize(in, d)))
	}
	return nil
}

// ownShmSize is the size of a container's own tmpfs: its request, else the
// node's default, else (0) the client's.
func ownShmSize(in Input, d *decision) int64 {
	if in.Request.ShmSize > 0 {
		d.shmSize = &cause{in.Request.key(AnnotationShmSize), FormatSize(in.Request.ShmSize), ""}
		return in.Request.ShmSize
	}
	if in.Policy.DefaultShmSize > 0 {
		d.shmSize = &cause{RuleDefaultShmSize, FormatSize(in.Policy.DefaultShmSize), ""}
	}
	return in.Policy.DefaultShmSize
}

// sizePodShm plans the resize of this sandbox's pod /dev/shm: the pod's
// nsiso/shm-size, else the node's default; nothing when neither is set.
func sizePodShm(in Input, d *decision) error {
	size := ownShmSize(in, d)
	if size == 0 {
		return nil
	}
	if max := in.Policy.MaxShmSize; max > 0 && size > max {
		return reject(in.ID, in.Request, d.shmSize.key, d.shmSize.value, "pod /dev/shm of %s is over %s=%s", FormatSize(size), RuleMaxShmSize, FormatSize(max))
	}
	d.podShm = &PodShm{Path: path.Clean(in.PodShmPath), Size: size}
	return nil
}

func decidePID(s *specs.Spec, in Input, d *decision) {
	r := in.Request
	switch r.PID {
	case ModeShareParent:
		d.pid = cause{r.key(AnnotationPIDMode), string(ModeShareParent), parentWhy(r)}
		if r.Nested() {
			d.opts = append(d.opts, WithNamespacePath(specs.PIDNamespace, in.Parent.PIDPath))
		} else {
			d.opts = append(d.opts, WithHostNamespace(specs.PIDNamespace))
		}
	case ModePrivate:
		d.pid = cause{r.key(AnnotationPIDMode), string(ModePrivate), ""}
		d.opts = append(d.opts, WithNewNamespace(specs.PIDNamespace))
	default:
		if ns, ok := namespace(s, specs.PIDNamespace); ok {
			d.pid = cause{"linux.namespaces.pid.path", in.clientPath(specs.PIDNamespace, ns.Path), ""}
		} else {
			d.pid = cause{"linux.namespaces", "no pid entry", "the spec leaves the container in the runtime's PID namespace"}
		}
	}
}
