package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nsiso/nsiso/testenv"
)

// nodeName is the one node's name.
const nodeName = "e2e-node"

// Cluster is a one-node Kubernetes: etcd, the control plane, and a kubelet
// and kube-proxy on the project's own containerd, all in the test binary's
// network and mount namespaces and under one directory.
type Cluster struct {
	Dir        string
	Kubeconfig string // cluster-admin
	Ctd        *testenv.Containerd
	h          *testenv.Harness
	bin        string
	pki        *pki
	daemons    []*daemon
}

// binDirEnv names the directory with the Kubernetes, etcd and CNI
// binaries (scripts/install-e2e-deps.sh).
const binDirEnv = "NSISO_E2E_BIN"

// StartCluster starts every component and waits until the node is Ready.
// On error what was started is stopped again.
func StartCluster(ctx context.Context, h *testenv.Harness, dir, bin string) (_ *Cluster, err error) {
	c := &Cluster{Dir: dir, h: h, bin: bin}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	if c.pki, err = newPKI(filepath.Join(dir, "pki")); err != nil {
		return nil, err
	}
	if err := c.issueCerts(); err != nil {
		return nil, err
	}
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"containerd", c.startContainerd},
		{"controllers", c.startControllers},
		{"kubelet", c.startKubelet},
		{"kube-proxy", c.startKubeProxy},
		{"node Ready", c.waitNodeReady},
	}
	for _, s := range steps {
		if err := s.run(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return c, nil
}

func (c *Cluster) issueCerts() error {
	p := c.pki
	hosts := []string{nodeIP, serviceIP, "127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", nodeName}
	for _, cert := range []struct {
		name, cn string
		orgs     []string
		hosts    []string
	}{
		{"apiserver", "kube-apiserver", nil, hosts},
		{"kubelet-serving", nodeName, nil, []string{nodeIP, nodeName}},
		{"admin", "nsiso-e2e-admin", []string{"system:masters"}, nil},
		{"kubelet", "system:node:" + nodeName, []string{"system:nodes"}, nil},
	} {
		if err := p.issue(cert.name, cert.cn, cert.orgs, cert.hosts); err != nil {
			return err
		}
	}
	var err error
	if c.Kubeconfig, err = p.kubeconfig("admin", "https://"+nodeIP+":6443"); err != nil {
		return err
	}
	_, err = p.kubeconfig("kubelet", "https://"+nodeIP+":6443")
	return err
}

func (c *Cluster) start(name string, args ...string) error {
	d, err := startDaemon(c.Dir, name, filepath.Join(c.bin, name), args...)
	if err != nil {
		return err
	}
	c.daemons = append(c.daemons, d)
	return nil
}

func (c *Cluster) daemon(name string) *daemon {
	for _, d := range c.daemons {
		if d.name == name {
			return d
		}
	}
	return nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	if err := c.start("etcd", "--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380", "--unsafe-no-fsync"); err != nil {
		return err
	}
	return c.waitHTTP(ctx, "etcd", "http://127.0.0.1:2379/health")
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	p := c.pki.path
	if err := c.start("kube-apiserver",
		"--etcd-servers=http://127.0.0.1:2379",
		"--advertise-address="+nodeIP, "--secure-port=6443",
		"--service-cluster-ip-range="+serviceCIDR,
		"--cert-dir="+filepath.Join(c.Dir, "apiserver"),
		"--tls-cert-file="+p("apiserver.crt"), "--tls-private-key-file="+p("apiserver.key"),
		"--client-ca-file="+p("ca.crt"),
		"--kubelet-client-certificate="+p("admin.crt"), "--kubelet-client-key="+p("admin.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p("sa.pub"), "--service-account-signing-key-file="+p("sa.key"),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true", "--profiling=false"); err != nil {
		return err
	}
	return c.poll(ctx, "kube-apiserver", 3*time.Minute, func() error {
		_, err := c.Kubectl(ctx, "get", "--raw", "/readyz")
		return err
	})
}

func (c *Cluster) startControllers(ctx context.Context) error {
	p := c.pki.path
	if err := c.start("kube-controller-manager", "--kubeconfig="+c.Kubeconfig,
		"--service-account-private-key-file="+p("sa.key"), "--root-ca-file="+p("ca.crt"),
		"--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false"); err != nil {
		return err
	}
	return c.start("kube-scheduler", "--kubeconfig="+c.Kubeconfig, "--leader-elect=false",
		"--bind-address=127.0.0.1", "--profiling=false")
}

// startContainerd starts the node's containerd with CRI, the CNI bridge
// and the local pause image: the runtime before nsiso is installed.
func (c *Cluster) startContainerd(ctx context.Context) error {
	cniConf := filepath.Join(c.Dir, "cni", "net.d")
	if err := os.MkdirAll(cniConf, 0o755); err != nil {
		return err
	}
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "nsiso-e2e", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}
`, filepath.Join(c.Dir, "cni", "ipam"), podCIDR)
	if err := os.WriteFile(filepath.Join(cniConf, "10-nsiso-e2e.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`
[plugins."io.containerd.cri.v1.runtime"]
  # CRI gives sandboxes -998; lowering a score needs CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = [%q]
  conf_dir = %q
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  BinaryName = %q
  SystemdCgroup = %t
`, filepath.Join(c.bin, "cni"), cniConf, pauseImage, c.Runc(), systemdDriver())
	var err error
	c.Ctd, err = c.h.Start(ctx, testenv.Options{
		Dir:         filepath.Join(c.Dir, "containerd"),
		EnableCRI:   true,
		ExtraConfig: cfg,
		LogPath:     filepath.Join(c.Dir, "containerd.log"),
	})
	if err != nil {
		return err
	}
	return c.importImages(ctx)
}

func (c *Cluster) startKubelet(ctx context.Context) error {
	p := c.pki.path
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
tlsCertFile: %s
tlsPrivateKeyFile: %s
containerRuntimeEndpoint: unix://%s
%s
failCgroupV1: false
failSwapOn: false
protectKernelDefaults: true
podLogsDir: %s
volumePluginDir: %s
resolvConf: ""
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%%", "imagefs.available": "1%%", "nodefs.inodesFree": "1%%"}
serializeImagePulls: false
# The System V limits are namespaced but not "safe" sysctls: a node that
# lets pods set them allows them, and nsiso holds them to its cap.
allowedUnsafeSysctls: ["kernel.shm*"]
`, nodeIP, p("ca.crt"), p("kubelet-serving.crt"), p("kubelet-serving.key"), c.Ctd.Address(), cgroupConfig(),
		filepath.Join(c.Dir, "pod-logs"), filepath.Join(c.Dir, "kubelet", "volume-plugins"))
	cfgPath := filepath.Join(c.Dir, "kubelet.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	return c.start("kubelet", "--config="+cfgPath, "--kubeconfig="+p("kubelet.kubeconfig"),
		"--root-dir="+filepath.Join(c.Dir, "kubelet"), "--hostname-override="+nodeName, "--node-ip="+nodeIP)
}

func (c *Cluster) startKubeProxy(ctx context.Context) error {
	cfg := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %s}
hostnameOverride: %s
mode: iptables
clusterCIDR: %s
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
`, c.Kubeconfig, nodeName, podCIDR)
	cfgPath := filepath.Join(c.Dir, "kube-proxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	return c.start("kube-proxy", "--config="+cfgPath)
}

func (c *Cluster) waitNodeReady(ctx context.Context) error {
	return c.poll(ctx, "node "+nodeName, 4*time.Minute, func() error {
		out, err := c.Kubectl(ctx, "get", "node", nodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil {
			return err
		}
		if out != "True" {
			return fmt.Errorf("condition Ready is %q", out)
		}
		return nil
	})
}

// cgroupDriverEnv selects the kubelet's and runc's cgroup driver:
// "cgroupfs" (the default) or "systemd" (needs systemd as PID 1).
const cgroupDriverEnv = "NSISO_E2E_CGROUP_DRIVER"

func systemdDriver() bool { return os.Getenv(cgroupDriverEnv) == "systemd" }

// cgroupConfig is the kubelet's cgroup settings: with cgroupfs its pods go
// under a root of their own (removed at the end); with systemd under
// kubepods.slice, as on every systemd node.
func cgroupConfig() string {
	if systemdDriver() {
		return "cgroupDriver: systemd"
	}
	return "cgroupDriver: cgroupfs\ncgroupRoot: " + cgroupRoot
}

// Runc is the node's runc: built with seccomp, which every pod sandbox
// gets from containerd's CRI.
func (c *Cluster) Runc() string { return filepath.Join(c.bin, "runc-seccomp", "runc") }

// Kubectl runs kubectl as cluster-admin and returns its trimmed stdout;
// the error carries stderr.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.KubectlIn(ctx, "", args...)
}

// KubectlIn is Kubectl with stdin.
func (c *Cluster) KubectlIn(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return strings.TrimSpace(string(out)), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

func (c *Cluster) waitHTTP(ctx context.Context, name, url string) error {
	return c.poll(ctx, name, 30*time.Second, func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
}

// poll calls f until it succeeds, the component named name exits, or
// timeout passes; the error then carries the component's log tail.
func (c *Cluster) poll(ctx context.Context, name string, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		d := c.daemon(name)
		if d != nil && !d.Running() {
			return fmt.Errorf("%s exited:\n%s", name, d.tail(30))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			msg := fmt.Sprintf("%s not ready after %s: %v", name, timeout, err)
			if d != nil {
				msg += "\n" + d.tail(30)
			}
			return errors.New(msg)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Stop stops the node (pods first, through containerd) and then the
// control plane, newest first.
func (c *Cluster) Stop() error {
	var errs []error
	if d := c.daemon("kubelet"); d != nil {
		d.Stop(10 * time.Second)
	}
	if c.Ctd != nil {
		errs = append(errs, c.Ctd.Stop())
	}
	for i := len(c.daemons) - 1; i >= 0; i-- {
		c.daemons[i].Stop(10 * time.Second)
	}
	return errors.Join(errs...)
}
