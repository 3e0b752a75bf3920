package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// requireDaemonDeps skips unless the test can run a real containerd.
func requireDaemonDeps(t *testing.T) Deps {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containerd and runc")
	}
	deps, err := FindDeps()
	if errors.Is(err, ErrDepsMissing) {
		t.Skipf("%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return deps
}

// syncBuffer is written by the stdio copy goroutines and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestContainer(ctx context.Context, t *testing.T, ctd *Containerd, img client.Image, id string, args ...string) client.Container {
	t.Helper()
	c, err := ctd.Client().NewContainer(ctx, id,
		client.WithImage(img),
		client.WithNewSnapshot(id+"-snapshot", img),
		client.WithRuntime("io.containerd.runc.v2", ctd.RuncOptions()),
		client.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(args...)),
	)
	if err != nil {
		t.Fatalf("create container %s: %v", id, err)
	}
	return c
}

// runToCompletion runs a container and returns its stdout, stderr and exit
// status, deleting task and container afterwards.
func runToCompletion(ctx context.Context, t *testing.T, ctd *Containerd, img client.Image, id string, args ...string) (string, string, uint32) {
	t.Helper()
	c := newTestContainer(ctx, t, ctd, img, id, args...)
	defer func() {
		if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container %s: %v", id, err)
		}
	}()
	var stdout, stderr syncBuffer
	task, err := c.NewTask(ctx, cio.NewCreator(
		cio.WithStreams(nil, &stdout, &stderr),
		cio.WithFIFODir(ctd.FIFODir()),
	))
	if err != nil {
		t.Fatalf("create task %s: %v", id, err)
	}
	statusC, err := task.Wait(ctx)
	if err != nil {
		t.Fatalf("wait task %s: %v", id, err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task %s: %v", id, err)
	}
	var status client.ExitStatus
	select {
	case status = <-statusC:
	case <-ctx.Done():
		t.Fatalf("task %s did not exit: %v", id, ctx.Err())
	}
	code, _, err := status.Result()
	if err != nil {
		t.Fatalf("task %s result: %v", id, err)
	}
	// Delete waits for the stdio copies to finish.
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete task %s: %v", id, err)
	}
	return stdout.String(), stderr.String(), code
}

// TestStartContainerd runs the whole environment for real: a private
// daemon, the busybox image with the ipcmk helper, containers on the runc
// runtime, and a Stop that has to clean up a container left running.
func TestStartContainerd(t *testing.T) {
	deps := requireDaemonDeps(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	work := t.TempDir()
	ipcmk := filepath.Join(work, "ipcmk")
	if err := BuildIpcmk(ctx, ipcmk); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(work, "busybox.tar")
	var img bytes.Buffer
	if err := BuildBusyboxImage(ctx, deps.Busybox, map[string]string{"/usr/local/bin/ipcmk": ipcmk},
		"docker.io/library/nsiso-testenv:test", &img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tarPath, img.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	ctd, err := StartContainerd(ctx, Options{
		Binary:      deps.Containerd,
		PathPrepend: []string{deps.BinDir},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctd.Stop() })
	dir := ctd.Dir()
	t.Logf("containerd %s serving on %s after %v, snapshotter %s", ctd.Version(), ctd.Address(), time.Since(start), ctd.Snapshotter())

	if v, err := ctd.Client().Version(ctx); err != nil || !strings.HasPrefix("v"+strings.TrimPrefix(v.Version, "v"), strings.SplitN(ctd.Version(), "+", 2)[0]) {
		t.Errorf("client sees version %+v (%v), binary reports %s", v, err, ctd.Version())
	}

	nctx, err := ctd.Namespace(ctx, "nsiso-testenv")
	if err != nil {
		t.Fatal(err)
	}
	image, err := ImportImage(nctx, ctd.Client(), tarPath)
	if err != nil {
		t.Fatal(err)
	}
	if image.Name() != "docker.io/library/nsiso-testenv:test" {
		t.Errorf("imported image name %q", image.Name())
	}

	stdout, stderr, code := runToCompletion(nctx, t, ctd, image, "hello", "/bin/sh", "-c", "echo hello")
	if stdout != "hello\n" || code != 0 {
		t.Errorf("echo hello: stdout %q stderr %q exit %d", stdout, stderr, code)
	}

	// The helper the integration tests rely on: create a segment with
	// ipcmk, read it back with busybox cat.
	stdout, stderr, code = runToCompletion(nctx, t, ctd, image, "ipc", "/bin/sh", "-c",
		"ipcmk -M 8192 && cat /proc/sysvipc/shm")
	m := regexp.MustCompile(`(?m)^Shared memory id: (\d+)$`).FindStringSubmatch(stdout)
	if code != 0 || m == nil {
		t.Fatalf("ipcmk: stdout %q stderr %q exit %d", stdout, stderr, code)
	}
	if !regexp.MustCompile(`(?m)^\s*-?\d+\s+` + m[1] + `\s+644\s+8192\s`).MatchString(stdout) {
		t.Errorf("segment %s not in /proc/sysvipc/shm:\n%s", m[1], stdout)
	}

	// Leave a container running; Stop has to take it down.
	sleeper := newTestContainer(nctx, t, ctd, image, "sleeper", "/bin/sleep", "1000")
	task, err := sleeper.NewTask(nctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(nctx); err != nil {
		t.Fatal(err)
	}
	sleeperPID := int(task.Pid())

	if err := ctd.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := ctd.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	assertNothingLeft(t, dir, sleeperPID)
	// The containers used RuncOptions and Stop removes the namespace
	// cgroups, so nothing of this namespace may remain in system locations.
	for _, p := range []string{"/run/containerd/runc/nsiso-testenv", "/sys/fs/cgroup/memory/nsiso-testenv", "/sys/fs/cgroup/nsiso-testenv"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}

	t.Run("cleanup after the daemon died", func(t *testing.T) {
		// With the daemon gone, Stop cannot use the API and must find the
		// shim and the container process itself.
		ctd, err := StartContainerd(ctx, Options{Binary: deps.Containerd, PathPrepend: []string{deps.BinDir}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = ctd.Stop() }()
		dir := ctd.Dir()
		nctx, err := ctd.Namespace(ctx, "nsiso-testenv")
		if err != nil {
			t.Fatal(err)
		}
		image, err := ImportImage(nctx, ctd.Client(), tarPath)
		if err != nil {
			t.Fatal(err)
		}
		c := newTestContainer(nctx, t, ctd, image, "orphan", "/bin/sleep", "1000")
		task, err := c.NewTask(nctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(nctx); err != nil {
			t.Fatal(err)
		}
		pid := int(task.Pid())
		bundles := bundleIDs(dir)
		if len(bundles["nsiso-testenv"]) != 1 {
			t.Fatalf("bundles %v", bundles)
		}
		if err := syscall.Kill(ctd.PID(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-ctd.proc.Exited()
		if err := ctd.Stop(); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		assertNothingLeft(t, dir, pid)
		addr := ctd.Address()
		for _, root := range []string{legacyShimSocketDir, ctd.shimSockDir} {
			if root == "" {
				continue
			}
			if p := shimSocketPath(root, addr, "nsiso-testenv", "orphan", false); fileExists(p) {
				t.Errorf("shim socket %s left behind", p)
			}
		}
	})

	t.Run("early exit is reported with the log", func(t *testing.T) {
		// A config version from the future makes containerd exit at once.
		_, err := StartContainerd(ctx, Options{Binary: deps.Containerd, ExtraConfig: "version = 99"})
		if err == nil {
			t.Fatal("StartContainerd succeeded with an invalid config")
		}
		if !strings.Contains(err.Error(), "exited during start-up") || !strings.Contains(err.Error(), "containerd log tail") {
			t.Errorf("error lacks reason or log tail: %v", err)
		}
		t.Log(err)
	})
}

// assertNothingLeft checks that no process, mount or file of the daemon
// rooted at dir survives.
func assertNothingLeft(t *testing.T, dir string, pids ...int) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists (%v)", dir, err)
	}
	mps, err := mountPointsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(mps) > 0 {
		t.Errorf("still mounted under %s: %v", dir, mps)
	}
	for _, pid := range pids {
		if !isZombie(pid) {
			t.Errorf("process %d still running", pid)
		}
	}
	procs, err := listProcs()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		cmd := strings.Join(p.argv, " ")
		if strings.Contains(cmd, dir) || under(p.cwd, dir) {
			t.Errorf("process %d (%s) still refers to %s", p.pid, cmd, dir)
		}
	}
	if t.Failed() {
		fmt.Fprintf(os.Stderr, "leftovers of %s found\n", dir)
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
