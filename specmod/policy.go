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
	RuleMaxShmSize      = "max_container_shm_size"
)

// Policy is the node's rules, from the operator's config.
type Policy struct {
	// DisallowHostIPC rejects any container whose final spec shares the
	// host's IPC namespace or binds the host's /dev/shm.
	DisallowHostIPC bool
	// DisallowHostPID rejects any container whose final spec shares the
	// host's PID namespace.
	DisallowHostPID bool
	// DefaultShmSize sizes a container's own /dev/shm when the container
	// does not ask; 0 keeps the client's size.
	DefaultShmSize int64
	// MaxShmSize caps the size of a container's own /dev/shm; 0 means no cap.
	MaxShmSize int64
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

// HostChecker tells whether a namespace file or a /dev/shm source is the
// host's. It is the engine's only window on the running system.
type HostChecker interface {
	IsHostNamespace(t specs.LinuxNamespaceType, path string) (bool, error)
	IsHostShm(source string) (bool, error)
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
}

// cause records which setting produced the final namespace or mount, so a
// rejection names what the user wrote rather than what nsiso derived.
type cause struct {
	key, value, why string
}

// plan is the outcome of Decide: the edits, and the cause of each result.
type plan struct {
	opts          []Opt
	ipc, pid, shm cause
	shmSizeCause  *cause
}

// Rewrite changes s in place to follow the request and the node's policy,
// then checks the final spec against the node's rules. On error s may be
// partly changed and must not be used.
func Rewrite(s *specs.Spec, in Input) error {
	p, err := decide(s, in)
	if err != nil {
		return err
	}
	if err := Apply(s, p.opts...); err != nil {
		return err
	}
	return enforce(s, in, p)
}

func decide(s *specs.Spec, in Input) (plan, error) {
	var p plan
	r := in.Request
	parentWhy := "the parent of a top-level container is the host"
	if r.Nested() {
		parentWhy = fmt.Sprintf("parent container %q", r.Parent)
	}
	if r.Nested() {
		need := ParentNeeds(s, r)
		if need.IPC && in.Parent.IPCPath == "" || need.Shm && in.Parent.ShmPath == "" ||
			need.PID && in.Parent.PIDPath == "" {
			return p, fmt.Errorf("specmod: parent %q of %q was not pinned", r.Parent, in.ID)
		}
	}

	// IPC namespace and /dev/shm.
	clientIPC, hasIPC := namespace(s, specs.IPCNamespace)
	switch r.IPC {
	case ModeShareParent:
		p.ipc = cause{r.key(AnnotationIPCMode), string(ModeShareParent), parentWhy}
		p.shm = p.ipc
		if r.Nested() {
			p.opts = append(p.opts, WithNamespacePath(specs.IPCNamespace, in.Parent.IPCPath), WithShmBind(in.Parent.ShmPath))
		} else {
			p.opts = append(p.opts, WithHostNamespace(specs.IPCNamespace), WithShmBind(HostShmSource))
		}
	case ModePrivate:
		p.ipc = cause{r.key(AnnotationIPCMode), string(ModePrivate), ""}
		p.opts = append(p.opts, WithNewNamespace(specs.IPCNamespace))
		if i := shmMountIndex(s); r.Sandbox && i >= 0 && isBind(s.Mounts[i]) {
			// A pod's private /dev/shm is the one CRI made for the whole
			// pod; SandboxShm sizes it.
			p.shm = cause{"mounts./dev/shm.source", s.Mounts[i].Source, ""}
			break
		}
		size := r.ShmSize
		if size > 0 {
			p.shmSizeCause = &cause{r.key(AnnotationShmSize), FormatSize(size), ""}
		} else {
			size = in.Policy.DefaultShmSize
		}
		p.opts = append(p.opts, WithShmTmpfs(size))
	case ModeUnset:
		switch {
		case !hasIPC:
			p.ipc = cause{"linux.namespaces", "no ipc entry", "the spec leaves the container in the runtime's IPC namespace"}
		case clientIPC.Path != "":
			p.ipc = cause{"linux.namespaces.ipc.path", clientIPC.Path, ""}
		case r.Nested():
			p.ipc = cause{r.ParentKey, r.Parent, "with nsiso/ipc-mode unset a nested container joins its parent's IPC namespace"}
			p.opts = append(p.opts, WithNamespacePath(specs.IPCNamespace, in.Parent.IPCPath))
		default:
			p.ipc = cause{AnnotationIPCMode, "", ""}
		}
		i := shmMountIndex(s)
		switch {
		case i >= 0 && isBind(s.Mounts[i]):
			// The client already chose whose /dev/shm to see (CRI's pod
			// /dev/shm, for one); the rules below still apply to it.
			p.shm = cause{"mounts./dev/shm.source", s.Mounts[i].Source, ""}
		case i < 0 && s.Root != nil && path.Clean(s.Root.Path) == "/":
			// A container running on the host's root sees the host's
			// /dev/shm unless something is mounted over it.
			p.shm = cause{"root.path", s.Root.Path, "a container on the host's root sees the host's /dev/shm"}
		default:
			p.opts = append(p.opts, WithShmTmpfs(in.Policy.DefaultShmSize))
		}
	}

	// PID namespace.
	clientPID, hasPID := namespace(s, specs.PIDNamespace)
	switch r.PID {
	case ModeShareParent:
		p.pid = cause{r.key(AnnotationPIDMode), string(ModeShareParent), parentWhy}
		if r.Nested() {
			p.opts = append(p.opts, WithNamespacePath(specs.PIDNamespace, in.Parent.PIDPath))
		} else {
			p.opts = append(p.opts, WithHostNamespace(specs.PIDNamespace))
		}
	case ModePrivate:
		p.pid = cause{r.key(AnnotationPIDMode), string(ModePrivate), ""}
		p.opts = append(p.opts, WithNewNamespace(specs.PIDNamespace))
	case ModeUnset:
		switch {
		case !hasPID:
			p.pid = cause{"linux.namespaces", "no pid entry", "the spec leaves the container in the runtime's PID namespace"}
		default:
			p.pid = cause{"linux.namespaces.pid.path", clientPID.Path, ""}
		}
	}
	return p, nil
}

// enforce checks the final spec, whatever produced it: the node's rules hold
// for every client (ctr, nerdctl, CRI) and for every chain of parents.
func enforce(s *specs.Spec, in Input, p plan) error {
	if err := enforceShmSize(s, in, p); err != nil {
		return err
	}
	if in.Policy.DisallowHostIPC {
		host, err := isHostNS(s, in.Host, specs.IPCNamespace)
		if err != nil {
			return reject(in.ID, p.ipc.key, p.ipc.value, "cannot tell whether this is the host's IPC namespace (%v); refused because of %s=true", err, RuleDisallowHostIPC)
		}
		if host {
			return reject(in.ID, p.ipc.key, p.ipc.value, "%s the host's IPC namespace, forbidden by %s=true", sharesWhy(p.ipc), RuleDisallowHostIPC)
		}
		host, src, err := isHostShm(s, in.Host)
		if err != nil {
			return reject(in.ID, p.shm.key, p.shm.value, "cannot tell whether /dev/shm source %q is the host's (%v); refused because of %s=true", src, err, RuleDisallowHostIPC)
		}
		if host {
			return reject(in.ID, p.shm.key, p.shm.value, "%s the host's /dev/shm, forbidden by %s=true", sharesWhy(p.shm), RuleDisallowHostIPC)
		}
	}
	if in.Policy.DisallowHostPID {
		host, err := isHostNS(s, in.Host, specs.PIDNamespace)
		if err != nil {
			return reject(in.ID, p.pid.key, p.pid.value, "cannot tell whether this is the host's PID namespace (%v); refused because of %s=true", err, RuleDisallowHostPID)
		}
		if host {
			return reject(in.ID, p.pid.key, p.pid.value, "%s the host's PID namespace, forbidden by %s=true", sharesWhy(p.pid), RuleDisallowHostPID)
		}
	}
	return nil
}

func sharesWhy(c cause) string {
	if c.why == "" {
		return "shares"
	}
	return "shares (" + c.why + ")"
}

func enforceShmSize(s *specs.Spec, in Input, p plan) error {
	if in.Policy.MaxShmSize == 0 {
		return nil
	}
	i := shmMountIndex(s)
	if i < 0 || !isTmpfs(s.Mounts[i]) {
		return nil
	}
	v, ok := optionValue(s.Mounts[i].Options, "size=")
	if !ok {
		return nil
	}
	size, ok := parseTmpfsSize(v)
	if !ok || size <= in.Policy.MaxShmSize {
		return nil
	}
	c := cause{"mounts./dev/shm.options", "size=" + v, ""}
	if p.shmSizeCause != nil {
		c = *p.shmSizeCause
	}
	return reject(in.ID, c.key, c.value, "/dev/shm of %s is over %s=%s", FormatSize(size), RuleMaxShmSize, FormatSize(in.Policy.MaxShmSize))
}

func isHostNS(s *specs.Spec, h HostChecker, t specs.LinuxNamespaceType) (bool, error) {
	ns, ok := namespace(s, t)
	if !ok {
		return true, nil
	}
	if ns.Path == "" {
		return false, nil
	}
	if h == nil {
		return false, fmt.Errorf("no host checker")
	}
	return h.IsHostNamespace(t, ns.Path)
}

func isHostShm(s *specs.Spec, h HostChecker) (bool, string, error) {
	i := shmMountIndex(s)
	if i < 0 {
		return s.Root != nil && path.Clean(s.Root.Path) == "/", "", nil
	}
	m := s.Mounts[i]
	if !isBind(m) {
		return false, "", nil
	}
	if h == nil {
		return false, m.Source, fmt.Errorf("no host checker")
	}
	host, err := h.IsHostShm(m.Source)
	return host, m.Source, err
}

// PodShm is a resize of the /dev/shm that containerd's CRI plugin mounts on
// the host for a whole pod and binds into the sandbox and its containers.
type PodShm struct {
	Source string
	Size   int64
}

// SandboxShm tells how big a pod's shared /dev/shm must be made before the
// sandbox starts: Kubernetes has no field for it (containerd gives every pod
// 64Mi), so the pod's nsiso/shm-size, else default_container_shm_size,
// decides. It returns ok=false when there is nothing to resize: not a pod
// sandbox, no size configured, or a /dev/shm that is not the pod's own (the
// host's, for a hostIPC pod, is never resized). Call it on the spec Rewrite
// returned.
func SandboxShm(s *specs.Spec, in Input) (PodShm, bool, error) {
	r := in.Request
	if !r.Sandbox {
		return PodShm{}, false, nil
	}
	i := shmMountIndex(s)
	if i < 0 || !isBind(s.Mounts[i]) {
		return PodShm{}, false, nil
	}
	size, key, value := r.ShmSize, r.key(AnnotationShmSize), FormatSize(r.ShmSize)
	if size == 0 {
		size, key, value = in.Policy.DefaultShmSize, "default_container_shm_size", FormatSize(in.Policy.DefaultShmSize)
	}
	if size == 0 {
		return PodShm{}, false, nil
	}
	src := s.Mounts[i].Source
	if in.Host == nil {
		return PodShm{}, false, fmt.Errorf("specmod: no host checker")
	}
	host, err := in.Host.IsHostShm(src)
	if err != nil {
		return PodShm{}, false, reject(in.ID, "mounts./dev/shm.source", src, "cannot tell whether the pod's /dev/shm is the host's: %v", err)
	}
	if host {
		return PodShm{}, false, nil
	}
	if in.Policy.MaxShmSize > 0 && size > in.Policy.MaxShmSize {
		return PodShm{}, false, reject(in.ID, key, value, "pod /dev/shm of %s is over %s=%s", FormatSize(size), RuleMaxShmSize, FormatSize(in.Policy.MaxShmSize))
	}
	return PodShm{Source: src, Size: size}, true, nil
}
