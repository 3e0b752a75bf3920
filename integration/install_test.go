package integration

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nsiso/nsiso/testenv"
)

// fakeNode is a host root in a temporary directory with a private CRI
// containerd whose socket is the root's /run/containerd/containerd.sock,
// so `nsiso install --root` finds it where it would on a node. The daemon
// loads the root's containerd config and drop-ins as a node's would, from
// a copy ("live") with the host paths they name pointed into the root.
type fakeNode struct {
	root, live string
	cri        *criSuite
	// restart is a --restart-command that has the test restart the daemon
	// and returns when it serves again.
	restart string
	// restartDir holds the files the restart command and the test talk
	// through.
	restartDir string
	// restarts counts the restarts done for that command.
	restarts int
}

// nsisoBin is the freshly built nsiso command.
func nsisoBin(t *testing.T) string {
	t.Helper()
	dir, err := testenv.FindShimDir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "nsiso")
}

// runNsiso runs the nsiso command and returns its combined output and exit
// code.
func runNsiso(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(nsisoBin(t), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		t.Fatalf("nsiso %v: %v", args, err)
	}
	return string(out), 0
}

// newFakeNode writes the operator's containerd config (none when empty)
// and starts the daemon on it.
func newFakeNode(t *testing.T, config string) *fakeNode {
	t.Helper()
	s := setup(t)
	deps, err := testenv.FindDeps()
	if err != nil {
		t.Fatal(err)
	}
	// Short: the daemon's sockets live under it.
	root, err := os.MkdirTemp("/tmp", "nsi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	n := &fakeNode{root: root, live: t.TempDir()}
	if config != "" {
		writeFile(t, filepath.Join(root, "etc/containerd/config.toml"), config)
	}
	runcRoot := filepath.Join(root, "run/containerd/runc")
	n.sync(t, runcRoot)
	ctd, err := testenv.StartContainerd(context.Background(), testenv.Options{
		Binary:        deps.Containerd,
		Dir:           filepath.Join(root, "run/containerd"),
		PathPrepend:   []string{filepath.Join(root, "usr/local/bin"), deps.BinDir},
		EnableCRI:     true,
		ConfigImports: []string{filepath.Join(n.live, "etc/containerd/config.toml")},
		ExtraConfig: fmt.Sprintf(`
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  Root = %q
`, criPauseImage, runcRoot),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ctd.Stop(); err != nil {
			t.Errorf("stop containerd: %v", err)
		}
	})
	ctx := context.Background()
	if err := loadCRIImages(ctx, s.h, ctd); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+ctd.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n.cri = &criSuite{ctd: ctd, rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn),
		runcRoot: runcRoot, logDir: filepath.Join(t.TempDir(), "pod-logs")}
	if err := waitCRIImages(ctx, n.cri.img, criAppImage, criPauseImage); err != nil {
		t.Fatal(err)
	}
	n.serveRestarts(t, runcRoot)
	return n
}

// sync copies the root's /etc/containerd to the live copy the daemon
// loads, with the host paths pointed into the root, and nsiso's runc state
// kept with the daemon's.
func (n *fakeNode) sync(t *testing.T, runcRoot string) {
	t.Helper()
	liveEtc := filepath.Join(n.live, "etc/containerd")
	if err := os.RemoveAll(liveEtc); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(n.root, "etc/containerd")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		data = bytes.ReplaceAll(data, []byte("/etc/containerd/"), []byte(n.live+"/etc/containerd/"))
		if filepath.Base(p) == "nsiso.toml" {
			data = append(data, fmt.Sprintf("root = %q\n", runcRoot)...)
		}
		rel, _ := filepath.Rel(src, p)
		writeFile(t, filepath.Join(liveEtc, rel), string(data))
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	// No config: containerd's defaults, which an empty file is.
	if _, err := os.Stat(filepath.Join(liveEtc, "config.toml")); os.IsNotExist(err) {
		writeFile(t, filepath.Join(liveEtc, "config.toml"), "")
	}
}

// serveRestarts makes n.restart a command that asks this test to restart
// the daemon and waits until it did; the daemon is this test's child, so
// the command cannot restart it itself.
func (n *fakeNode) serveRestarts(t *testing.T, runcRoot string) {
	dir := t.TempDir()
	n.restartDir = dir
	req, done := filepath.Join(dir, "restart"), filepath.Join(dir, "done")
	n.restart = fmt.Sprintf(`touch %s && while [ ! -e %s ]; do sleep 0.1; done; ok=$(cat %s); rm -f %s; [ "$ok" = ok ]`, req, done, done, done)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	t.Cleanup(func() { cancel(); <-stopped })
	go func() {
		defer close(stopped)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := os.Stat(req); err != nil {
				continue
			}
			os.Remove(req)
			n.sync(t, runcRoot)
			result := "ok"
			if err := n.cri.ctd.Restart(ctx); err != nil {
				result = err.Error()
			}
			n.restarts++
			if err := os.WriteFile(done, []byte(result), 0o644); err != nil {
				t.Errorf("answer the restart command: %v", err)
			}
		}
	}()
}

func (n *fakeNode) handlers(t *testing.T) []string {
	t.Helper()
	resp, err := n.cri.rt.Status(context.Background(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range resp.RuntimeHandlers {
		names = append(names, h.Name)
	}
	return names
}

// files maps every file of the host root, but for the daemon's own
// directories, to its mode and content.
func (n *fakeNode) files(t *testing.T) map[string]string {
	t.Helper()
	out, err := testenv.Tree(n.root, "run", "tmp")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameFiles(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: %s is gone", what, k)
		} else if g != v {
			t.Errorf("%s: %s changed:\n%s\nwas\n%s", what, k, g, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %s is new", what, k)
		}
	}
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// operatorV2 is a containerd 1.x-era config, still common on nodes that
// moved to containerd 2.
const operatorV2 = `# /etc/containerd/config.toml, as the node's provisioning wrote it
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  # the sandbox image is pinned by the test's own settings
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`

// operatorV3 is a containerd 2.0 config without imports.
const operatorV3 = `version = 3

# The node's own handler; install must leave it as it is.
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
    SystemdCgroup = false
`

// nsiso install on each shape of containerd config: the daemon restarted
// by --restart reports the handler through CRI, a pod runs under it with a
// /dev/shm of the asked size, a pod running from before survives the
// restart, a second install changes no byte (and restarts nothing), and
// uninstall restores every file and takes the handler away again.
func TestInstallOnNode(t *testing.T) {
	setup(t)
	deps, err := testenv.FindDeps()
	if err != nil {
		t.Fatal(err)
	}
	def, err := exec.Command(deps.Containerd, "config", "default").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, config string
	}{
		{"no config", ""},
		{"version 2", operatorV2},
		{"version 3 without imports", operatorV3},
		{"the default config with its drop-in directory", string(def)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newFakeNode(t, tc.config)
			before := n.files(t)
			if h := n.handlers(t); slices.Contains(h, "nsiso") || !slices.Contains(h, "runc") {
				t.Fatalf("handlers before install: %v", h)
			}
			// A pod from before the restart.
			old := pod{name: newPodName("before"), handler: "runc"}
			oldSB, err := n.cri.runPod(t, old)
			if err != nil {
				t.Fatal(err)
			}
			oldCtr := n.cri.startContainer(t, oldSB, old, "c", nil)

			install := []string{"install", "--root", n.root, "--containerd", deps.Containerd, "--restart", "--restart-command", n.restart, "--timeout", "60s"}
			out, code := runNsiso(t, install...)
			if code != 0 {
				t.Fatalf("install: exit %d\n%s\n%s", code, out, n.cri.ctd.LogPath())
			}
			t.Logf("install:\n%s", out)
			if n.restarts != 1 {
				t.Errorf("%d restarts, want 1", n.restarts)
			}
			if h := n.handlers(t); !slices.Contains(h, "nsiso") || !slices.Contains(h, "runc") {
				t.Errorf("handlers after install: %v", h)
			}
			n.cri.exec(t, oldCtr, "true")

			p := pod{name: newPodName("installed"), ann: ann("nsiso/shm-size", "96Mi")}
			sb, err := n.cri.runPod(t, p)
			if err != nil {
				t.Fatal(err)
			}
			c := n.cri.startContainer(t, sb, p, "c", nil)
			if got := n.cri.shmSize(t, c); got != 96<<20 {
				t.Errorf("/dev/shm of a pod with nsiso/shm-size=96Mi: %d bytes", got)
			}
			if pids := shimPIDs(t, sb); len(pids) != 1 {
				t.Errorf("the pod runs under %d nsiso shims: %v", len(pids), pids)
			}
			n.cri.removePod(t, sb)

			installed := n.files(t)
			out, code = runNsiso(t, install...)
			if code != 0 {
				t.Fatalf("second install: exit %d\n%s", code, out)
			}
			sameFiles(t, "second install", installed, n.files(t))
			if n.restarts != 1 {
				t.Errorf("the second install restarted containerd")
			}

			out, code = runNsiso(t, "uninstall", "--root", n.root, "--restart", "--restart-command", n.restart, "--timeout", "60s")
			if code != 0 {
				t.Fatalf("uninstall: exit %d\n%s", code, out)
			}
			t.Logf("uninstall:\n%s", out)
			sameFiles(t, "uninstall", before, n.files(t))
			if h := n.handlers(t); slices.Contains(h, "nsiso") || !slices.Contains(h, "runc") {
				t.Errorf("handlers after uninstall: %v", h)
			}
			n.cri.exec(t, oldCtr, "true")
		})
	}
}

// The node is not labelled before containerd has the handler, uninstall
// refuses while nsiso shims serve the daemon, and install refuses when not
// run as root.
func TestInstallRefusals(t *testing.T) {
	n := newFakeNode(t, operatorV3)
	deps, _ := testenv.FindDeps()
	// Without a restart containerd has no handler yet, so the node must
	// not be labelled for nsiso pods.
	out, code := runNsiso(t, "install", "--root", n.root, "--containerd", deps.Containerd, "--kube-node", "n1")
	if code != 1 || !regexp.MustCompile(`not labelling node n1: containerd's CRI reports runtime handlers \[("runc" ""|"" "runc")\], not "nsiso" \(restart containerd: --restart\)`).MatchString(out) {
		t.Errorf("install --kube-node without the handler: exit %d\n%s", code, out)
	}
	out, code = runNsiso(t, "install", "--root", n.root, "--containerd", deps.Containerd, "--restart", "--restart-command", n.restart)
	if code != 0 {
		t.Fatalf("install: exit %d\n%s", code, out)
	}
	p := pod{name: newPodName("busy")}
	if _, err := n.cri.runPod(t, p); err != nil {
		t.Fatal(err)
	}
	installed := n.files(t)
	out, code = runNsiso(t, "uninstall", "--root", n.root)
	if code != 1 || !strings.Contains(out, "refusing to uninstall: 1 nsiso shim(s) serve containerd at /run/containerd/containerd.sock") {
		t.Errorf("uninstall with a pod running: exit %d\n%s", code, out)
	}
	sameFiles(t, "refused uninstall", installed, n.files(t))

	cmd := exec.Command(nsisoBin(t), "install", "--root", n.root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	got, _ := cmd.CombinedOutput()
	if !strings.Contains(string(got), "nsiso install: must run as root (euid is 65534)") {
		t.Errorf("install as nobody: %s", got)
	}
}

// hostRootWithContainerd makes a host root holding the node's own
// containerd binary (dynamically linked, as distributions ship it) with
// the libraries it needs, the way the installer's container sees a node
// under /host.
func hostRootWithContainerd(t *testing.T, config string) string {
	t.Helper()
	deps, err := testenv.FindDeps()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, d := range []string{"usr/lib", "usr/lib64"} {
		if _, err := os.Stat("/" + d); err != nil {
			continue
		}
		p := filepath.Join(root, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("/"+d, p, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(p, syscall.MNT_DETACH) })
		// Read-only, so that nothing done under the fake root, its removal
		// included, can reach the host's libraries.
		if err := syscall.Mount("", p, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(d, filepath.Join(root, filepath.Base(d))); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(deps.Containerd)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "usr/bin/containerd"), string(data))
	if err := os.Chmod(filepath.Join(root, "usr/bin/containerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "etc/containerd/config.toml"), config)
	return root
}

// Without --containerd, install checks the result with the host's own
// containerd, run inside the host root (so it finds its libraries and the
// host's paths), and refuses what that containerd cannot load even where
// the file is valid TOML.
func TestInstallValidatesWithTheHostsContainerd(t *testing.T) {
	setup(t)
	root := hostRootWithContainerd(t, operatorV3)
	out, code := runNsiso(t, "install", "--root", root)
	if code != 0 || !strings.Contains(out, "checked the resulting config with /usr/bin/containerd config dump (in "+root+")") {
		t.Fatalf("install: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(root, "tmp")); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) != 0 {
		t.Errorf("the check left files in the host's /tmp: %v", ents)
	}

	bad := hostRootWithContainerd(t, operatorV3+`
[plugins."io.containerd.cri.v1.runtime"]
  max_container_log_line_size = "sixteen kilobytes"
`)
	before, _ := os.ReadFile(filepath.Join(bad, "etc/containerd/config.toml"))
	out, code = runNsiso(t, "install", "--root", bad)
	if code != 1 || !strings.Contains(out, "refusing to install: the resulting containerd config does not load: /usr/bin/containerd config dump (in "+bad+")") {
		t.Errorf("install on a config containerd cannot load: exit %d\n%s", code, out)
	}
	after, _ := os.ReadFile(filepath.Join(bad, "etc/containerd/config.toml"))
	if !bytes.Equal(before, after) {
		t.Error("a refused install changed the config")
	}
	if _, err := os.Stat(filepath.Join(bad, "usr/local/bin", "containerd-shim-nsiso-v1")); !os.IsNotExist(err) {
		t.Errorf("a refused install wrote the shim: %v", err)
	}
}
