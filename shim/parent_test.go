package shim

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nsiso/nsiso/specmod"
)

// scriptedTasks answers initPID from a script, one answer per call, and
// counts the calls.
type scriptedTasks struct {
	answers []func() (uint32, error)
	calls   int
}

func (s *scriptedTasks) initPID(context.Context, string, string) (uint32, error) {
	a := s.answers[min(s.calls, len(s.answers)-1)]
	s.calls++
	return a()
}

// A parent's init is held only when it is the process containerd named:
// one that started before the question is proven by its start time, with
// no second question; one that started since must be named again.
func TestOpenParentProvesThePid(t *testing.T) {
	fresh := func(t *testing.T) uint32 {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return uint32(cmd.Process.Pid)
	}
	self := uint32(os.Getpid())
	req := specmod.Request{Parent: "p", ParentKey: specmod.AnnotationParent}
	for _, tc := range []struct {
		name      string
		answers   func(t *testing.T) []func() (uint32, error)
		wantCalls int
		wantErr   string
	}{
		{name: "a parent older than the question: one question", wantCalls: 1, answers: func(*testing.T) []func() (uint32, error) {
			return []func() (uint32, error){func() (uint32, error) { return self, nil }}
		}},
		{name: "a parent started during the question: asked again", wantCalls: 2, answers: func(t *testing.T) []func() (uint32, error) {
			var pid uint32
			return []func() (uint32, error){
				func() (uint32, error) { pid = fresh(t); return pid, nil },
				func() (uint32, error) { return pid, nil },
			}
		}},
		{name: "the second answer names another pid", wantCalls: 2, wantErr: "parent container is not running (its init pid", answers: func(t *testing.T) []func() (uint32, error) {
			return []func() (uint32, error){
				func() (uint32, error) { return fresh(t), nil },
				func() (uint32, error) { return self, nil },
			}
		}},
		{name: "the parent stopped meanwhile", wantCalls: 2, wantErr: "parent container is not running (its init pid", answers: func(t *testing.T) []func() (uint32, error) {
			return []func() (uint32, error){
				func() (uint32, error) { return fresh(t), nil },
				func() (uint32, error) { return 0, errNotRunning },
			}
		}},
		{name: "no task", wantCalls: 1, wantErr: "parent container has no task in this containerd namespace", answers: func(*testing.T) []func() (uint32, error) {
			return []func() (uint32, error){func() (uint32, error) { return 0, errNoTask }}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tasks := &scriptedTasks{answers: tc.answers(t)}
			ref, err := openParent(context.Background(), req, "c", parentScope{namespace: "ns", tasks: tasks})
			if ref != nil {
				ref.close()
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if tasks.calls != tc.wantCalls {
				t.Errorf("containerd asked %d times, want %d", tasks.calls, tc.wantCalls)
			}
		})
	}
}
