package specmod

import "fmt"

// Error is a create rejected by policy. It names the container, the setting
// (an annotation key, a spec field or a config key), its value and the rule,
// so the one line a user sees from `ctr run` is enough to fix the request.
type Error struct {
	Container string
	Key       string
	Value     string
	Reason    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("nsiso: container %q: %s=%q: %s", e.Container, e.Key, e.Value, e.Reason)
}

func reject(id, key, value, format string, args ...any) *Error {
	return &Error{Container: id, Key: key, Value: value, Reason: fmt.Sprintf(format, args...)}
}
