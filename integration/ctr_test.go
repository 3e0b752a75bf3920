package integration

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// ctr is how most people first meet a runtime: the rejection must reach its
// terminal, and --runtime-config-path must carry the operator's config.
func TestCtrRun(t *testing.T) {
	s := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctr := func(args ...string) (string, string, error) {
		cmd := s.ctd.Ctr(ctx, append([]string{"--namespace", testNS}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	base := []string{"run", "--rm", "--fifo-dir", s.ctd.FIFODir(), "--runtime", nsisoRuntime}

	id := newID("ctrhost")
	_, stderr, err := ctr(append(base, "--with-ns", "ipc:/proc/1/ns/ipc", imageRef, id, "true")...)
	want := `nsiso: container "` + id + `": linux.namespaces.ipc.path="/proc/1/ns/ipc": shares the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`
	if err == nil || !strings.Contains(stderr, want) {
		t.Errorf("ctr run --with-ns ipc:/proc/1/ns/ipc: err %v, stderr:\n%s\nwant %s", err, stderr, want)
	}
	s.assertNoResidue(t, id)
	_, _, _ = ctr("containers", "rm", id) // best effort: the refused run may have left none

	id = newID("ctrpriv")
	args := append(base, "--annotation", "nsiso/ipc-mode=private", "--annotation", "nsiso/shm-size=48Mi", imageRef, id)
	out, stderr, err := ctr(append(args, shmSizeCmd...)...)
	if err != nil {
		t.Fatalf("ctr run private: %v\n%s", err, stderr)
	}
	if got := statfsBytes(t, out); got != 48<<20 {
		t.Errorf("ctr run private: /dev/shm of %d bytes, want 48Mi", got)
	}

	// The lenient config, handed over by ctr, allows the host's IPC.
	id = newID("ctrcfg")
	out, stderr, err = ctr(append(base, "--runtime-config-path", s.lenient, "--annotation", "nsiso/ipc-mode=share-parent",
		imageRef, id, "readlink", "/proc/self/ns/ipc")...)
	if err != nil {
		t.Fatalf("ctr run with --runtime-config-path: %v\n%s", err, stderr)
	}
	if got := strings.TrimSpace(out); got != hostNS(t, "ipc") {
		t.Errorf("IPC %s, want the host's %s", got, hostNS(t, "ipc"))
	}
}
