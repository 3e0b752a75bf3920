package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nsiso/nsiso/internal/procfs"
	"github.com/nsiso/nsiso/specmod"
)

func ann(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// A private container gets its own IPC namespace and a /dev/shm of the
// requested size; its System V segments are seen by nobody else and die
// with it.
func TestPrivateIPC(t *testing.T) {
	s := setup(t)
	a := s.start(t, newID("priv"), spec{ann: ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationShmSize, "128Mi")})
	b := s.start(t, newID("sib"), spec{ann: ann(specmod.AnnotationIPCMode, "private")})

	ipcA, ipcB := s.ns(t, a, "ipc"), s.ns(t, b, "ipc")
	if ipcA == hostNS(t, "ipc") || ipcA == ipcB {
		t.Fatalf("private IPC namespaces not private: a=%s b=%s host=%s", ipcA, ipcB, hostNS(t, "ipc"))
	}
	if got := s.shmSize(t, a); got != 128<<20 {
		t.Errorf("/dev/shm of a: %d bytes, want 128Mi", got)
	}
	// Without an annotation, the node's default_container_shm_size (96Mi).
	if got := s.shmSize(t, b); got != 96<<20 {
		t.Errorf("/dev/shm of b: %d bytes, want the node default 96Mi", got)
	}

	key := s.ipcmk(t, a)
	if !s.sees(t, a, key) {
		t.Fatal("segment not visible where it was made")
	}
	if hostSees(t, key) {
		t.Error("segment of a private container visible on the host")
	}
	if s.sees(t, b, key) {
		t.Error("segment of a private container visible in a sibling")
	}

	// POSIX shared memory: a file in a's /dev/shm is a's alone.
	s.exec(t, a, "sh", "-c", "echo a > /dev/shm/marker")
	if out, _, _ := s.execCode(t, b, "cat", "/dev/shm/marker"); strings.Contains(out, "a") {
		t.Error("a's /dev/shm visible in a sibling")
	}

	// Deleting the container ends its IPC namespace, and with it the
	// segment: no process is left in it and nothing pins it.
	s.remove(t, a)
	a.t = nil
	if holders := nsHolders(t, ipcA); len(holders) > 0 {
		t.Errorf("IPC namespace %s still held after delete by %v", ipcA, holders)
	}
	s.assertNoResidue(t, a.id)
}

// nsHolders lists what keeps a namespace alive: processes in it and nsfs
// mounts of it.
func nsHolders(t *testing.T, link string) []string {
	t.Helper()
	var out []string
	pids, err := procfs.PIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		for _, kind := range []string{"ipc", "pid"} {
			if l, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", kind)); err == nil && l == link {
				out = append(out, "pid "+strconv.Itoa(pid))
			}
		}
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, link) {
			out = append(out, "mount "+line)
		}
	}
	return out
}

// share-parent joins the parent's IPC namespace and /dev/shm; unset (the
// Mesos legacy mode) joins the IPC namespace but keeps its own /dev/shm.
func TestNestedIPC(t *testing.T) {
	s := setup(t)
	p := s.start(t, newID("parent"), spec{ann: ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationShmSize, "64Mi")})
	key := s.ipcmk(t, p)
	s.exec(t, p, "sh", "-c", "echo from-parent > /dev/shm/marker")

	shared := s.start(t, newID("share"), spec{ann: ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationParent, p.id)})
	if got, want := s.ns(t, shared, "ipc"), s.ns(t, p, "ipc"); got != want {
		t.Errorf("share-parent child IPC %s, parent %s", got, want)
	}
	if !s.sees(t, shared, key) {
		t.Error("share-parent child does not see the parent's segment")
	}
	if out := s.exec(t, shared, "cat", "/dev/shm/marker"); strings.TrimSpace(out) != "from-parent" {
		t.Errorf("share-parent child's /dev/shm is not the parent's: %q", out)
	}
	if got := s.shmSize(t, shared); got != 64<<20 {
		t.Errorf("share-parent child's /dev/shm is %d bytes, want the parent's 64Mi", got)
	}

	legacy := s.start(t, newID("legacy"), spec{ann: ann(specmod.AnnotationParent, p.id)})
	if got, want := s.ns(t, legacy, "ipc"), s.ns(t, p, "ipc"); got != want {
		t.Errorf("unset-mode child IPC %s, parent %s", got, want)
	}
	if !s.sees(t, legacy, key) {
		t.Error("unset-mode child does not see the parent's segment")
	}
	if out, _, _ := s.execCode(t, legacy, "cat", "/dev/shm/marker"); strings.Contains(out, "from-parent") {
		t.Error("unset-mode child shares the parent's /dev/shm; it should have its own")
	}
	if got := s.shmSize(t, legacy); got != 96<<20 {
		t.Errorf("unset-mode child's /dev/shm is %d bytes, want the node default 96Mi", got)
	}

	// A grandchild shares through the chain.
	grand := s.start(t, newID("grand"), spec{ann: ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationParent, shared.id)})
	if got, want := s.ns(t, grand, "ipc"), s.ns(t, p, "ipc"); got != want {
		t.Errorf("grandchild IPC %s, grandparent %s", got, want)
	}

	// The child's pins hold the parent's namespace and /dev/shm even after
	// the parent is gone; deleting the child releases them.
	s.remove(t, p)
	p.t = nil
	if out := s.exec(t, shared, "cat", "/dev/shm/marker"); strings.TrimSpace(out) != "from-parent" {
		t.Errorf("child lost the parent's /dev/shm when the parent was deleted: %q", out)
	}
	for _, r := range []*task{grand, legacy, shared} {
		s.remove(t, r)
		r.t = nil
		s.assertNoResidue(t, r.id)
	}
	s.assertNoResidue(t, p.id)
}

// A top-level container without a mode gets a new IPC namespace and its
// own /dev/shm of the node's default size; a child of it or of a runc.v2
// parent joins the IPC namespace, but cannot share /dev/shm, which both
// keep inside the container.
func TestUnsetModeAndRuncParent(t *testing.T) {
	s := setup(t)
	top := s.start(t, newID("top"), spec{})
	if got := s.ns(t, top, "ipc"); got == hostNS(t, "ipc") {
		t.Error("unset top-level container shares the host's IPC namespace")
	}
	if got := s.shmSize(t, top); got != 96<<20 {
		t.Errorf("/dev/shm %d bytes, want the node default 96Mi", got)
	}

	rp := s.start(t, newID("runcp"), spec{runtime: runcRuntime})
	kid := s.start(t, newID("runckid"), spec{ann: ann(specmod.AnnotationParent, rp.id)})
	if got, want := s.ns(t, kid, "ipc"), s.ns(t, rp, "ipc"); got != want {
		t.Errorf("child of a runc.v2 parent: IPC %s, parent %s", got, want)
	}
	// Only a private container's /dev/shm lives on the host where a child
	// can bind it; runc.v2's and an unset-mode container's stay inside.
	for _, parent := range []*task{rp, top} {
		id := newID("noshare")
		err := s.tryCreate(t, id, spec{ann: ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationParent, parent.id)})
		want := `nsiso: container "` + id + `": nsiso/parent="` + parent.id + `": the parent's /dev/shm lives only inside its mount namespace, so it cannot be shared; start the parent with runtime io.containerd.nsiso.v1 and nsiso/ipc-mode=private, or give this container nsiso/ipc-mode=private`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("share-parent of %s: got %v\nwant %s", parent.id, err, want)
		}
		s.assertNoResidue(t, id)
	}
	if m := containerMounts(t, top.id); len(m) != 1 || !strings.Contains(m[0], "/rootfs ") {
		t.Errorf("an unset-mode container needs no host mount but its rootfs, got:\n%s", strings.Join(m, "\n"))
	}
}

// With the host rule off, share-parent on a top-level container shares the
// host's IPC namespace and /dev/shm, and a child of it does too.
func TestHostIPCWhenAllowed(t *testing.T) {
	s := setup(t)
	h := s.start(t, newID("hostipc"), spec{config: s.lenient, ann: ann(specmod.AnnotationIPCMode, "share-parent")})
	if got := s.ns(t, h, "ipc"); got != hostNS(t, "ipc") {
		t.Fatalf("IPC %s, want the host's %s", got, hostNS(t, "ipc"))
	}
	f, err := os.CreateTemp("/dev/shm", "nsiso-it-")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer os.Remove(f.Name())
	s.exec(t, h, "test", "-e", f.Name())

	// The child's rule is the strict default: the chain ends at the host,
	// so it is refused; with the lenient rule it joins the host's.
	id := newID("hostkid")
	err = s.tryCreate(t, id, spec{ann: ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationParent, h.id)})
	want := `nsiso: container "` + id + `": nsiso/ipc-mode="share-parent": shares (parent container "` + h.id + `") the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v\nwant %s", err, want)
	}
	s.assertNoResidue(t, id)
	kid := s.start(t, newID("hostkid"), spec{config: s.lenient, ann: ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationParent, h.id)})
	if got := s.ns(t, kid, "ipc"); got != hostNS(t, "ipc") {
		t.Errorf("grandchild of the host: IPC %s, want the host's", got)
	}
}

// When a shim dies, containerd runs `containerd-shim-nsiso-v1 delete` in
// the bundle; nsiso's pins and mounts must go with it.
func TestShimKilledLeavesNothing(t *testing.T) {
	s := setup(t)
	p := s.start(t, newID("crashp"), spec{ann: ann(specmod.AnnotationIPCMode, "private")})
	s.exec(t, p, "sh", "-c", "echo keep > /dev/shm/keep")
	c := s.start(t, newID("crashc"), spec{ann: ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationPIDMode, "share-parent", specmod.AnnotationParent, p.id)})
	if m := mountsOf(t, "/"+c.id+"/nsiso/"); len(m) == 0 {
		t.Fatal("the child has no pins to clean up; the test would prove nothing")
	}
	pids := shimPIDs(t, c.id)
	if len(pids) != 1 {
		t.Fatalf("shim of %s: %v", c.id, pids)
	}
	pid, _ := strconv.Atoi(pids[0])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// containerd forgets the task at once and runs the shim's delete
	// command in the background; it is done when the bundle is gone.
	tasks := filepath.Join(s.ctd.Dir(), "state", "io.containerd.runtime.v2.task", testNS)
	waitFor(t, "containerd to clean up after the dead shim", func() bool {
		_, err1 := os.Stat(filepath.Join(tasks, c.id))
		_, err2 := os.Stat(filepath.Join(tasks, "."+c.id))
		return os.IsNotExist(err1) && os.IsNotExist(err2) && len(containerMounts(t, c.id)) == 0
	})
	s.remove(t, c)
	c.t = nil
	s.assertNoResidue(t, c.id)
	// containerd removes a bundle recursively; had the pin of the parent's
	// /dev/shm still been mounted, it would have emptied the parent's.
	if out := s.exec(t, p, "cat", "/dev/shm/keep"); strings.TrimSpace(out) != "keep" {
		t.Errorf("parent's /dev/shm lost its contents: %q", out)
	}
}
