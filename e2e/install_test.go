package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nsiso/nsiso/testenv"
)

// TestNode is the whole life of nsiso on a node, in order: the installer
// DaemonSet installs it, pods run on it, the admission policy guards it,
// and the uninstaller takes it away again.
func TestNode(t *testing.T) {
	if cluster == nil {
		t.Skip(binDirEnv + " is not set: no cluster (make e2e)")
	}
	before := configDigest(t)
	if !t.Run("install", testInstall) {
		t.FailNow()
	}
	t.Run("pods", testPods)
	t.Run("pod-cases", testPodCasesOnNode)
	t.Run("audit", testAudit)
	t.Run("admission", testAdmission)
	t.Run("startup", testStartup)
	t.Run("uninstall", func(t *testing.T) { testUninstall(t, before) })
}

// nodePaths are where the installer puts nsiso on this node, as the host
// sees them: inside the cluster's directory, never /usr/local/bin or
// /etc/containerd.
func nodePaths() (binDir, policy string) {
	return filepath.Join(cluster.Dir, "node-bin"), filepath.Join(cluster.Dir, "nsiso.toml")
}

// overlay writes a kustomization that takes base (deploy/ or
// deploy/uninstall/) as an operator would and points the installer's
// arguments at this node: its containerd's config and socket, and a
// restart through this test binary (the node's service manager).
func overlay(t *testing.T, name, base, kind, dsName string, args []string) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cluster.Dir, "overlays", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// kustomize takes only relative paths to a base.
	rel, err := filepath.Rel(dir, filepath.Join(root, base))
	if err != nil {
		t.Fatal(err)
	}
	argsJSON, _ := json.Marshal(args)
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
patches:
- target: {kind: %s, name: %s}
  patch: |-
    - op: replace
      path: /spec/template/spec/initContainers/0/args
      value: %s
`, rel, kind, dsName, argsJSON)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// restartCommand is what the installer runs to restart containerd: a
// signal to this test binary, which restarts the daemon (supervise).
func restartCommand() string { return fmt.Sprintf("kill -USR1 %d", os.Getpid()) }

// nodePolicy is the operator's nsiso.toml, written before the install
// (which keeps a file it finds): the node rules specmod/testdata/pod-cases.json
// is written for, with its nodeMaxShmSize and no default size.
const nodePolicy = `disallow_sharing_host_ipc_namespace = true
disallow_sharing_host_pid_namespace = true
max_container_shm_size = "8Gi"
binary_name = %q
systemd_cgroup = %t
`

// nodeDefaultShm is a pod's /dev/shm when nothing sizes it: containerd's
// CRI makes it 64Mi, and nodePolicy sets no default.
const nodeDefaultShm = 64 << 20

func testInstall(t *testing.T) {
	ctx := context.Background()
	binDir, policy := nodePaths()
	if err := os.WriteFile(policy, []byte(fmt.Sprintf(nodePolicy, cluster.Runc(), systemdDriver())), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := overlay(t, "install", "deploy", "DaemonSet", "nsiso-installer", []string{
		"--root=/host", "--handler=nsiso", "--restart", "--restart-command=" + restartCommand(),
		"--kube-node=$(NODE_NAME)", "--node-label=nsiso.io/runtime=installed",
		"--config=" + cluster.Ctd.ConfigPath(), "--address=" + cluster.Ctd.Address(),
		"--bin-dir=" + binDir, "--nsiso-config=" + policy,
	})
	if out, err := cluster.Kubectl(ctx, "apply", "-k", dir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := cluster.Kubectl(ctx, "-n", "nsiso-system", "rollout", "status", "daemonset/nsiso-installer", "--timeout=180s"); err != nil {
		logs, _ := cluster.Kubectl(ctx, "-n", "nsiso-system", "logs", "daemonset/nsiso-installer", "-c", "install")
		t.Fatalf("%v\n%s\ninstaller log:\n%s", err, out, logs)
	}
	label, err := cluster.Kubectl(ctx, "get", "node", nodeName, "-o", `jsonpath={.metadata.labels.nsiso\.io/runtime}`)
	if err != nil || label != "installed" {
		t.Fatalf("node label nsiso.io/runtime = %q (%v)", label, err)
	}
	if _, err := os.Stat(filepath.Join(binDir, "containerd-shim-nsiso-v1")); err != nil {
		t.Fatalf("shim not installed: %v", err)
	}
	logs, _ := cluster.Kubectl(ctx, "-n", "nsiso-system", "logs", "daemonset/nsiso-installer", "-c", "install")
	t.Logf("installer:\n%s", logs)
	// The runc handler, for the pods the start-up benchmark pairs.
	apply(ctx, t, `{"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "runc"}, "handler": "runc"}`)
}

func testUninstall(t *testing.T, before string) {
	ctx := context.Background()
	binDir, _ := nodePaths()
	if out, err := cluster.Kubectl(ctx, "-n", "nsiso-system", "delete", "daemonset", "nsiso-installer", "--wait=true"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	dir := overlay(t, "uninstall", "deploy/uninstall", "DaemonSet", "nsiso-uninstaller", []string{
		"--root=/host", "--restart", "--restart-command=" + restartCommand(),
		"--kube-node=$(NODE_NAME)", "--node-label=nsiso.io/runtime=installed",
		"--address=" + cluster.Ctd.Address(),
	})
	if out, err := cluster.Kubectl(ctx, "apply", "-k", dir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := cluster.Kubectl(ctx, "-n", "nsiso-system", "rollout", "status", "daemonset/nsiso-uninstaller", "--timeout=180s"); err != nil {
		logs, _ := cluster.Kubectl(ctx, "-n", "nsiso-system", "logs", "daemonset/nsiso-uninstaller", "-c", "uninstall")
		t.Fatalf("%v\n%s\nuninstaller log:\n%s", err, out, logs)
	}
	logs, _ := cluster.Kubectl(ctx, "-n", "nsiso-system", "logs", "daemonset/nsiso-uninstaller", "-c", "uninstall")
	t.Logf("uninstaller:\n%s", logs)
	if after := configDigest(t); after != before {
		t.Errorf("containerd's config after uninstall differs from before install (sha256 %s, was %s)", after, before)
	}
	if label, _ := cluster.Kubectl(ctx, "get", "node", nodeName, "-o", `jsonpath={.metadata.labels.nsiso\.io/runtime}`); label != "" {
		t.Errorf("node label nsiso.io/runtime still %q", label)
	}
	if _, err := os.Stat(filepath.Join(binDir, "containerd-shim-nsiso-v1")); err == nil {
		t.Error("shim still installed")
	}
	// Removal as docs/install.md has it: the uninstaller, then deploy/.
	for _, d := range []string{dir, filepath.Join(cluster.Dir, "overlays", "install")} {
		if out, err := cluster.Kubectl(ctx, "delete", "-k", d, "--ignore-not-found", "--wait=true"); err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	}
}

// configDigest is the sha256 of containerd's config file on the node.
func configDigest(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(cluster.Ctd.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}
