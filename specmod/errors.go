package specmod

import (
	"fmt"
	"unicode/utf8"
)

// Error is a create rejected by policy. It names the container, the setting
// (an annotation key, a spec field or a config key), its value and the rule,
// so the one line a user sees from `ctr run` is enough to fix the request.
type Error struct {
	Container string
	// Pod is "<namespace>/<name>" of the Kubernetes pod the container
	// belongs to, if any: CRI's container IDs mean nothing to a user.
	Pod    string
	Key    string
	Value  string
	Reason string
}

func (e *Error) Error() string {
	key, value, reason := Truncate(e.Key), Truncate(e.Value), cut(e.Reason, MaxReason)
	if e.Pod != "" {
		return fmt.Sprintf("nsiso: container %q of pod %q: %s=%q: %s", Truncate(e.Container), Truncate(e.Pod), key, value, reason)
	}
	return fmt.Sprintf("nsiso: container %q: %s=%q: %s", Truncate(e.Container), key, value, reason)
}

// MaxEcho is how many bytes of a user's value a message repeats: enough to
// recognise it, never enough to turn one bad annotation into a log flood.
const MaxEcho = 128

// MaxReason bounds a refusal's reason, which names values (cut to MaxEcho)
// of its own: a backstop, so that no refusal is ever longer than a few
// lines whatever it quotes.
const MaxReason = 1024

// Truncate shortens s to MaxEcho bytes (on a rune boundary) with an
// ellipsis, for messages that echo what a user wrote.
func Truncate(s string) string { return cut(s, MaxEcho) }

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// Annotations naming a CRI pod.
const (
	AnnotationCRISandboxName      = "io.kubernetes.cri.sandbox-name"
	AnnotationCRISandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
)

// podName returns "<namespace>/<name>" of the pod a CRI spec belongs to, or
// "" for a container that is not in a pod.
func podName(annotations map[string]string) string {
	name := annotations[AnnotationCRISandboxName]
	if name == "" {
		return ""
	}
	return annotations[AnnotationCRISandboxNamespace] + "/" + name
}

// reject is a refusal of container id, named with the pod of its request.
func reject(id string, r Request, key, value, format string, args ...any) *Error {
	return &Error{Container: id, Pod: r.Pod, Key: key, Value: value, Reason: fmt.Sprintf(format, args...)}
}
