package specmod

import (
	"sort"
	"strings"
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
	criTypeContainer           = "container"
)

// Mode is a container's choice for one namespace.
type Mode string

// The modes of nsiso/ipc-mode and nsiso/pid-mode.
const (
	// ModeUnset keeps Mesos' legacy behaviour (see Apply).
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
	ShmSize int64
	// Parent is the ID of the parent container; empty for a top-level
	// container, whose parent is the host.
	Parent string
	// ParentKey is the annotation that named the parent, for messages.
	ParentKey string
}

// Nested tells whether the container has a parent container.
func (r Request) Nested() bool { return r.Parent != "" }

// ParseRequest reads the nsiso annotations of container id. It rejects
// unknown nsiso/ keys, unknown modes, malformed sizes and a size without
// nsiso/ipc-mode=private. The parent is nsiso/parent when set, else the pod
// sandbox for a container created by containerd's CRI plugin.
func ParseRequest(id string, annotations map[string]string) (Request, error) {
	var r Request
	keys := make([]string, 0, 4)
	for k := range annotations {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	// Sorted so that a spec with several mistakes always reports the same one.
	sort.Strings(keys)
	for _, k := range keys {
		v := annotations[k]
		switch k {
		case AnnotationIPCMode, AnnotationPIDMode:
			m, ok := parseMode(v)
			if !ok {
				return Request{}, reject(id, k, v, "unknown mode (use %q or %q)", ModePrivate, ModeShareParent)
			}
			if k == AnnotationIPCMode {
				r.IPC = m
			} else {
				r.PID = m
			}
		case AnnotationShmSize:
			n, err := ParseSize(v)
			if err != nil {
				return Request{}, reject(id, k, v, "%v", err)
			}
			r.ShmSize = n
		case AnnotationParent:
			if strings.TrimSpace(v) == "" {
				return Request{}, reject(id, k, v, "empty parent container ID")
			}
			if v == id {
				return Request{}, reject(id, k, v, "a container cannot be its own parent")
			}
			r.Parent, r.ParentKey = v, k
		default:
			return Request{}, reject(id, k, v, "unknown nsiso annotation (known: %s, %s, %s, %s)",
				AnnotationIPCMode, AnnotationShmSize, AnnotationPIDMode, AnnotationParent)
		}
	}
	if r.ShmSize != 0 && r.IPC != ModePrivate {
		return Request{}, reject(id, AnnotationShmSize, annotations[AnnotationShmSize],
			"only allowed with %s=%s, got %s", AnnotationIPCMode, ModePrivate, describeMode(r.IPC))
	}
	if r.Parent == "" && annotations[AnnotationCRIContainerType] == criTypeContainer {
		r.Parent, r.ParentKey = annotations[AnnotationCRISandboxID], AnnotationCRISandboxID
	}
	return r, nil
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
