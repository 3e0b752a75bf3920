package integration

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"

	"github.com/nsiso/nsiso/internal/procfs"
	"github.com/nsiso/nsiso/specmod"
	"github.com/nsiso/nsiso/testenv"
)

// faultRunsEnv raises how many rounds each case of TestDaemonKilledMidCreate
// runs (default 1), for a hand run that hunts rarer interleavings.
const faultRunsEnv = "NSISO_FAULT_RUNS"

const (
	faultNS       = "nsiso-fault"
	faultCreates  = 10
	faultParents  = 2
	legacySockDir = "/run/containerd/s" // shims built with containerd 2.2's shim library
)

// containerd is SIGKILLed while ten task creates are in flight, restarted,
// and everything is deleted through the client: no shim process, shim
// socket, bundle, mount or runc state of the daemon may be left, for nsiso
// and, as the reference, for the stock runc.v2 (which ignores nsiso's
// annotations; its legs keep the same shape). A shim containerd started
// but never recorded is containerd's to lose (docs/compatibility.md):
// runc.v2's are logged, nsiso's delete command must shut them down.
func TestDaemonKilledMidCreate(t *testing.T) {
	s := setup(t)
	runs := 1
	if v := os.Getenv(faultRunsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", faultRunsEnv, v)
		}
		runs = n
	}
	// Under /tmp and short, so the daemon's shim socket_dir is <dir>/s.
	dir, err := os.MkdirTemp("/tmp", "nsfl-")
	if err != nil {
		t.Fatal(err)
	}
	f := &fault{s: s, dir: dir, sockDir: filepath.Join(dir, "s"), runcRoot: testenv.RuncRoot(dir)}
	policy, err := s.h.WritePolicy("fault.toml", f.runcRoot, `default_container_shm_size = "96Mi"`)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	logPath := filepath.Join(t.TempDir(), "containerd.log")
	f.ctd, err = s.h.Start(ctx, testenv.Options{Dir: dir, LogPath: logPath, Env: []string{"NSISO_CONFIG=" + policy}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logLines(t, logPath, "bootstrap.json")
		}
		if err := f.ctd.Stop(); err != nil {
			t.Errorf("stop the fault test's containerd: %v", err)
		}
		// Stop removes the sockets of the bundles it finds; an orphan's
		// bundle is gone.
		for _, id := range f.ids {
			f.removeSockets(id)
		}
	})
	if f.ctx, err = f.ctd.Namespace(ctx, faultNS); err != nil {
		t.Fatal(err)
	}
	if f.image, err = testenv.ImportImage(f.ctx, f.ctd.Client(), s.imageTar); err != nil {
		t.Fatal(err)
	}
	for _, rt := range []string{nsisoRuntime, runcRuntime} {
		for _, parents := range []bool{false, true} {
			name := strings.Split(rt, ".")[2] + map[bool]string{false: "-plain", true: "-parents"}[parents]
			t.Run(name, func(t *testing.T) {
				hits, orphans := 0, 0
				// A kill can miss the window (every start already recorded);
				// such a round proves nothing and is run again.
				for try := 0; hits < runs && try < 5*runs; try++ {
					hit, n := f.round(t, rt, parents)
					if hit {
						hits++
					}
					orphans += n
				}
				if hits < runs {
					t.Fatalf("the kill landed between a shim's start and containerd recording it in %d of %d rounds", hits, runs)
				}
				t.Logf("%s: %d orphan shim(s) in %d round(s)", name, orphans, hits)
			})
		}
	}
}

// fault is the private daemon of TestDaemonKilledMidCreate.
type fault struct {
	s        *suite
	ctd      *testenv.Containerd
	ctx      context.Context
	image    client.Image
	dir      string
	sockDir  string
	runcRoot string
	ids      []string // every container made, for the final clean-up
}

// round runs one kill-restart-delete round. It reports whether the kill
// landed in the window (a shim was running that containerd had not
// recorded) and how many orphan shims were left.
func (f *fault) round(t *testing.T, rt string, parents bool) (hit bool, orphans int) {
	t.Helper()
	var ids, parentIDs []string
	if parents {
		for i := 0; i < faultParents; i++ {
			id := f.newID("p")
			c := f.newContainer(t, id, rt, ann(specmod.AnnotationIPCMode, "private"))
			tk, err := c.NewTask(f.ctx, cio.NullIO)
			if err != nil {
				t.Fatalf("create parent %s: %v", id, err)
			}
			if err := tk.Start(f.ctx); err != nil {
				t.Fatalf("start parent %s: %v", id, err)
			}
			parentIDs = append(parentIDs, id)
		}
	}
	var ctrs []client.Container
	for i := 0; i < faultCreates; i++ {
		id := f.newID("c")
		var a map[string]string
		if parents {
			a = ann(specmod.AnnotationIPCMode, "share-parent", specmod.AnnotationPIDMode, "share-parent",
				specmod.AnnotationParent, parentIDs[i%len(parentIDs)])
		}
		ctrs = append(ctrs, f.newContainer(t, id, rt, a))
		ids = append(ids, id)
	}

	var wg sync.WaitGroup
	for _, c := range ctrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = c.NewTask(f.ctx, cio.NullIO) // most fail: the daemon dies under them
		}()
	}
	// Kill the daemon the moment a shim serves that it has not yet
	// recorded: its start command returned, bootstrap.json is not written.
	deadline := time.Now().Add(30 * time.Second)
	for len(f.unrecorded(t)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no shim was seen between its start and containerd recording it")
		}
	}
	if err := f.ctd.Kill(); err != nil {
		t.Fatal(err)
	}
	// Start commands cut off from the daemon still fork their shims.
	f.waitShims(t, func(p shimProc) bool { return p.action == "start" })
	unrecorded := f.unrecorded(t)
	t.Logf("%d shim(s) running that containerd had not recorded when it was killed", len(unrecorded))
	if err := f.ctd.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	f.deleteAll(t)
	left := f.residue(t, append(parentIDs, ids...), unrecorded, rt == runcRuntime)
	f.reap(t, left)
	return len(unrecorded) > 0, len(left)
}

func (f *fault) newID(prefix string) string {
	id := fmt.Sprintf("%s%d-%d", prefix, os.Getpid()%10000, len(f.ids)+1)
	f.ids = append(f.ids, id)
	return id
}

func (f *fault) newContainer(t *testing.T, id, rt string, a map[string]string) client.Container {
	t.Helper()
	opts := []oci.SpecOpts{oci.WithImageConfig(f.image), oci.WithProcessArgs("sleep", "3600")}
	if len(a) > 0 {
		opts = append(opts, oci.WithAnnotations(a))
	}
	var ro any
	if rt == runcRuntime {
		ro = f.ctd.RuncOptions()
	}
	c, err := f.ctd.Client().NewContainer(f.ctx, id,
		client.WithImage(f.image),
		client.WithNewSnapshot(id+"-snap", f.image),
		client.WithRuntime(rt, ro),
		client.WithNewSpec(opts...),
	)
	if err != nil {
		t.Fatalf("new container %s: %v", id, err)
	}
	return c
}

func (f *fault) bundle(id string) string {
	return filepath.Join(f.dir, "state", "io.containerd.runtime.v2.task", faultNS, id)
}

// deleteAll deletes every task and container of the namespace, as an
// operator (or kubelet) does after a crash.
func (f *fault) deleteAll(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 60*time.Second)
	defer cancel()
	ctrs, err := f.ctd.Client().Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ctrs {
		if tk, err := c.Task(ctx, nil); err == nil {
			if _, err := tk.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				t.Errorf("delete task %s: %v", c.ID(), err)
			}
		} else if !errdefs.IsNotFound(err) {
			t.Errorf("task of %s: %v", c.ID(), err)
		}
		if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			t.Errorf("delete container %s: %v", c.ID(), err)
		}
	}
}

// shimProc is a shim process of the fault test's daemon.
type shimProc struct {
	pid    int
	id     string
	action string // "start", "delete" or "" for a serving shim
}

// shims lists the daemon's shim processes; with action, only those.
func (f *fault) shims(t *testing.T, action ...string) []shimProc {
	t.Helper()
	pids, err := procfs.PIDs()
	if err != nil {
		t.Fatal(err)
	}
	var out []shimProc
	for _, pid := range pids {
		args, err := procfs.Cmdline(pid)
		if err != nil || len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim-") {
			continue
		}
		p := shimProc{pid: pid}
		ours := false
		for i, a := range args[1:] {
			switch {
			case a == "-address" && i+2 < len(args) && args[i+2] == f.ctd.Address():
				ours = true
			case a == "-id" && i+2 < len(args):
				p.id = args[i+2]
			case a == "start" || a == "delete":
				p.action = a
			}
		}
		if ours && (len(action) == 0 || slices.Contains(action, p.action)) {
			out = append(out, p)
		}
	}
	return out
}

// socketPath is where a shim of this daemon listens for container id (no
// grouping label): shim.SocketAddress names it by a hash.
func (f *fault) socketPath(root, id string) string {
	return filepath.Join(root, fmt.Sprintf("%x", sha256.Sum256([]byte(filepath.Join(f.ctd.Address(), faultNS, id)))))
}

// unrecorded returns the ids of the daemon's serving shims whose bundle
// has no bootstrap.json: containerd started them but has not recorded
// where they listen.
func (f *fault) unrecorded(t *testing.T) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, p := range f.shims(t, "") {
		if _, err := os.Stat(filepath.Join(f.bundle(p.id), "bootstrap.json")); os.IsNotExist(err) {
			ids[p.id] = true
		}
	}
	return ids
}

// waitShims waits up to 10s until no shim process matches.
func (f *fault) waitShims(t *testing.T, match func(shimProc) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && slices.ContainsFunc(f.shims(t), match) {
		time.Sleep(100 * time.Millisecond)
	}
}

// residue reports what is left of ids and returns the shims left running.
// With upstreamOrphans, a shim containerd never recorded and its socket
// are logged, not failed: containerd leaves those of runc.v2 (see
// docs/compatibility.md); nsiso's delete command shuts them down.
func (f *fault) residue(t *testing.T, ids []string, unrecorded map[string]bool, upstreamOrphans bool) []shimProc {
	t.Helper()
	// Shims of deleted tasks exit shortly after containerd's Shutdown; an
	// orphan containerd never recorded would be waited for in vain.
	f.waitShims(t, func(p shimProc) bool { return p.action != "" || !unrecorded[p.id] })
	left := f.shims(t)
	for _, p := range left {
		switch {
		case p.action != "":
			t.Errorf("shim %s command of %s (pid %d) still running", p.action, p.id, p.pid)
		case upstreamOrphans && unrecorded[p.id]:
			t.Logf("upstream: orphan shim of %s (pid %d%s), started but never recorded by containerd, left running", p.id, p.pid, logWait(p.pid))
		default:
			t.Errorf("orphan shim of %s (pid %d%s) left running; containerd had recorded it: %v", p.id, p.pid, logWait(p.pid), !unrecorded[p.id])
		}
	}
	for _, id := range ids {
		for _, root := range []string{f.sockDir, legacySockDir} {
			sock := f.socketPath(root, id)
			switch {
			case !exists(sock):
			case upstreamOrphans && unrecorded[id]:
				t.Logf("upstream: %s: shim socket %s left behind", id, sock)
			default:
				t.Errorf("%s: shim socket %s left behind", id, sock)
			}
		}
		if b := f.bundle(id); exists(b) {
			t.Errorf("%s: bundle %s left behind", id, b)
		}
		if st := filepath.Join(f.runcRoot, faultNS, id); exists(st) {
			t.Errorf("%s: runc state %s left behind", id, st)
		}
		if m := containerMounts(t, id); len(m) > 0 {
			t.Errorf("%s: mounts left behind:\n%s", id, strings.Join(m, "\n"))
		}
	}
	return left
}

// logWait tells whether a shim is blocked opening its log FIFO, which it
// does before it serves, until a reader opens the other end.
func logWait(pid int) string {
	chans, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", pid))
	for _, c := range chans {
		if b, err := os.ReadFile(c); err == nil && string(b) == "wait_for_partner" {
			return ", blocked opening its log FIFO"
		}
	}
	return ""
}

// reap kills what a round left, so the next round starts clean.
func (f *fault) reap(t *testing.T, left []shimProc) {
	t.Helper()
	for _, p := range left {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
		f.removeSockets(p.id)
	}
}

// removeSockets removes the shim sockets named for container id.
func (f *fault) removeSockets(id string) {
	for _, root := range []string{f.sockDir, legacySockDir} {
		p := f.socketPath(root, id)
		if st, err := os.Lstat(p); err == nil && st.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(p)
		}
	}
}

// logLines logs the lines of the daemon log that contain part.
func logLines(t *testing.T, path, part string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Log(err)
		return
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, part) {
			t.Log("containerd: " + l)
		}
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// The shutdown nsiso's delete command sends is for an orphan only: run by
// hand in the bundle of a container whose shim still holds it (runc.v2's
// delete force-deletes the container itself), it must leave the shim
// running, for containerd to delete the task through it as usual.
func TestShimDeleteLeavesShimInUse(t *testing.T) {
	s := setup(t)
	r := s.start(t, newID("inuse"), spec{})
	pids := shimPIDs(t, r.id)
	if len(pids) != 1 {
		t.Fatalf("shim of %s: %v", r.id, pids)
	}
	bundle := filepath.Join(s.ctd.Dir(), "state", "io.containerd.runtime.v2.task", testNS, r.id)
	cmd := exec.Command(filepath.Join(s.h.ShimDir, "containerd-shim-nsiso-v1"),
		"-namespace", testNS, "-address", s.ctd.Address(), "-publish-binary", s.h.Deps.Containerd,
		"-id", r.id, "-bundle", bundle, "delete")
	cmd.Dir = bundle
	// As containerd runs it: runc on PATH, the daemon's addresses in the environment.
	cmd.Env = append(os.Environ(), "PATH="+s.h.ShimDir+":"+s.h.Deps.BinDir+":"+os.Getenv("PATH"),
		"TTRPC_ADDRESS="+s.ctd.TTRPCAddress(), "GRPC_ADDRESS="+s.ctd.Address(), "NAMESPACE="+testNS)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("shim delete: %v\n%s", err, stderr.String())
	}
	if strings.Contains(stderr.String(), "shut down a shim") {
		t.Errorf("delete reports shutting the shim down:\n%s", stderr.String())
	}
	pid, _ := strconv.Atoi(pids[0])
	if syscall.Kill(pid, 0) != nil || isZombieProc(pid) {
		t.Fatalf("the shim of %s (pid %s), still holding its container, was stopped", r.id, pids[0])
	}
	// containerd still reaches it: the task's status comes from the shim.
	if _, err := r.t.Status(s.ctx); err != nil {
		t.Errorf("status of %s through its shim: %v", r.id, err)
	}
}

// isZombieProc tells whether pid has exited and waits to be reaped.
func isZombieProc(pid int) bool {
	st, err := procfs.ReadStat(pid)
	return err != nil || st.State == "Z"
}
