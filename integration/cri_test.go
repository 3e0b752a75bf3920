package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/shim"
	"github.com/nsiso/nsiso/testenv"
)

const (
	criAppImage   = "docker.io/library/nsiso-busybox:cri"
	criPauseImage = "docker.io/library/nsiso-pause:cri"
	criNS         = "k8s.io"
)

// criSuite is a second private containerd, with the CRI plugin on and the
// runtime handlers of examples/containerd/config.toml.
type criSuite struct {
	ctd      *testenv.Containerd
	rt       runtimeapi.RuntimeServiceClient
	img      runtimeapi.ImageServiceClient
	runcRoot string
	logDir   string
}

var (
	cri        criSuite
	criOnce    sync.Once
	criErr     error
	podCounter int
)

func setupCRI(t *testing.T) *criSuite {
	t.Helper()
	s := setup(t)
	criOnce.Do(func() { criErr = cri.boot(s) })
	if criErr != nil {
		t.Fatal(criErr)
	}
	return &cri
}

func stopCRI() error {
	if cri.ctd == nil {
		return nil
	}
	return cri.ctd.Stop()
}

func (c *criSuite) boot(s *suite) error {
	ctx := context.Background()
	ctdDir, err := os.MkdirTemp("", "nscri-")
	if err != nil {
		return err
	}
	c.runcRoot = testenv.RuncRoot(ctdDir)
	c.logDir = filepath.Join(s.dir, "pod-logs")

	// The examples, as an operator would install them, with the paths
	// pointed into this test's directories.
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	policy, err := os.ReadFile(filepath.Join(root, "examples", "nsiso.toml"))
	if err != nil {
		return err
	}
	if _, err := shim.ParseConfig("examples/nsiso.toml", policy); err != nil {
		return err
	}
	policyPath := filepath.Join(s.dir, "cri-nsiso.toml")
	policy = bytes.ReplaceAll(policy, []byte(`root = "/run/containerd/runc"`), []byte(fmt.Sprintf("root = %q", c.runcRoot)))
	if err := os.WriteFile(policyPath, policy, 0o644); err != nil {
		return err
	}
	snippet, err := os.ReadFile(filepath.Join(root, "examples", "containerd", "config.toml"))
	if err != nil {
		return err
	}
	cfg := string(snippet)
	cfg = strings.ReplaceAll(cfg, `"/etc/containerd/nsiso.toml"`, fmt.Sprintf("%q", policyPath))
	cfg = strings.ReplaceAll(cfg, `root = "/run/containerd/runc"`, fmt.Sprintf("root = %q", c.runcRoot))
	cfg = strings.Replace(cfg, "version = 3\n", "", 1)
	// restrict_oom_score_adj: CRI gives sandboxes -998, and lowering a
	// score needs CAP_SYS_RESOURCE, which some CI sandboxes withhold.
	cfg += fmt.Sprintf(`
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  Root = %q
# Only a cap, no default: every /dev/shm a pod's container owns must
# still be held to it.
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nsiso-maxonly]
  runtime_type = "io.containerd.nsiso.v1"
  pod_annotations = ["nsiso/*"]
  container_annotations = ["nsiso/*"]
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nsiso-maxonly.options]
    max_container_shm_size = "96Mi"
    root = %q
`, criPauseImage, c.runcRoot, c.runcRoot)

	c.ctd, err = s.h.Start(ctx, testenv.Options{
		Dir:         ctdDir,
		EnableCRI:   true,
		ExtraConfig: cfg,
	})
	if err != nil {
		return err
	}
	if err := loadCRIImages(ctx, s.h, c.ctd); err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+c.ctd.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	c.rt = runtimeapi.NewRuntimeServiceClient(conn)
	c.img = runtimeapi.NewImageServiceClient(conn)
	return waitCRIImages(ctx, c.img, criAppImage, criPauseImage)
}

// loadCRIImages imports the app and pause images into the daemon's CRI
// namespace.
func loadCRIImages(ctx context.Context, h *testenv.Harness, ctd *testenv.Containerd) error {
	nsCtx, err := ctd.Namespace(ctx, criNS)
	if err != nil {
		return err
	}
	for ref, cmd := range map[string][]string{criAppImage: {"/bin/sh"}, criPauseImage: {"/bin/sleep", "2147483647"}} {
		p, err := h.BusyboxImage(ctx, ref, cmd)
		if err != nil {
			return err
		}
		if _, err := testenv.ImportImage(nsCtx, ctd.Client(), p); err != nil {
			return err
		}
	}
	return nil
}

// waitCRIImages waits until CRI knows the images: it learns of imported
// images from containerd's events.
func waitCRIImages(ctx context.Context, img runtimeapi.ImageServiceClient, refs ...string) error {
	deadline := time.Now().Add(20 * time.Second)
	for _, ref := range refs {
		for {
			st, err := img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			if err == nil && st.Image != nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("CRI does not see image %s (%v)", ref, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// pod describes a pod for a test.
type pod struct {
	name    string
	handler string
	ann     map[string]string
	ipc     runtimeapi.NamespaceMode
	pid     runtimeapi.NamespaceMode
	// namespace is the pod's Kubernetes namespace; empty is "default".
	namespace string
	// kubelet labels the pod and its containers as the kubelet does.
	kubelet bool
}

func (p pod) k8sNamespace() string {
	if p.namespace == "" {
		return "default"
	}
	return p.namespace
}

// labels are the kubelet's labels (k8s.io/kubelet/pkg/types) for the pod's
// sandbox, or with a name for one of its containers; nil unless kubelet.
func (p pod) labels(container string) map[string]string {
	if !p.kubelet {
		return nil
	}
	l := map[string]string{"io.kubernetes.pod.namespace": p.k8sNamespace(), "io.kubernetes.pod.name": p.name, "io.kubernetes.pod.uid": p.name + "-uid"}
	if container != "" {
		l["io.kubernetes.container.name"] = container
	}
	return l
}

func (p pod) nsOptions() *runtimeapi.NamespaceOption {
	return &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Ipc: p.ipc, Pid: p.pid}
}

func (p pod) config(logDir string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: p.name, Uid: p.name + "-uid", Namespace: p.k8sNamespace()},
		LogDirectory: filepath.Join(logDir, p.name),
		Annotations:  p.ann,
		Labels:       p.labels(""),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: p.nsOptions()},
		},
	}
}

func newPodName(prefix string) string {
	podCounter++
	return fmt.Sprintf("%s-%d", prefix, podCounter)
}

// runPod runs a pod sandbox and removes it at the end of the test.
func (c *criSuite) runPod(t *testing.T, p pod) (string, error) {
	t.Helper()
	if p.handler == "" {
		p.handler = "nsiso"
	}
	resp, err := c.rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: p.config(c.logDir), RuntimeHandler: p.handler})
	if err != nil {
		return "", err
	}
	id := resp.PodSandboxId
	t.Cleanup(func() { c.removePod(t, id) })
	return id, nil
}

func (c *criSuite) removePod(t *testing.T, id string) {
	ctx := context.Background()
	if _, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Errorf("stop pod %s: %v", id, err)
	}
	if _, err := c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Errorf("remove pod %s: %v", id, err)
	}
}

// startContainer creates and starts a sleeping container in a pod.
func (c *criSuite) startContainer(t *testing.T, podID string, p pod, name string, ann map[string]string) string {
	t.Helper()
	id, err := c.createContainer(podID, p, name, ann)
	if err != nil {
		t.Fatalf("create container %s: %v", name, err)
	}
	if _, err := c.rt.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("start container %s: %v", name, err)
	}
	return id
}

func (c *criSuite) createContainer(podID string, p pod, name string, ann map[string]string) (string, error) {
	resp, err := c.rt.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{
		PodSandboxId: podID,
		Config: &runtimeapi.ContainerConfig{
			Metadata:    &runtimeapi.ContainerMetadata{Name: name},
			Image:       &runtimeapi.ImageSpec{Image: criAppImage},
			Command:     []string{"sleep", "3600"},
			LogPath:     name + ".log",
			Annotations: ann,
			Labels:      p.labels(name),
			Linux: &runtimeapi.LinuxContainerConfig{
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: p.nsOptions()},
			},
		},
		SandboxConfig: p.config(c.logDir),
	})
	if err != nil {
		return "", err
	}
	return resp.ContainerId, nil
}

// exec runs a command in a pod's container through CRI's ExecSync.
func (c *criSuite) exec(t *testing.T, id string, cmd ...string) string {
	t.Helper()
	resp, err := c.rt.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 30})
	if err != nil {
		t.Fatalf("exec %v in %s: %v", cmd, id, err)
	}
	if resp.ExitCode != 0 {
		t.Fatalf("exec %v in %s: exit %d: %s", cmd, id, resp.ExitCode, resp.Stderr)
	}
	return string(resp.Stdout)
}

func (c *criSuite) ns(t *testing.T, id, kind string) string {
	return strings.TrimSpace(c.exec(t, id, "readlink", "/proc/self/ns/"+kind))
}

func (c *criSuite) shmSize(t *testing.T, id string) int64 {
	t.Helper()
	return statfsBytes(t, c.exec(t, id, shmSizeCmd...))
}

// The pod's containers share the sandbox's IPC namespace and /dev/shm, and
// the pod's /dev/shm is sized by the pod's annotation, else by the
// operator's default; all of a pod runs under one shim.
func TestCRIPodIPCAndShmSize(t *testing.T) {
	c := setupCRI(t)
	for _, tc := range []struct {
		name    string
		handler string
		ann     map[string]string
		want    int64
	}{
		{name: "annotation", handler: "nsiso", ann: ann("nsiso/shm-size", "1Gi"), want: 1 << 30},
		{name: "operator default from ConfigPath", handler: "nsiso", want: 256 << 20},
		{name: "operator default from inline options", handler: "nsiso-batch", want: 192 << 20},
		{name: "runc.v2 for comparison", handler: "runc", want: 64 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pod{name: newPodName("shm"), handler: tc.handler, ann: tc.ann}
			sb, err := c.runPod(t, p)
			if err != nil {
				t.Fatal(err)
			}
			a := c.startContainer(t, sb, p, "a", nil)
			b := c.startContainer(t, sb, p, "b", nil)
			ipcA, ipcB := c.ns(t, a, "ipc"), c.ns(t, b, "ipc")
			if ipcA != ipcB || ipcA == hostNS(t, "ipc") {
				t.Errorf("pod IPC: a=%s b=%s host=%s", ipcA, ipcB, hostNS(t, "ipc"))
			}
			for _, id := range []string{a, b} {
				if got := c.shmSize(t, id); got != tc.want {
					t.Errorf("/dev/shm of %s: %d bytes, want %d", id, got, tc.want)
				}
			}
			c.exec(t, a, "sh", "-c", "echo shared > /dev/shm/x")
			if got := strings.TrimSpace(c.exec(t, b, "cat", "/dev/shm/x")); got != "shared" {
				t.Errorf("pod /dev/shm not shared: %q", got)
			}
			if tc.handler != "runc" {
				if pids := shimPIDs(t, sb); len(pids) != 1 {
					t.Errorf("pod %s runs under %d nsiso shims, want 1: %v", sb, len(pids), pids)
				}
				for _, id := range []string{a, b} {
					if pids := shimPIDs(t, id); len(pids) != 0 {
						t.Errorf("container %s got a shim of its own: %v", id, pids)
					}
				}
			}
		})
	}
}

// A container can opt out of the pod's IPC namespace and /dev/shm, by a
// CRI container annotation or by a pod annotation scoped to its name;
// share-parent joins the sandbox's.
func TestCRIContainerModes(t *testing.T) {
	c := setupCRI(t)
	p := pod{name: newPodName("modes"), ann: ann("nsiso/shm-size", "512Mi", "nsiso/ipc-mode.scoped", "private", "nsiso/shm-size.scoped", "48Mi")}
	sb, err := c.runPod(t, p)
	if err != nil {
		t.Fatal(err)
	}
	plain := c.startContainer(t, sb, p, "plain", nil)
	own := c.startContainer(t, sb, p, "own", ann("nsiso/ipc-mode", "private", "nsiso/shm-size", "32Mi"))
	scoped := c.startContainer(t, sb, p, "scoped", nil)
	joined := c.startContainer(t, sb, p, "joined", ann("nsiso/ipc-mode", "share-parent"))

	podIPC := c.ns(t, plain, "ipc")
	for _, tc := range []struct {
		id      string
		private bool
		size    int64
	}{{plain, false, 512 << 20}, {own, true, 32 << 20}, {scoped, true, 48 << 20}, {joined, false, 512 << 20}} {
		got := c.ns(t, tc.id, "ipc")
		if tc.private == (got == podIPC) || got == hostNS(t, "ipc") {
			t.Errorf("%s: IPC %s, pod's %s, want private=%v", tc.id, got, podIPC, tc.private)
		}
		if size := c.shmSize(t, tc.id); size != tc.size {
			t.Errorf("%s: /dev/shm %d bytes, want %d", tc.id, size, tc.size)
		}
	}
	c.exec(t, plain, "sh", "-c", "echo pod > /dev/shm/marker")
	if got := strings.TrimSpace(c.exec(t, joined, "cat", "/dev/shm/marker")); got != "pod" {
		t.Errorf("share-parent container does not see the pod's /dev/shm: %q", got)
	}
	if out, err := c.rt.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: own, Cmd: []string{"cat", "/dev/shm/marker"}, Timeout: 10}); err != nil || out.ExitCode == 0 {
		t.Errorf("private container sees the pod's /dev/shm (exit %v, err %v)", out.GetExitCode(), err)
	}
}

// shareProcessNamespace: the pod's containers see each other's processes.
func TestCRIPodPID(t *testing.T) {
	c := setupCRI(t)
	p := pod{name: newPodName("pidpod"), pid: runtimeapi.NamespaceMode_POD}
	sb, err := c.runPod(t, p)
	if err != nil {
		t.Fatal(err)
	}
	a := c.startContainer(t, sb, p, "a", nil)
	b := c.startContainer(t, sb, p, "b", nil)
	if c.ns(t, a, "pid") != c.ns(t, b, "pid") || c.ns(t, a, "pid") == hostNS(t, "pid") {
		t.Fatalf("PodPID: a=%s b=%s", c.ns(t, a, "pid"), c.ns(t, b, "pid"))
	}
	ps := c.exec(t, a, "ps", "-o", "args")
	if !strings.Contains(ps, "sleep 2147483647") || strings.Count(ps, "sleep 3600") != 2 {
		t.Errorf("ps in a PodPID pod does not show the sandbox and both containers:\n%s", ps)
	}
}

// hostIPC and hostPID pods are refused with the pod's name and the rule,
// and nothing is left: no sandbox /dev/shm mount, no shim, no runc state.
func TestCRIHostNamespacesRefused(t *testing.T) {
	c := setupCRI(t)
	for _, tc := range []struct {
		name string
		pod  pod
		want string
	}{
		{name: "hostIPC", pod: pod{name: newPodName("hostipc"), ipc: runtimeapi.NamespaceMode_NODE},
			want: `of pod "default/%s": linux.namespaces="no ipc entry": shares (the spec leaves the container in the runtime's IPC namespace) the host's IPC namespace, forbidden by disallow_sharing_host_ipc_namespace=true`},
		{name: "hostPID", pod: pod{name: newPodName("hostpid"), pid: runtimeapi.NamespaceMode_NODE},
			want: `of pod "default/%s": linux.namespaces="no pid entry": shares (the spec leaves the container in the runtime's PID namespace) the host's PID namespace, forbidden by disallow_sharing_host_pid_namespace=true`},
		{name: "shm over max", pod: pod{name: newPodName("bigshm"), ann: ann("nsiso/shm-size", "16Gi")},
			want: `of pod "default/%s": nsiso/shm-size="16Gi": pod /dev/shm of 16Gi is over max_container_shm_size=8Gi`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := mountsOf(t, c.ctd.Dir()+"/")
			_, err := c.runPod(t, tc.pod)
			want := fmt.Sprintf(tc.want, tc.pod.name)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("RunPodSandbox: got %v\nwant …%s", err, want)
			}
			if m := regexp.MustCompile(`container "([0-9a-f]{64})"`).FindStringSubmatch(err.Error()); m != nil {
				waitFor(t, "shim of the refused sandbox to exit", func() bool { return len(shimPIDs(t, m[1])) == 0 })
				if _, err := os.Stat(filepath.Join(c.runcRoot, criNS, m[1])); !os.IsNotExist(err) {
					t.Errorf("runc state of refused sandbox left: %v", err)
				}
			} else {
				t.Errorf("error does not name the sandbox container: %v", err)
			}
			after := mountsOf(t, c.ctd.Dir()+"/")
			if added := diff(after, before); len(added) > 0 {
				t.Errorf("mounts left by the refused pod:\n%s", strings.Join(added, "\n"))
			}
		})
	}
}

// After StopPodSandbox and RemovePodSandbox nothing of the pod remains.
func TestCRINoResidue(t *testing.T) {
	c := setupCRI(t)
	p := pod{name: newPodName("gone"), ann: ann("nsiso/shm-size", "128Mi")}
	resp, err := c.rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: p.config(c.logDir), RuntimeHandler: "nsiso"})
	if err != nil {
		t.Fatal(err)
	}
	sb := resp.PodSandboxId
	ids := []string{sb,
		c.startContainer(t, sb, p, "a", nil),
		c.startContainer(t, sb, p, "b", ann("nsiso/ipc-mode", "private")),
		c.startContainer(t, sb, p, "c", ann("nsiso/ipc-mode", "share-parent", "nsiso/pid-mode", "share-parent")),
	}
	c.removePod(t, sb)
	for _, id := range ids {
		if m := mountsOf(t, id); len(m) > 0 {
			t.Errorf("mounts of %s left:\n%s", id, strings.Join(m, "\n"))
		}
		if _, err := os.Stat(filepath.Join(c.runcRoot, criNS, id)); !os.IsNotExist(err) {
			t.Errorf("runc state of %s left: %v", id, err)
		}
	}
	waitFor(t, "the pod's shim to exit", func() bool { return len(shimPIDs(t, sb)) == 0 })
}

func diff(a, b []string) []string {
	seen := map[string]bool{}
	for _, x := range b {
		seen[x] = true
	}
	var out []string
	for _, x := range a {
		if !seen[x] {
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}
