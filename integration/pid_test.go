package integration

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsiso/nsiso/specmod"
)

// psCommands lists the commands `ps` shows inside a container.
func (s *suite) psCommands(t *testing.T, r *task) []string {
	t.Helper()
	var cmds []string
	for i, line := range strings.Split(strings.TrimSpace(s.exec(t, r, "ps", "-o", "pid,args")), "\n") {
		if f := strings.Fields(line); i > 0 && len(f) > 1 {
			cmds = append(cmds, strings.Join(f[1:], " "))
		}
	}
	return cmds
}

// A private PID namespace: ps sees only the container's processes, and
// killing its init kills every other process in it.
func TestPrivatePID(t *testing.T) {
	s := setup(t)
	r := s.start(t, newID("pidpriv"), spec{
		ann:  ann(specmod.AnnotationPIDMode, "private"),
		args: []string{"sh", "-c", "sleep 1001 & sleep 1002 & exec sleep 1003"},
	})
	if got := s.ns(t, r, "pid"); got == hostNS(t, "pid") {
		t.Fatal("private PID namespace is the host's")
	}
	waitFor(t, "children started", func() bool { return len(s.psCommands(t, r)) >= 4 })
	cmds := s.psCommands(t, r)
	joined := strings.Join(cmds, "\n")
	for _, want := range []string{"sleep 1001", "sleep 1002", "sleep 1003"} {
		if !strings.Contains(joined, want) {
			t.Errorf("ps inside lacks %q:\n%s", want, joined)
		}
	}
	if len(cmds) != 4 { // three sleeps and ps itself
		t.Errorf("ps inside sees %d processes, want only the container's 4:\n%s", len(cmds), joined)
	}

	procs, err := r.t.Pids(s.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(int(r.t.Pid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all processes of the namespace gone", func() bool {
		for _, p := range procs {
			if _, err := os.Stat("/proc/" + strconv.Itoa(int(p.Pid))); err == nil {
				return false
			}
		}
		return true
	})
}

// share-parent joins the parent's PID namespace: each sees the other.
func TestSharedPID(t *testing.T) {
	s := setup(t)
	p := s.start(t, newID("pidparent"), spec{ann: ann(specmod.AnnotationPIDMode, "private"), args: []string{"sleep", "2001"}})
	c := s.start(t, newID("pidkid"), spec{
		ann:  ann(specmod.AnnotationPIDMode, "share-parent", specmod.AnnotationParent, p.id),
		args: []string{"sleep", "2002"},
	})
	if got, want := s.ns(t, c, "pid"), s.ns(t, p, "pid"); got != want {
		t.Fatalf("child PID %s, parent %s", got, want)
	}
	for _, r := range []*task{p, c} {
		joined := strings.Join(s.psCommands(t, r), "\n")
		if !strings.Contains(joined, "sleep 2001") || !strings.Contains(joined, "sleep 2002") {
			t.Errorf("ps in %s does not show both containers:\n%s", r.id, joined)
		}
	}
	// An unset PID mode keeps the client's new namespace.
	u := s.start(t, newID("pidunset"), spec{ann: ann(specmod.AnnotationParent, p.id)})
	if got := s.ns(t, u, "pid"); got == s.ns(t, p, "pid") || got == hostNS(t, "pid") {
		t.Errorf("unset PID mode joined %s", got)
	}
}

// With the host rule off, share-parent on a top-level container is the
// host's PID namespace: ps shows host processes.
func TestHostPIDWhenAllowed(t *testing.T) {
	s := setup(t)
	r := s.start(t, newID("hostpid"), spec{config: s.lenient, ann: ann(specmod.AnnotationPIDMode, "share-parent")})
	if got := s.ns(t, r, "pid"); got != hostNS(t, "pid") {
		t.Fatalf("PID %s, want the host's", got)
	}
	out := s.exec(t, r, "ps", "-o", "pid")
	if !strings.Contains(out, "\n"+strconv.Itoa(os.Getpid())+"\n") && !strings.Contains(out, " "+strconv.Itoa(os.Getpid())+"\n") {
		t.Errorf("ps in a host-PID container does not show the test process %d", os.Getpid())
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
