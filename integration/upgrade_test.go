package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nsiso/nsiso/nodeinstall"
	"github.com/nsiso/nsiso/specmod"
	"github.com/nsiso/nsiso/testenv"
)

// previousRelease is the last commit before `nsiso install` existed: the
// shim a node runs when the installer upgrades it.
const previousRelease = "a35c3df"

// buildShimAt builds containerd-shim-nsiso-v1 from a commit of this
// repository's history.
func buildShimAt(t *testing.T, commit string) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("git", "-C", root, "cat-file", "-e", commit+"^{commit}").Run(); err != nil {
		t.Skipf("commit %s is not in this clone's git history (a shallow clone?), so the previous release cannot be built: %v", commit, err)
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", commit, err, out)
	}
	out := filepath.Join(t.TempDir(), nodeinstall.ShimName)
	// Its own build ID: where the shim's code has not changed since that
	// commit, the build would otherwise be byte for byte today's, and
	// install would (rightly) replace nothing.
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-buildid=nsiso-"+commit, "-o", out, "./cmd/containerd-shim-nsiso-v1")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the shim of %s: %v\n%s", commit, err, b)
	}
	return out
}

// exeOf is the executable a process runs; " (deleted)" once the file was
// replaced.
func exeOf(t *testing.T, id string) string {
	t.Helper()
	pids := shimPIDs(t, id)
	if len(pids) != 1 {
		t.Fatalf("shims of %s: %v", id, pids)
	}
	exe, err := os.Readlink("/proc/" + pids[0] + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func killShim(t *testing.T, id string) {
	t.Helper()
	pids := shimPIDs(t, id)
	if len(pids) != 1 {
		t.Fatalf("shims of %s: %v", id, pids)
	}
	pid, _ := strconv.Atoi(pids[0])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

// Upgrade in place: containers started by the previous release's shim
// keep running after `nsiso install` replaces the binary, are managed
// (exec, a new child joining them, kill, delete), and the new binary's
// `delete` cleans up the state the old shim left when that shim dies; a
// rollback to the old binary cleans up after the new shim the same way.
func TestUpgradeInPlace(t *testing.T) {
	s := setup(t)
	oldShim := buildShimAt(t, previousRelease)
	n := newFakeNode(t, operatorV3)
	bin := filepath.Join(n.root, "usr/local/bin")
	installed := filepath.Join(bin, nodeinstall.ShimName)
	oldBytes, err := os.ReadFile(oldShim)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, installed, string(oldBytes))
	if err := os.Chmod(installed, 0o755); err != nil {
		t.Fatal(err)
	}

	// A suite of the node's daemon: same helpers, its own runc root.
	up := &suite{ctd: n.cri.ctd, h: &testenv.Harness{Deps: s.h.Deps, ShimDir: s.h.ShimDir, Scratch: t.TempDir()}, runcRoot: n.cri.runcRoot}
	up.dir = up.h.Scratch
	if up.ctx, err = up.ctd.Namespace(context.Background(), testNS); err != nil {
		t.Fatal(err)
	}
	if up.image, err = testenv.ImportImage(up.ctx, up.ctd.Client(), s.imageTar); err != nil {
		t.Fatal(err)
	}
	cfg := up.writeConfig("nsiso.toml", "")
	private := ann(specmod.AnnotationIPCMode, "private", specmod.AnnotationShmSize, "72Mi")
	parent := up.start(t, newID("up-parent"), spec{config: cfg, ann: private})
	up.exec(t, parent, "sh", "-c", "echo from-old > /dev/shm/mark")
	childAnn := func(p string) map[string]string {
		return ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationPIDMode, "share-parent", specmod.AnnotationParent, p)
	}
	oldChild := up.start(t, newID("up-oldchild"), spec{config: cfg, ann: childAnn(parent.id)})
	if m := mountsOf(t, "/"+oldChild.id+"/nsiso/"); len(m) == 0 {
		t.Fatal("the old child has no pins; the test would prove nothing")
	}

	deps, _ := testenv.FindDeps()
	out, code := runNsiso(t, "install", "--root", n.root, "--containerd", deps.Containerd)
	if code != 0 {
		t.Fatalf("install: exit %d\n%s", code, out)
	}
	newBytes, _ := os.ReadFile(installed)
	if bytes.Equal(newBytes, oldBytes) {
		t.Fatal("install did not replace the shim")
	}
	for _, r := range []*task{parent, oldChild} {
		if exe := exeOf(t, r.id); !strings.HasSuffix(exe, " (deleted)") {
			t.Errorf("%s's shim runs %s; want the replaced old binary", r.id, exe)
		}
	}

	// Still managed: exec through the old shims, and a new shim's child
	// joins the old shim's parent.
	if got := strings.TrimSpace(up.exec(t, oldChild, "cat", "/dev/shm/mark")); got != "from-old" {
		t.Errorf("old child sees %q in the parent's /dev/shm", got)
	}
	newChild := up.start(t, newID("up-newchild"), spec{config: cfg, ann: childAnn(parent.id)})
	if exe := exeOf(t, newChild.id); exe != installed {
		t.Errorf("the new child's shim runs %s, want %s", exe, installed)
	}
	if up.ns(t, newChild, "ipc") != up.ns(t, parent, "ipc") || up.ns(t, newChild, "pid") != up.ns(t, parent, "pid") {
		t.Error("the new shim's child does not share the old shim's parent's namespaces")
	}
	if got := strings.TrimSpace(up.exec(t, newChild, "cat", "/dev/shm/mark")); got != "from-old" {
		t.Errorf("new child sees %q in the parent's /dev/shm", got)
	}

	// The old shim dies: containerd runs the new binary's delete in the
	// bundle the old shim wrote.
	deadShimCleaned := func(r *task) {
		t.Helper()
		killShim(t, r.id)
		tasks := filepath.Join(up.ctd.Dir(), "state", "io.containerd.runtime.v2.task", testNS)
		waitFor(t, "containerd to clean up after the dead shim of "+r.id, func() bool {
			_, err1 := os.Stat(filepath.Join(tasks, r.id))
			_, err2 := os.Stat(filepath.Join(tasks, "."+r.id))
			return os.IsNotExist(err1) && os.IsNotExist(err2) && len(containerMounts(t, r.id)) == 0
		})
		up.remove(t, r)
		r.t = nil
		up.assertNoResidue(t, r.id)
	}
	deadShimCleaned(oldChild)

	// Rollback: the old binary back in place cleans up after the new shim.
	if err := os.WriteFile(installed+".tmp", oldBytes, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(installed+".tmp", installed); err != nil {
		t.Fatal(err)
	}
	deadShimCleaned(newChild)

	// The old shim's own container: killed and deleted through it.
	if got := strings.TrimSpace(up.exec(t, parent, "cat", "/dev/shm/mark")); got != "from-old" {
		t.Errorf("the parent's /dev/shm lost its contents: %q", got)
	}
	up.remove(t, parent)
	parent.t = nil
	up.assertNoResidue(t, parent.id)
}
