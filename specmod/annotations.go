package specmod

import (
	"sort"
	"strings"

	"github.com/containerd/containerd/v2/pkg/identifiers"
)

// Annotation keys a container sets in its OCI spec to choose its policy.
const (
	// AnnotationPrefix is reserved for nsiso: an unknown key under it is an
	// error, so that a typo never silently falls back to the default.
	AnnotationPrefix  = "nsiso/"
	AnnotationIPCMode = AnnotationPrefix + "ipc-mode"
	AnnotationShmSize = AnnotationPrefix + "shm-size"
	AnnotationPIDMode = AnnotationPrefix + "pid-mode"
	AnnotationParent  = AnnotationPrefix + "parent"
)

// Annotations containerd's CRI plugin puts on pod specs; they make the pod
// sandbox the parent of the pod's containers.
const (
	AnnotationCRIContainerType = "io.kubernetes.cri.container-type"
	AnnotationCRISandboxID     = "io.kubernetes.cri.sandbox-id"
	AnnotationCRIContainerName = "io.kubernetes.cri.container-name"
	criTypeContainer           = "container"
	criTypeSandbox             = "sandbox"
)

// Mode is a container's choice for one namespace.
type Mode string

// The modes of nsiso/ipc-mode and nsiso/pid-mode.
const (
	// ModeUnset keeps Mesos' legacy behaviour (see docs/config.md's
	// semantics table).
	ModeUnset Mode = ""
	// ModePrivate gives the container a namespace of its own.
	ModePrivate Mode = "private"
	// ModeShareParent joins the parent's namespace (the host's for a
	// top-level container).
	ModeShareParent Mode = "share-parent"
)

// Request is what one container asked for through its annotations.
type Request struct {
	IPC Mode
	PID Mode
	// ShmSize is the requested /dev/shm size in bytes; 0 when not asked.
	// For a pod sandbox it sizes the pod's shared /dev/shm.
	ShmSize int64
	// Parent is the ID of the parent container; empty for a top-level
	// container, whose parent is the host.
	Parent string
	// ParentKey is the annotation that named the parent, for messages.
	ParentKey string
	// Sandbox is set for a Kubernetes pod sandbox created through CRI.
	Sandbox bool
	// Pod is "<namespace>/<name>" of the Kubernetes pod CRI made the
	// container for, or "": refusals name it, since CRI's container IDs
	// mean nothing to a user.
	Pod string
	// keys records the annotation each setting came from, for messages.
	keys map[string]string
}

// Nested tells whether the container has a parent container.
func (r Request) Nested() bool { return r.Parent != "" }

// key returns the annotation a setting came from (a container-scoped one
// where that applied).
func (r Request) key(base string) string {
	if k, ok := r.keys[base]; ok {
		return k
	}
	return base
}

// ParseRequest reads the nsiso annotations of container id. It rejects
// unknown nsiso/ keys, unknown modes, malformed sizes and a size without
// nsiso/ipc-mode=private. The parent is nsiso/parent when set, else the pod
// sandbox for a container created by containerd's CRI plugin.
//
// Kubernetes has no per-container annotations, and containerd's CRI plugin
// copies the pod's annotations onto every container. So for CRI, a key may
// be scoped to one container by name, "nsiso/ipc-mode.<container-name>",
// which wins over the unscoped key for that container and is ignored
// elsewhere (but still checked, so a mistake fails the pod at once); and
// nsiso/shm-size, which on a pod sizes the pod's /dev/shm, is ignored on a
// container that does not ask for a private IPC namespace.
func ParseRequest(id string, annotations map[string]string) (Request, error) {
	r := Request{Pod: podName(annotations)}
	criType := annotations[AnnotationCRIContainerType]
	r.Sandbox = criType == criTypeSandbox
	values, err := r.readKeys(id, annotations, criType)
	if err != nil {
		return Request{}, err
	}
	if v, ok := values[AnnotationIPCMode]; ok {
		r.IPC, _ = parseMode(v)
	}
	if v, ok := values[AnnotationPIDMode]; ok {
		r.PID, _ = parseMode(v)
	}
	if v, ok := values[AnnotationParent]; ok {
		r.Parent, r.ParentKey = v, AnnotationParent
	}
	if v, ok := values[AnnotationShmSize]; ok {
		if err := r.setShmSize(id, v, criType); err != nil {
			return Request{}, err
		}
	}
	if criType == criTypeContainer {
		if err := r.setSandboxParent(id, annotations[AnnotationCRISandboxID]); err != nil {
			return Request{}, err
		}
	}
	return r, nil
}

// readKeys checks every nsiso/ key and returns the value of each setting
// that applies to this container, by its unscoped key; it records in r
// which key each came from.
func (r *Request) readKeys(id string, annotations map[string]string, criType string) (map[string]string, error) {
	name := annotations[AnnotationCRIContainerName]
	keys := make([]string, 0, 4)
	for k := range annotations {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	// Sorted so that a spec with several mistakes always reports the same
	// one, and so that a scoped key ("base.name") is read after its base.
	sort.Strings(keys)
	values := map[string]string{}
	for _, k := range keys {
		v := annotations[k]
		base, scope, scoped := strings.Cut(k, ".")
		if err := r.checkKey(id, k, v, base, scope, scoped, criType); err != nil {
			return nil, err
		}
		if scoped && (criType != criTypeContainer || scope != name) {
			continue
		}
		if r.keys == nil {
			r.keys = map[string]string{}
		}
		values[base], r.keys[base] = v, k
	}
	return values, nil
}

// checkKey checks one nsiso/ key and its value, whether or not it applies
// to this container, so that a mistake fails the pod at once.
func (r *Request) checkKey(id, k, v, base, scope string, scoped bool, criType string) error {
	if scoped && scope == "" {
		return reject(id, *r, k, v, "empty container name after %q", base+".")
	}
	switch base {
	case AnnotationIPCMode, AnnotationPIDMode:
		if _, ok := parseMode(v); !ok {
			return reject(id, *r, k, v, "unknown mode (use %q or %q)", ModePrivate, ModeShareParent)
		}
	case AnnotationShmSize:
		if _, err := ParseSize(v); err != nil {
			return reject(id, *r, k, v, "%v", err)
		}
	case AnnotationParent:
		if err := r.checkParent(id, k, v, scoped, criType); err != nil {
			return err
		}
	default:
		return reject(id, *r, k, v, "unknown nsiso annotation (known: %s, %s, %s, %s, and for pods <key>.<container-name>)",
			AnnotationIPCMode, AnnotationShmSize, AnnotationPIDMode, AnnotationParent)
	}
	if scoped && criType == "" {
		return reject(id, *r, k, v, "a key scoped to a container by name is for Kubernetes pods, whose annotations are per pod; set %s on this container instead", base)
	}
	return nil
}

// checkParent checks nsiso/parent: never in a pod, an identifier, and not
// the container itself.
func (r *Request) checkParent(id, k, v string, scoped bool, criType string) error {
	switch {
	case scoped:
		return reject(id, *r, k, v, "%s cannot be scoped to a container (inside a pod the parent is the sandbox)", AnnotationParent)
	case criType != "":
		return reject(id, *r, k, v, "not allowed in a Kubernetes pod: a pod's sandbox is top-level and its containers' parent is their own sandbox")
	case identifiers.Validate(v) != nil:
		return reject(id, *r, k, v, "not a containerd container ID (letters and digits, with single '.', '_' or '-' between them, at most 76 characters)")
	case v == id:
		return reject(id, *r, k, v, "a container cannot be its own parent")
	}
	return nil
}

// setShmSize takes nsiso/shm-size where it may apply: with a private IPC
// namespace, or on a pod's sandbox for the pod's /dev/shm; CRI's copy of a
// pod's size on its containers is ignored.
func (r *Request) setShmSize(id, v, criType string) error {
	r.ShmSize, _ = ParseSize(v)
	switch {
	case r.IPC == ModePrivate:
	case r.Sandbox && r.IPC == ModeUnset:
		// The pod's own /dev/shm, shared by its containers.
	case criType == criTypeContainer && r.key(AnnotationShmSize) == AnnotationShmSize:
		// The pod's size, copied onto its containers by CRI.
		r.ShmSize = 0
	default:
		return reject(id, *r, r.key(AnnotationShmSize), v,
			"only allowed with %s=%s, got %s", AnnotationIPCMode, ModePrivate, describeMode(r.IPC))
	}
	return nil
}

// setSandboxParent makes a CRI container's sandbox its parent. The ID
// becomes a path; CRI sets it, but any client can write the annotation.
func (r *Request) setSandboxParent(id, sb string) error {
	if err := identifiers.Validate(sb); err != nil {
		return reject(id, *r, AnnotationCRISandboxID, sb, "not a containerd container ID")
	}
	if sb == id {
		return reject(id, *r, AnnotationCRISandboxID, sb, "a container cannot be its own parent")
	}
	r.Parent, r.ParentKey = sb, AnnotationCRISandboxID
	return nil
}

func parseMode(v string) (Mode, bool) {
	switch Mode(v) {
	case ModePrivate, ModeShareParent:
		return Mode(v), true
	}
	return "", false
}

func describeMode(m Mode) string {
	if m == ModeUnset {
		return "no ipc-mode"
	}
	return "ipc-mode \"" + string(m) + "\""
}
