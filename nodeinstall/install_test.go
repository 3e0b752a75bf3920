package nodeinstall

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/shim"
	"github.com/nsiso/nsiso/testenv"
)

// These tests write a fake host root in a temporary directory; only its
// files are compared, so they run without containerd (the config loader
// checks the result) but as root, which install insists on.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("install refuses to run without root")
	}
}

// snapshot maps every file and directory under root to its mode and
// content (testenv.Tree).
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out, err := testenv.Tree(root)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, "only before: "+k)
		} else if v != w {
			d = append(d, "changed: "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "only after: "+k)
		}
	}
	return d
}

type fakeHost struct {
	root, shim string
}

func newFakeHost(t *testing.T, files map[string]string) fakeHost {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for p, data := range files {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	shim := filepath.Join(dir, ShimName)
	if err := os.WriteFile(shim, []byte("#!/bin/sh\n# the new shim\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return fakeHost{root: root, shim: shim}
}

func (h fakeHost) opts(extra ...string) Options {
	args := append([]string{"--root", h.root, "--shim", h.shim}, extra...)
	o, err := ParseFlags(false, args, io.Discard)
	if err != nil {
		panic(err)
	}
	o.Stdout = io.Discard
	return o
}

func (h fakeHost) uninstallOpts(extra ...string) Options {
	o, err := ParseFlags(true, append([]string{"--root", h.root, "--address", "/nonexistent/containerd.sock"}, extra...), io.Discard)
	if err != nil {
		panic(err)
	}
	o.Stdout = io.Discard
	return o
}

func (h fakeHost) read(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.root, p))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

const v3NoImports = `# the operator's config
version = 3

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
    SystemdCgroup = true
`

// Each shape of config: install, install again (no byte changes),
// uninstall (everything as it was).
func TestInstallShapes(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		files      map[string]string
		dropIn     string
		configEdit bool
	}{
		{name: "no config", files: nil, dropIn: "/etc/containerd/conf.d/nsiso-cri.toml"},
		{name: "version 2", files: map[string]string{DefaultConfig: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause\"\n"},
			dropIn: "/etc/containerd/conf.d/nsiso-cri.toml", configEdit: true},
		{name: "version 3 without imports", files: map[string]string{DefaultConfig: v3NoImports},
			dropIn: "/etc/containerd/conf.d/nsiso-cri.toml", configEdit: true},
		{name: "drop-in directory", files: map[string]string{
			DefaultConfig:                   "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
			"/etc/containerd/conf.d/a.toml": "version = 3\n[plugins.\"io.containerd.cri.v1.images\"]\n  snapshotter = \"native\"\n"},
			dropIn: "/etc/containerd/conf.d/nsiso-cri.toml"},
		{name: "relative drop-in directory", files: map[string]string{
			DefaultConfig: "version = 3\nimports = [\"runtimes/*.toml\"]\n"},
			dropIn: "/etc/containerd/runtimes/nsiso-cri.toml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t, tc.files)
			before := snapshot(t, h.root)
			if err := Install(ctx, h.opts()); err != nil {
				t.Fatal(err)
			}
			if got := h.read(t, filepath.Join(DefaultBinDir, ShimName)); !strings.Contains(got, "the new shim") {
				t.Errorf("shim not installed: %q", got)
			}
			dropIn := h.read(t, tc.dropIn)
			if !strings.Contains(dropIn, `runtime_type = "io.containerd.nsiso.v1"`) {
				t.Errorf("drop-in %s:\n%s", tc.dropIn, dropIn)
			}
			if tc.files[DefaultConfig] != "" {
				cfg := h.read(t, DefaultConfig)
				if edited := cfg != tc.files[DefaultConfig]; edited != tc.configEdit {
					t.Errorf("config edited=%v, want %v:\n%s", edited, tc.configEdit, cfg)
				}
			}
			installed := snapshot(t, h.root)
			if err := Install(ctx, h.opts()); err != nil {
				t.Fatal(err)
			}
			if d := diffSnapshots(installed, snapshot(t, h.root)); len(d) > 0 {
				t.Errorf("second install changed files: %v", d)
			}
			if err := Uninstall(ctx, h.uninstallOpts()); err != nil {
				t.Fatal(err)
			}
			if d := diffSnapshots(before, snapshot(t, h.root)); len(d) > 0 {
				t.Errorf("uninstall did not restore the host: %v", d)
			}
			if err := Uninstall(ctx, h.uninstallOpts()); err != nil {
				t.Errorf("a second uninstall: %v", err)
			}
		})
	}
}

// What the operator changed after install stays; what install added goes.
func TestUninstallKeepsOperatorChanges(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	h := newFakeHost(t, map[string]string{DefaultConfig: v3NoImports})
	if err := Install(ctx, h.opts()); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(h.root, DefaultConfig)
	edited := h.read(t, DefaultConfig) + "\n# the operator's later line\n"
	if err := os.WriteFile(cfg, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(h.root, DefaultPolicy)
	if err := os.WriteFile(policy, []byte("max_container_shm_size = \"1Gi\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(ctx, h.uninstallOpts()); err != nil {
		t.Fatal(err)
	}
	if got, want := h.read(t, DefaultConfig), v3NoImports+"\n# the operator's later line\n"; got != want {
		t.Errorf("config after uninstall:\n%s\nwant\n%s", got, want)
	}
	if got := h.read(t, DefaultPolicy); got != "max_container_shm_size = \"1Gi\"\n" {
		t.Errorf("the operator's nsiso.toml was not kept: %q", got)
	}
}

// An nsiso.toml that exists is never overwritten, and a shim that was
// there before install is put back by uninstall.
func TestInstallKeepsExistingFiles(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	h := newFakeHost(t, map[string]string{
		DefaultPolicy:                          "default_container_shm_size = \"1Gi\"\n",
		filepath.Join(DefaultBinDir, ShimName): "the old shim",
	})
	before := snapshot(t, h.root)
	if err := Install(ctx, h.opts()); err != nil {
		t.Fatal(err)
	}
	if got := h.read(t, DefaultPolicy); got != "default_container_shm_size = \"1Gi\"\n" {
		t.Errorf("nsiso.toml overwritten: %q", got)
	}
	if got := h.read(t, filepath.Join(DefaultBinDir, ShimName)); !strings.Contains(got, "the new shim") {
		t.Errorf("shim not replaced: %q", got)
	}
	if err := Uninstall(ctx, h.uninstallOpts()); err != nil {
		t.Fatal(err)
	}
	if d := diffSnapshots(before, snapshot(t, h.root)); len(d) > 0 {
		t.Errorf("uninstall did not restore the host: %v", d)
	}
}

// Refusals change nothing and say why.
func TestInstallRefusals(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		files map[string]string
		args  []string
		want  string
	}{
		{name: "unparsable config", files: map[string]string{DefaultConfig: "version = 3\n[plugins\n"},
			want: "/etc/containerd/config.toml does not parse as TOML (row 2"},
		{name: "handler with another runtime_type", files: map[string]string{DefaultConfig: "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nsiso]\n  runtime_type = \"io.containerd.runc.v2\"\n"},
			want: `CRI runtime handler "nsiso" already exists in /etc/containerd/config.toml with runtime_type "io.containerd.runc.v2"`},
		{name: "handler in a drop-in, version 2", files: map[string]string{
			DefaultConfig:                   "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
			"/etc/containerd/conf.d/x.toml": "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.gvisor]\n  runtime_type = \"io.containerd.runsc.v1\"\n"},
			args: []string{"--handler", "gvisor"},
			want: `CRI runtime handler "gvisor" already exists in /etc/containerd/conf.d/x.toml with runtime_type "io.containerd.runsc.v1"`},
		{name: "handler defined by hand", files: map[string]string{DefaultConfig: "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nsiso]\n  runtime_type = \"io.containerd.nsiso.v1\"\n"},
			want: `CRI runtime handler "nsiso" is already defined in /etc/containerd/config.toml (not by nsiso install)`},
		{name: "a drop-in configures the handler", files: map[string]string{
			DefaultConfig:                   "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
			"/etc/containerd/conf.d/z.toml": "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nsiso.options]\n  ConfigPath = \"/elsewhere.toml\"\n"},
			want: `CRI runtime handler "nsiso" is already configured in /etc/containerd/conf.d/z.toml`},
		{name: "a version 2 config with a table of the new plugin", files: map[string]string{
			DefaultConfig: "version = 2\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nsiso]\n  runtime_type = \"io.containerd.kata.v2\"\n"},
			want: `CRI runtime handler "nsiso" already exists in /etc/containerd/config.toml with runtime_type "io.containerd.kata.v2"`},
		{name: "config version containerd does not know", files: map[string]string{DefaultConfig: "version = 9\n"},
			want: "has config version 9; containerd 2.x reads versions 2 to 4"},
		{name: "missing import", files: map[string]string{DefaultConfig: "version = 3\nimports = [\"/etc/containerd/gone.toml\"]\n"},
			want: "gone.toml: no such file"},
		{name: "a file of ours that is not ours", files: map[string]string{
			DefaultConfig:                           "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
			"/etc/containerd/conf.d/nsiso-cri.toml": "# someone's\n"},
			want: "/etc/containerd/conf.d/nsiso-cri.toml exists and was not written by nsiso install"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t, tc.files)
			before := snapshot(t, h.root)
			err := Install(ctx, h.opts(tc.args...))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant …%s", err, tc.want)
			}
			if d := diffSnapshots(before, snapshot(t, h.root)); len(d) > 0 {
				t.Errorf("a refused install changed files: %v", d)
			}
		})
	}
}

// A read-only /usr (Flatcar, Talos): refused before any file is written,
// and --bin-dir elsewhere works, naming the shim by runtime_path.
func TestInstallReadOnlyUsr(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	h := newFakeHost(t, map[string]string{DefaultConfig: v3NoImports})
	usr := filepath.Join(h.root, "usr")
	if err := os.MkdirAll(usr, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(usr, usr, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("bind mount: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(usr, unix.MNT_DETACH) })
	if err := unix.Mount("", usr, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, h.root)
	err := Install(ctx, h.opts())
	if err == nil || !strings.Contains(err.Error(), "/usr is on a read-only file system, so /usr/local/bin cannot be written") ||
		!strings.Contains(err.Error(), "--bin-dir") {
		t.Fatalf("got %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, h.root)); len(d) > 0 {
		t.Errorf("a refused install changed files: %v", d)
	}
	if err := Install(ctx, h.opts("--bin-dir", "/opt/nsiso/bin")); err != nil {
		t.Fatal(err)
	}
	if got := h.read(t, "/etc/containerd/conf.d/nsiso-cri.toml"); !strings.Contains(got, `runtime_path = "/opt/nsiso/bin/containerd-shim-nsiso-v1"`) {
		t.Errorf("drop-in without runtime_path:\n%s", got)
	}
}

// The node label goes through a JSON merge patch with the pod's service
// account; the API server here is a test server that records it.
func TestKubeNodeLabel(t *testing.T) {
	var got []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.EscapedPath()+" "+r.Header.Get("Content-Type")+" "+r.Header.Get("Authorization")+" "+string(body))
		if strings.Contains(r.URL.Path, "forbidden") {
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(map[string]string{"kind": "Status", "message": `nodes "forbidden" is forbidden: ValidatingAdmissionPolicy denied`})
			return
		}
		_, _ = w.Write([]byte(`{"kind":"Node"}`))
	}))
	defer srv.Close()
	sa := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	mustWrite(t, filepath.Join(sa, "ca.crt"), string(ca))
	mustWrite(t, filepath.Join(sa, "token"), "tok\n")
	u, _ := url.Parse(srv.URL)
	t.Setenv("KUBERNETES_SERVICE_HOST", u.Hostname())
	t.Setenv("KUBERNETES_SERVICE_PORT", u.Port())
	k, err := newKubeNode("node-1")
	if err != nil {
		t.Fatal(err)
	}
	k.saDir = sa
	v := "installed"
	if err := k.setLabel(context.Background(), "nsiso.io/runtime", &v); err != nil {
		t.Fatal(err)
	}
	if err := k.setLabel(context.Background(), "nsiso.io/runtime", nil); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`PATCH /api/v1/nodes/node-1 application/merge-patch+json Bearer tok {"metadata":{"labels":{"nsiso.io/runtime":"installed"}}}`,
		`PATCH /api/v1/nodes/node-1 application/merge-patch+json Bearer tok {"metadata":{"labels":{"nsiso.io/runtime":null}}}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	k.name = "forbidden"
	if err := k.setLabel(context.Background(), "nsiso.io/runtime", &v); err == nil || !strings.Contains(err.Error(), "403 Forbidden: nodes \"forbidden\" is forbidden") {
		t.Errorf("refusal: %v", err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := newKubeNode("x"); err == nil {
		t.Error("outside a pod")
	}
}

func TestRestartWithoutSystemdOrCommand(t *testing.T) {
	root, err := openRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	r := restarter{root: root, unit: DefaultUnit, stdout: io.Discard}
	_, err = r.restart(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no --restart-command") || !strings.Contains(err.Error(), "SIGHUP") {
		t.Fatalf("got %v", err)
	}
	r.command = "exit 3"
	if _, err := r.restart(context.Background()); err == nil || !errors.Is(err, err) || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("got %v", err)
	}
}

// On a node whose default runtime uses the systemd cgroup driver, the new
// nsiso.toml has nsiso's runc use it too; elsewhere it stays unset.
func TestInstallFollowsTheSystemdCgroupDriver(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		config string
		want   bool
	}{
		{v3NoImports, true},
		{strings.Replace(v3NoImports, "SystemdCgroup = true", "SystemdCgroup = false", 1), false},
		{"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"crun\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.crun]\n  runtime_type = \"io.containerd.runc.v2\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.crun.options]\n  SystemdCgroup = true\n", true},
		{"", false},
	} {
		files := map[string]string{}
		if tc.config != "" {
			files[DefaultConfig] = tc.config
		}
		h := newFakeHost(t, files)
		if err := Install(context.Background(), h.opts()); err != nil {
			t.Fatal(err)
		}
		data := h.read(t, DefaultPolicy)
		c, err := shim.ParseConfig("nsiso.toml", []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(data, "\nsystemd_cgroup = true\n"); got != tc.want || c == nil {
			t.Errorf("config\n%s\nnsiso.toml\n%s\nwant systemd_cgroup=%v", tc.config, data, tc.want)
		}
	}
}

// A file install added and someone changed since is not removed silently;
// --force removes it.
func TestUninstallChangedFile(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	h := newFakeHost(t, map[string]string{DefaultConfig: v3NoImports})
	before := snapshot(t, h.root)
	if err := Install(ctx, h.opts()); err != nil {
		t.Fatal(err)
	}
	dropIn := filepath.Join(h.root, "/etc/containerd/conf.d/nsiso-cri.toml")
	if err := os.WriteFile(dropIn, []byte("# mine now\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	installed := snapshot(t, h.root)
	err := Uninstall(ctx, h.uninstallOpts())
	if err == nil || !strings.Contains(err.Error(), "refusing to uninstall, nothing was changed: /etc/containerd/conf.d/nsiso-cri.toml changed since install (pass --force to remove it anyway)") {
		t.Fatalf("got %v", err)
	}
	if d := diffSnapshots(installed, snapshot(t, h.root)); len(d) > 0 {
		t.Errorf("a refused uninstall changed files: %v", d)
	}
	if err := Uninstall(ctx, h.uninstallOpts("--force")); err != nil {
		t.Fatal(err)
	}
	if d := diffSnapshots(before, snapshot(t, h.root)); len(d) > 0 {
		t.Errorf("uninstall --force did not restore the host: %v", d)
	}
}

// Install and uninstall on a root whose drop-in directory is an absolute
// symlink out of it, with openat2 and with the walk: the drop-in goes
// where the host resolves the link, inside the root, and nothing outside
// changes (the nsiso binary's attack tests are integration/security_install_test.go).
func TestInstallResolvesInRoot(t *testing.T) {
	needRoot(t)
	withResolvers(t, func(t *testing.T) {
		ctx := context.Background()
		outside := t.TempDir()
		mustWrite(t, filepath.Join(outside, "keep"), "the victim's\n")
		h := newFakeHost(t, map[string]string{DefaultConfig: v3NoImports})
		mustLink(t, outside, filepath.Join(h.root, "etc/containerd/conf.d"))
		if err := os.MkdirAll(filepath.Join(h.root, outside), 0o755); err != nil {
			t.Fatal(err)
		}
		was := snapshot(t, outside)
		if err := Install(ctx, h.opts()); err != nil {
			t.Fatal(err)
		}
		if got := h.read(t, filepath.Join(outside, dropInName)); !strings.Contains(got, RuntimeType) {
			t.Errorf("drop-in:\n%s", got)
		}
		if err := Uninstall(ctx, h.uninstallOpts()); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(h.root, outside, dropInName)); !os.IsNotExist(err) {
			t.Errorf("uninstall left the drop-in: %v", err)
		}
		if d := diffSnapshots(was, snapshot(t, outside)); len(d) > 0 {
			t.Errorf("outside the root changed: %v", d)
		}
	})
}

// The conflict check: a handler of ours defined in any file containerd
// loads, other than the drop-in and files install added, is refused, each
// shape with its own message.
func TestCheckConflicts(t *testing.T) {
	const (
		cfg    = "/etc/containerd/config.toml"
		dropIn = "/etc/containerd/conf.d/nsiso-cri.toml"
		other  = "/etc/containerd/conf.d/x.toml"
	)
	v3 := func(handler, body string) string {
		return "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes." + handler + "]\n" + body
	}
	v2 := func(handler, body string) string {
		return "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes." + handler + "]\n" + body
	}
	addedOther := &Record{Files: []RecordFile{{Path: other, Added: true}}}
	editedOther := &Record{Files: []RecordFile{{Path: other, Edit: &Insertion{}}}}
	for _, tc := range []struct {
		name     string
		files    map[string]string // path -> content, loaded in path order
		rec      *Record
		handlers []string
		want     string // "" for no conflict
	}{
		{name: "no handler anywhere", files: map[string]string{cfg: "version = 3\n"}},
		{name: "other handlers only", files: map[string]string{cfg: v3("runc", "  runtime_type = \"io.containerd.runc.v2\"\n")}},
		{name: "another runtime_type", files: map[string]string{cfg: v3("nsiso", "  runtime_type = \"io.containerd.runc.v2\"\n")},
			want: `CRI runtime handler "nsiso" already exists in /etc/containerd/config.toml with runtime_type "io.containerd.runc.v2"; choose another name with --handler`},
		{name: "nsiso's runtime_type, by hand", files: map[string]string{cfg: v3("nsiso", "  runtime_type = \"io.containerd.nsiso.v1\"\n")},
			want: `CRI runtime handler "nsiso" is already defined in /etc/containerd/config.toml (not by nsiso install); remove it there`},
		{name: "options without runtime_type", files: map[string]string{other: v3("nsiso.options", "  ConfigPath = \"/x\"\n")},
			want: `CRI runtime handler "nsiso" is already configured in /etc/containerd/conf.d/x.toml; remove it there`},
		{name: "version 2 table", files: map[string]string{other: v2("nsiso", "  runtime_type = \"io.containerd.kata.v2\"\n")},
			want: `CRI runtime handler "nsiso" already exists in /etc/containerd/conf.d/x.toml with runtime_type "io.containerd.kata.v2"`},
		{name: "version 2 file with the new plugin's table", files: map[string]string{cfg: "version = 2\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nsiso]\n  runtime_type = \"io.containerd.runc.v2\"\n"},
			want: `already exists in /etc/containerd/config.toml with runtime_type "io.containerd.runc.v2"`},
		{name: "the drop-in itself", files: map[string]string{dropIn: v3("nsiso", "  runtime_type = \"io.containerd.runc.v2\"\n")}},
		{name: "a file install added", files: map[string]string{other: v3("nsiso", "  runtime_type = \"io.containerd.nsiso.v1\"\n")}, rec: addedOther},
		{name: "a file install only edited", files: map[string]string{other: v3("nsiso", "  runtime_type = \"io.containerd.nsiso.v1\"\n")}, rec: editedOther,
			want: `CRI runtime handler "nsiso" is already defined in /etc/containerd/conf.d/x.toml (not by nsiso install)`},
		{name: "the second of two handlers", files: map[string]string{cfg: v3("gvisor", "  runtime_type = \"io.containerd.runsc.v1\"\n")},
			handlers: []string{"nsiso", "gvisor"},
			want:     `CRI runtime handler "gvisor" already exists in /etc/containerd/config.toml with runtime_type "io.containerd.runsc.v1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var files []*configFile
			for _, p := range sortedKeys(tc.files) {
				f, err := parseConfigFile(p, []byte(tc.files[p]))
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
			rec := tc.rec
			if rec == nil {
				rec = &Record{}
			}
			handlers := tc.handlers
			if handlers == nil {
				handlers = []string{"nsiso"}
			}
			err := checkConflicts(files, rec, dropIn, handlers)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v\nwant …%s", err, tc.want)
			}
		})
	}
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The install record names each file install wrote, how it came there
// (added, edited, a file kept aside) and the content it left, so that
// uninstall can take back exactly that.
func TestInstallRecord(t *testing.T) {
	needRoot(t)
	const (
		shimPath = DefaultBinDir + "/" + ShimName
		dropIn   = "/etc/containerd/conf.d/nsiso-cri.toml"
		backup   = backupDir + "/" + ShimName
	)
	added := func(p string) RecordFile { return RecordFile{Path: p, Added: true} }
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []RecordFile // SHA256 left out: checked against the files
		dirs  []string
	}{
		{name: "empty host",
			want: []RecordFile{added(shimPath), {Path: DefaultPolicy, Added: true, Keep: true}, added(dropIn), added(DefaultConfig)},
			dirs: []string{"/usr", "/usr/local", "/usr/local/bin", "/etc", "/etc/containerd", "/etc/containerd/conf.d", "/var", "/var/lib", "/var/lib/nsiso"}},
		{name: "a config without imports is edited",
			files: map[string]string{DefaultConfig: v3NoImports},
			want: []RecordFile{added(shimPath), {Path: DefaultPolicy, Added: true, Keep: true}, added(dropIn),
				{Path: DefaultConfig, Edit: &Insertion{Offset: len("# the operator's config\nversion = 3\n"), Text: "imports = [\"/etc/containerd/conf.d/nsiso-cri.toml\"]\n"}}},
			dirs: []string{"/usr", "/usr/local", "/usr/local/bin", "/etc/containerd/conf.d", "/var", "/var/lib", "/var/lib/nsiso"}},
		{name: "a config importing a drop-in directory is not touched",
			files: map[string]string{DefaultConfig: "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n", "/etc/containerd/conf.d/a.toml": "version = 3\n"},
			want:  []RecordFile{added(shimPath), {Path: DefaultPolicy, Added: true, Keep: true}, added(dropIn)},
			dirs:  []string{"/usr", "/usr/local", "/usr/local/bin", "/var", "/var/lib", "/var/lib/nsiso"}},
		{name: "a shim already there is kept aside, nsiso.toml left alone",
			files: map[string]string{DefaultConfig: "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n", "/etc/containerd/conf.d/a.toml": "version = 3\n",
				shimPath: "the old shim", DefaultPolicy: "# the operator's\n"},
			want: []RecordFile{{Path: shimPath, Backup: backup}, added(dropIn)},
			dirs: []string{"/var", "/var/lib", "/var/lib/nsiso", "/var/lib/nsiso/backup"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t, tc.files)
			for round := 1; round <= 2; round++ {
				if err := Install(context.Background(), h.opts()); err != nil {
					t.Fatal(err)
				}
				var rec Record
				if err := json.Unmarshal([]byte(h.read(t, recordPath)), &rec); err != nil {
					t.Fatal(err)
				}
				if rec.Format != recordFormat || strings.Join(rec.Handlers, ",") != DefaultHandler {
					t.Errorf("round %d: format %d, handlers %v", round, rec.Format, rec.Handlers)
				}
				for i := range rec.Files {
					f := &rec.Files[i]
					if got := digest([]byte(h.read(t, f.Path))); f.SHA256 != got {
						t.Errorf("round %d: %s recorded with sha256 %s, holds %s", round, f.Path, f.SHA256, got)
					}
					f.SHA256 = ""
				}
				if !reflect.DeepEqual(rec.Files, tc.want) {
					t.Errorf("round %d: files\n%+v\nwant\n%+v", round, rec.Files, tc.want)
				}
				if !reflect.DeepEqual(rec.Dirs, tc.dirs) {
					t.Errorf("round %d: dirs %q, want %q", round, rec.Dirs, tc.dirs)
				}
			}
		})
	}
}
