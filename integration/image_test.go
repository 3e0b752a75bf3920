package integration

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"sigs.k8s.io/yaml"

	"github.com/nsiso/nsiso/nodeinstall"
	"github.com/nsiso/nsiso/testenv"
)

// daemonSetInit returns the DaemonSet in a manifest file and its init
// container that runs nsiso.
func daemonSetInit(t *testing.T, path string) (*appsv1.DaemonSet, corev1.Container) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range regexp.MustCompile(`(?m)^---$`).Split(string(data), -1) {
		if !strings.Contains(doc, "kind: DaemonSet") {
			continue
		}
		var ds appsv1.DaemonSet
		if err := yaml.UnmarshalStrict([]byte(doc), &ds); err != nil {
			t.Fatal(err)
		}
		for _, c := range ds.Spec.Template.Spec.InitContainers {
			if len(c.Command) > 0 && c.Command[0] == "/usr/local/bin/nsiso" {
				return &ds, c
			}
		}
	}
	t.Fatalf("%s: no DaemonSet with an nsiso init container", path)
	return nil, corev1.Container{}
}

// apiServer stands in for the Kubernetes API server: it records the
// requests the installer makes with its service account.
type apiServer struct {
	srv   *httptest.Server
	saDir string
	mu    sync.Mutex
	reqs  []string
}

func newAPIServer(t *testing.T) *apiServer {
	a := &apiServer{saDir: t.TempDir()}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.reqs = append(a.reqs, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")+" "+string(body))
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Node","apiVersion":"v1"}`))
	}))
	t.Cleanup(a.srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.srv.Certificate().Raw})
	writeFile(t, filepath.Join(a.saDir, "ca.crt"), string(ca))
	writeFile(t, filepath.Join(a.saDir, "token"), "installer-token")
	return a
}

func (a *apiServer) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string{}, a.reqs...)
}

// runAsDaemonSet runs the nsiso init container of a manifest through CRI
// the way kubelet would run it on a node: privileged, in the host's PID
// and network namespaces, the host's root (here the fake node's) at /host,
// the service account mounted, $(NODE_NAME) expanded. The fake node's
// containerd is this test's child, not a systemd unit, so --restart gets
// the node's --restart-command (and the directory it talks through): the
// containerd that runs the installer's pod restarts under it, as on a
// node. It returns the container's log and exit code.
func runAsDaemonSet(t *testing.T, n *fakeNode, api *apiServer, manifest, image string) (string, int32) {
	t.Helper()
	ds, c := daemonSetInit(t, manifest)
	if c.Image != image {
		t.Fatalf("%s runs %s, the test built %s", manifest, c.Image, image)
	}
	const node = "node-under-test"
	var args []string
	for _, a := range c.Args {
		args = append(args, strings.ReplaceAll(a, "$(NODE_NAME)", node))
		if a == "--restart" {
			args = append(args, "--restart-command="+n.restart)
		}
	}
	u, _ := url.Parse(api.srv.URL)
	envs := []*runtimeapi.KeyValue{
		{Key: "KUBERNETES_SERVICE_HOST", Value: []byte(u.Hostname())},
		{Key: "KUBERNETES_SERVICE_PORT", Value: []byte(u.Port())},
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			envs = append(envs, &runtimeapi.KeyValue{Key: e.Name, Value: []byte(node)})
		}
	}
	var mounts []*runtimeapi.Mount
	for _, m := range c.VolumeMounts {
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil && v.HostPath.Path == "/" {
				// kubelet asks for HostToContainer; containerd allows it
				// only on a shared or slave mount, which this machine's /
				// is not, and nothing is mounted under the fake root.
				mounts = append(mounts, &runtimeapi.Mount{ContainerPath: m.MountPath, HostPath: n.root})
			}
		}
	}
	mounts = append(mounts,
		&runtimeapi.Mount{ContainerPath: nodeinstall.ServiceAccountDir, HostPath: api.saDir, Readonly: true},
		&runtimeapi.Mount{ContainerPath: n.restartDir, HostPath: n.restartDir})
	ns := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_POD}
	if !ds.Spec.Template.Spec.HostPID {
		ns.Pid = runtimeapi.NamespaceMode_POD
	}
	privileged := c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
	ctx := context.Background()
	name := newPodName(ds.Name)
	logDir := filepath.Join(n.cri.logDir, name)
	sbConfig := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: name + "-uid", Namespace: ds.Namespace},
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: ns, Privileged: privileged}},
	}
	resp, err := n.cri.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbConfig, RuntimeHandler: "runc"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.cri.removePod(t, resp.PodSandboxId) })
	cr, err := n.cri.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId:  resp.PodSandboxId,
		SandboxConfig: sbConfig,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: c.Name},
			Image:    &runtimeapi.ImageSpec{Image: image},
			Command:  c.Command,
			Args:     args,
			Envs:     envs,
			Mounts:   mounts,
			LogPath:  c.Name + ".log",
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Privileged: privileged, NamespaceOptions: ns}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.cri.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	// containerd restarts under the installer: a status call may find it
	// away for a moment.
	var st *runtimeapi.ContainerStatus
	deadline := time.Now().Add(90 * time.Second)
	for {
		s, err := n.cri.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cr.ContainerId})
		if err == nil && s.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			st = s.Status
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %s container did not exit: %v %v", c.Name, s, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(logDir, c.Name+".log"))
	return string(log), st.ExitCode
}

// buildInstallerImage builds the image as `make image` does, under the tag
// the manifests use, and imports it into the node's containerd for CRI.
func buildInstallerImage(t *testing.T, n *fakeNode, ref string) {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	binDir, err := testenv.FindShimDir()
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "installer.tar")
	cmd := exec.Command("go", "run", "./deploy/image", "-bin", binDir, "-ref", ref, "-o", archive)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the installer image: %v\n%s", err, out)
	}
	ctx := context.Background()
	nsCtx, err := n.cri.ctd.Namespace(ctx, criNS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.ImportImage(nsCtx, n.cri.ctd.Client(), archive); err != nil {
		t.Fatal(err)
	}
	if err := waitCRIImages(ctx, n.cri.img, ref); err != nil {
		t.Fatal(err)
	}
}

// The installer image, run through CRI as deploy/nsiso.yaml's DaemonSet
// runs it, installs into the host root bind-mounted from a temporary
// directory and labels its node; the uninstaller of deploy/uninstall
// removes the label first and then restores the host root.
func TestInstallerImage(t *testing.T) {
	n := newFakeNode(t, operatorV3)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	installer := filepath.Join(root, "deploy", "nsiso.yaml")
	uninstaller := filepath.Join(root, "deploy", "uninstall", "nsiso-uninstall.yaml")
	_, c := daemonSetInit(t, installer)
	buildInstallerImage(t, n, c.Image)
	api := newAPIServer(t)
	before := n.files(t)

	start := time.Now()
	log, code := runAsDaemonSet(t, n, api, installer, c.Image)
	t.Logf("installer pod (%v):\n%s", time.Since(start).Round(time.Millisecond), log)
	if code != 0 {
		t.Fatalf("the installer exited %d", code)
	}
	binDir, _ := testenv.FindShimDir()
	want, _ := os.ReadFile(filepath.Join(binDir, nodeinstall.ShimName))
	got, err := os.ReadFile(filepath.Join(n.root, "usr/local/bin", nodeinstall.ShimName))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("the shim in the host root is not the image's (%v)", err)
	}
	wantReq := []string{`PATCH /api/v1/nodes/node-under-test Bearer installer-token {"metadata":{"labels":{"nsiso.io/runtime":"installed"}}}`}
	if r := api.requests(); !slices.Equal(r, wantReq) {
		t.Errorf("API requests %q, want %q", r, wantReq)
	}

	if n.restarts != 1 {
		t.Errorf("containerd restarted %d times, want 1", n.restarts)
	}
	if h := n.handlers(t); !slices.Contains(h, "nsiso") {
		t.Fatalf("handlers after the installer: %v", h)
	}
	p := pod{name: newPodName("via-daemonset"), ann: ann("nsiso/shm-size", "80Mi")}
	sb, err := n.cri.runPod(t, p)
	if err != nil {
		t.Fatal(err)
	}
	if got := n.cri.shmSize(t, n.cri.startContainer(t, sb, p, "c", nil)); got != 80<<20 {
		t.Errorf("/dev/shm %d bytes, want 80Mi", got)
	}
	n.cri.removePod(t, sb)

	log, code = runAsDaemonSet(t, n, api, uninstaller, c.Image)
	t.Logf("uninstaller pod:\n%s", log)
	if code != 0 {
		t.Fatalf("the uninstaller exited %d", code)
	}
	wantReq = append(wantReq, `PATCH /api/v1/nodes/node-under-test Bearer installer-token {"metadata":{"labels":{"nsiso.io/runtime":null}}}`)
	if r := api.requests(); !slices.Equal(r, wantReq) {
		t.Errorf("API requests %q, want %q", r, wantReq)
	}
	if i, j := strings.Index(log, "removed label"), strings.Index(log, "removed /"); i < 0 || j < 0 || i > j {
		t.Errorf("the label must go before the files:\n%s", log)
	}
	sameFiles(t, "after the uninstaller", before, n.files(t))
	if h := n.handlers(t); slices.Contains(h, "nsiso") || n.restarts != 2 {
		t.Errorf("after the uninstaller: handlers %v, %d restarts", h, n.restarts)
	}

}
