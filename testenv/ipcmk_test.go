package testenv

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBuildIpcmk builds the helper and uses it on the host: it must be
// static (it runs inside busybox images) and create a segment that shows
// up in /proc/sysvipc/shm the way the integration tests read it.
func TestBuildIpcmk(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	out := filepath.Join(t.TempDir(), "ipcmk")
	if err := BuildIpcmk(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("ipcmk is dynamically linked")
		}
	}
	f.Close()

	stdout, err := exec.Command(out, "-M", "12K", "-p", "0600").Output()
	if err != nil {
		t.Fatalf("ipcmk: %v", err)
	}
	m := regexp.MustCompile(`^Shared memory id: (\d+)\n$`).FindStringSubmatch(string(stdout))
	if m == nil {
		t.Fatalf("ipcmk printed %q", stdout)
	}
	id, _ := strconv.Atoi(m[1])
	defer func() {
		if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil {
			t.Errorf("remove segment %d: %v", id, err)
		}
	}()

	shm, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(string(shm), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == m[1] {
			found = true
			if f[2] != "600" || f[3] != "12288" {
				t.Errorf("segment %d: perms %s size %s, want 600 12288", id, f[2], f[3])
			}
		}
	}
	if !found {
		t.Errorf("segment %d not in /proc/sysvipc/shm", id)
	}

	if err := exec.Command(out).Run(); err == nil {
		t.Error("ipcmk without options succeeded")
	}
}
