package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// testPods runs pods through the kubelet on the nsiso RuntimeClass and
// looks at their namespaces and /dev/shm from inside.
func testPods(t *testing.T) {
	ctx := context.Background()
	const ns = "default"
	const sel = "e2e=pods"
	lbl := map[string]string{"e2e": "pods"}
	pods := []podSpec{
		{name: "shm", runtimeClass: "nsiso", labels: lbl, containers: []string{"app", "side"},
			annotations: map[string]string{"nsiso/shm-size": "1Gi"}},
		{name: "trainer", runtimeClass: "nsiso", labels: lbl, containers: []string{"worker", "scratch"},
			annotations: map[string]string{"nsiso/shm-size": "512Mi", "nsiso/ipc-mode.scratch": "private", "nsiso/shm-size.scratch": "128Mi"}},
		{name: "pid", runtimeClass: "nsiso", labels: lbl, containers: []string{"app", "own"},
			annotations: map[string]string{"nsiso/pid-mode.app": "share-parent", "nsiso/pid-mode.own": "private"}},
		{name: "plain", runtimeClass: "nsiso", labels: lbl},
	}
	for _, p := range pods {
		apply(ctx, t, p.manifest())
	}
	defer deletePods(ctx, t, ns, sel)
	for _, p := range pods {
		if why, err := waitOutcome(ctx, ns, p.name, 120*time.Second); err != nil || why != "" {
			t.Fatalf("pod %s does not run: %v %s", p.name, err, why)
		}
	}
	ipcNS := func(t *testing.T, pod, ctr string) string {
		return execIn(ctx, t, ns, pod, ctr, "readlink /proc/self/ns/ipc")
	}

	t.Run("pod size, shared by its containers", func(t *testing.T) {
		for _, c := range []string{"app", "side"} {
			if got := shmBytes(ctx, t, ns, "shm", c); got != 1<<30 {
				t.Errorf("%s: /dev/shm is %d bytes, want 1Gi", c, got)
			}
		}
		if a, b := ipcNS(t, "shm", "app"), ipcNS(t, "shm", "side"); a != b {
			t.Errorf("the pod's containers are in different IPC namespaces: %s, %s", a, b)
		}
		// One /dev/shm: what one container writes the other sees.
		execIn(ctx, t, ns, "shm", "app", "echo hi > /dev/shm/from-app")
		if got := execIn(ctx, t, ns, "shm", "side", "cat /dev/shm/from-app"); got != "hi" {
			t.Errorf("side reads %q from the pod's /dev/shm", got)
		}
	})
	t.Run("a container's own IPC namespace and size", func(t *testing.T) {
		if got := shmBytes(ctx, t, ns, "trainer", "worker"); got != 512<<20 {
			t.Errorf("worker: /dev/shm is %d bytes, want 512Mi", got)
		}
		if got := shmBytes(ctx, t, ns, "trainer", "scratch"); got != 128<<20 {
			t.Errorf("scratch: /dev/shm is %d bytes, want 128Mi", got)
		}
		if a, b := ipcNS(t, "trainer", "worker"), ipcNS(t, "trainer", "scratch"); a == b {
			t.Errorf("scratch shares worker's IPC namespace %s", a)
		}
	})
	t.Run("no annotation: the node's default", func(t *testing.T) {
		if got := shmBytes(ctx, t, ns, "plain", "app"); got != nodeDefaultShm {
			t.Errorf("/dev/shm is %d bytes, want the node's default %d", got, nodeDefaultShm)
		}
	})
	t.Run("PID namespaces", func(t *testing.T) {
		// share-parent joins the sandbox: its pid 1 is the pause process.
		if got := execIn(ctx, t, ns, "pid", "app", "tr '\\0' ' ' < /proc/1/cmdline"); !strings.HasPrefix(got, "/bin/sleep 2147483647") {
			t.Errorf("app's pid 1 is %q, want the sandbox's pause", got)
		}
		if got := execIn(ctx, t, ns, "pid", "own", "tr '\\0' ' ' < /proc/1/cmdline"); !strings.HasPrefix(got, "/bin/sh -c exec sleep 3600") && !strings.HasPrefix(got, "sleep 3600") {
			t.Errorf("own's pid 1 is %q, want its own command", got)
		}
		if got := execIn(ctx, t, ns, "pid", "own", "ls -d /proc/[0-9]* | wc -l"); got == "" {
			t.Error("no processes listed")
		}
	})
	t.Run("cgroup as the kubelet's driver names it", func(t *testing.T) {
		cg := hostCgroup(ctx, t, "shm", "app")
		want := cgroupRoot + "/kubepods"
		if systemdDriver() {
			want = "kubepods"
		}
		if !strings.Contains(cg, want) || systemdDriver() != strings.HasSuffix(cg, ".scope") {
			t.Errorf("the container's cgroup is %q: want one under %s made by the %s driver", cg, want, os.Getenv(cgroupDriverEnv))
		}
		t.Logf("cgroup: %s", cg)
	})
	t.Run("ephemeral container", func(t *testing.T) {
		if out, err := cluster.Kubectl(ctx, "-n", ns, "debug", "shm", "--image="+appImage, "--image-pull-policy=Never",
			"-c", "dbg", "--profile=general", "--", "sleep", "3600"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, _ := cluster.Kubectl(ctx, "-n", ns, "get", "pod", "shm", "-o", `jsonpath={.status.ephemeralContainerStatuses[?(@.name=="dbg")].state.running.startedAt}`)
			if st != "" {
				break
			}
			if time.Now().After(deadline) {
				ev, _ := cluster.Kubectl(ctx, "-n", ns, "get", "pod", "shm", "-o", "jsonpath={.status.ephemeralContainerStatuses}")
				t.Fatalf("ephemeral container not running: %s", ev)
			}
			time.Sleep(300 * time.Millisecond)
		}
		if a, b := ipcNS(t, "shm", "app"), ipcNS(t, "shm", "dbg"); a != b {
			t.Errorf("the ephemeral container is in IPC namespace %s, the pod in %s", b, a)
		}
		if got := shmBytes(ctx, t, ns, "shm", "dbg"); got != 1<<30 {
			t.Errorf("the ephemeral container's /dev/shm is %d bytes, want the pod's 1Gi", got)
		}
	})
	t.Run("hostIPC refused at the node", func(t *testing.T) {
		p := podSpec{name: "host-ipc", runtimeClass: "nsiso", labels: lbl, hostIPC: true}
		apply(ctx, t, p.manifest())
		why, err := waitOutcome(ctx, ns, p.name, 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(why, "disallow_sharing_host_ipc_namespace") {
			t.Fatalf("the kubelet reports %q; want the node's refusal naming disallow_sharing_host_ipc_namespace", why)
		}
		t.Logf("FailedCreatePodSandBox: %s", why)
	})
}

// hostCgroup is the cgroup of a pod container's init as the host sees it
// (/proc/<pid>/cgroup: the memory controller's line on v1, else the
// unified one).
func hostCgroup(ctx context.Context, t *testing.T, pod, container string) string {
	t.Helper()
	nsCtx, err := cluster.Ctd.Namespace(ctx, criNamespace)
	if err != nil {
		t.Fatal(err)
	}
	ctrs, err := cluster.Ctd.Client().Containers(nsCtx,
		`labels."io.kubernetes.pod.name"==`+pod+`,labels."io.kubernetes.container.name"==`+container)
	if err != nil || len(ctrs) != 1 {
		t.Fatalf("container %s of pod %s in containerd: %d found (%v)", container, pod, len(ctrs), err)
	}
	task, err := ctrs[0].Task(nsCtx, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", task.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	unified := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		switch {
		case len(f) != 3:
		case strings.Contains(f[1], "memory"): // v1 (a hybrid host also has a 0:: line)
			return f[2]
		case f[0] == "0":
			unified = f[2]
		}
	}
	if unified == "" {
		t.Fatalf("no cgroup line in %q", b)
	}
	return unified
}
