package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nsiso/nsiso/internal/procfs"
)

// assertNoResidue checks that nothing of container id is left: no runc
// state, no bundle, no mount and no shim process.
func (s *suite) assertNoResidue(t *testing.T, id string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(s.runcRoot, testNS, id)); !os.IsNotExist(err) {
		t.Errorf("%s: runc state left behind (%v)", id, err)
	}
	bundle := filepath.Join(s.ctd.Dir(), "state", "io.containerd.runtime.v2.task", testNS, id)
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Errorf("%s: bundle %s left behind (%v)", id, bundle, err)
	}
	if m := containerMounts(t, id); len(m) > 0 {
		t.Errorf("%s: mounts left behind:\n%s", id, strings.Join(m, "\n"))
	}
	// A shim whose only container failed to be created exits on its own
	// shortly after containerd's shutdown request.
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := shimPIDs(t, id)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: shim processes left behind: %v", id, pids)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// containerMounts returns the mounts under container id's bundle, also
// under the hidden name containerd renames a bundle to while deleting it.
func containerMounts(t *testing.T, id string) []string {
	t.Helper()
	return append(mountsOf(t, "/"+id+"/"), mountsOf(t, "/."+id+"/")...)
}

// mountsOf returns the mountinfo lines whose mount point contains part.
func mountsOf(t *testing.T, part string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.Contains(f[4]+"/", part) {
			out = append(out, line)
		}
	}
	return out
}

// shimPIDs lists nsiso shim processes started for container id. A /proc
// that cannot be read fails the test rather than reading as "none left".
func shimPIDs(t *testing.T, id string) []string {
	t.Helper()
	all, err := procfs.PIDs()
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, pid := range all {
		args, err := procfs.Cmdline(pid)
		if err != nil || len(args) == 0 || !strings.HasSuffix(args[0], "containerd-shim-nsiso-v1") {
			continue // exited meanwhile, or not a shim
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-id" && args[i+1] == id {
				pids = append(pids, strconv.Itoa(pid))
			}
		}
	}
	return pids
}
