package testenv

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

func testParams(dir string) configParams {
	return configParams{
		Dir:           dir,
		Address:       filepath.Join(dir, "containerd.sock"),
		TTRPCAddress:  filepath.Join(dir, "containerd.sock.ttrpc"),
		ShimSocketDir: filepath.Join(dir, "s"),
		Snapshotter:   SnapshotterOverlayfs,
	}
}

func parseConfig(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := toml.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("rendered config does not parse: %v\n%s", err, s)
	}
	return m
}

// lookup follows a path of table keys.
func lookup(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		t, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = t[k]
	}
	return v
}

// absPaths collects every string value that looks like an absolute path.
func absPaths(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for _, x := range v {
			absPaths(x, out)
		}
	case []any:
		for _, x := range v {
			absPaths(x, out)
		}
	case string:
		if strings.HasPrefix(v, "/") {
			*out = append(*out, v)
		}
	}
}

func TestRenderConfigDefaults(t *testing.T) {
	dir := "/tmp/nsiso-ctd-1"
	s, err := renderConfig(testParams(dir))
	if err != nil {
		t.Fatal(err)
	}
	m := parseConfig(t, s)
	checks := []struct {
		keys []string
		want any
	}{
		{[]string{"version"}, int64(3)},
		{[]string{"root"}, dir + "/root"},
		{[]string{"state"}, dir + "/state"},
		{[]string{"temp"}, dir + "/tmp"},
		{[]string{"grpc", "address"}, dir + "/containerd.sock"},
		{[]string{"ttrpc", "address"}, dir + "/containerd.sock.ttrpc"},
		{[]string{"debug", "address"}, ""},
		{[]string{"plugins", "io.containerd.internal.v1.opt", "path"}, dir + "/opt"},
		{[]string{"plugins", "io.containerd.shim.v1.manager", "socket_dir"}, dir + "/s"},
	}
	for _, c := range checks {
		if got := lookup(m, c.keys...); got != c.want {
			t.Errorf("%s = %#v, want %#v", strings.Join(c.keys, "."), got, c.want)
		}
	}
	disabled, _ := m["disabled_plugins"].([]any)
	for _, id := range []string{"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"} {
		if !slices.Contains(disabled, any(id)) {
			t.Errorf("disabled_plugins %v lacks %s", disabled, id)
		}
	}

	var paths []string
	absPaths(m, &paths)
	for _, p := range paths {
		if !under(p, dir) {
			t.Errorf("config refers to %s outside %s", p, dir)
		}
	}
}

func TestRenderConfigCRI(t *testing.T) {
	dir := "/tmp/nsiso-ctd-2"
	p := testParams(dir)
	p.EnableCRI = true
	p.Snapshotter = SnapshotterNative
	s, err := renderConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	m := parseConfig(t, s)
	if d, ok := m["disabled_plugins"]; ok {
		t.Errorf("disabled_plugins = %v with CRI enabled", d)
	}
	if got := lookup(m, "plugins", "io.containerd.nri.v1.nri", "socket_path"); got != dir+"/nri/nri.sock" {
		t.Errorf("nri socket_path = %v", got)
	}
	if got := lookup(m, "plugins", "io.containerd.cri.v1.images", "snapshotter"); got != SnapshotterNative {
		t.Errorf("cri snapshotter = %v", got)
	}
	var paths []string
	absPaths(m, &paths)
	for _, p := range paths {
		if !under(p, dir) {
			t.Errorf("config refers to %s outside %s", p, dir)
		}
	}
}

func TestRenderConfigExtraMerges(t *testing.T) {
	p := testParams("/d")
	p.ExtraConfig = `
oom_score = -999
[plugins."io.containerd.shim.v1.manager"]
  env = ["A=1"]
[plugins."io.containerd.internal.v1.opt"]
  path = "/elsewhere"
[plugins."io.containerd.runtime.v2.task"]
  platforms = ["linux/amd64"]
`
	s, err := renderConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	m := parseConfig(t, s)
	if got := lookup(m, "oom_score"); got != int64(-999) {
		t.Errorf("oom_score = %#v", got)
	}
	// Merged into the generated table, not replacing it.
	if got := lookup(m, "plugins", "io.containerd.shim.v1.manager", "socket_dir"); got != "/d/s" {
		t.Errorf("socket_dir = %#v, lost in merge", got)
	}
	if got, _ := lookup(m, "plugins", "io.containerd.shim.v1.manager", "env").([]any); len(got) != 1 || got[0] != "A=1" {
		t.Errorf("env = %#v", got)
	}
	if got := lookup(m, "plugins", "io.containerd.internal.v1.opt", "path"); got != "/elsewhere" {
		t.Errorf("opt path = %#v, extra config must win", got)
	}
	if got := lookup(m, "plugins", "io.containerd.runtime.v2.task", "platforms"); got == nil {
		t.Error("new plugin table missing")
	}
	if got := lookup(m, "grpc", "address"); got != "/d/containerd.sock" {
		t.Errorf("grpc address = %#v", got)
	}

	p.ExtraConfig = "[broken"
	if _, err := renderConfig(p); err == nil {
		t.Error("invalid ExtraConfig accepted")
	}
}

func TestDaemonEnv(t *testing.T) {
	env := daemonEnv(
		[]string{"HOME=/root", "PATH=/usr/bin:/bin", "NOTIFY_SOCKET=/run/systemd/notify", "X=old"},
		[]string{"/a", "/b"},
		[]string{"X=new", "Y=1"},
	)
	want := []string{"HOME=/root", "PATH=/a:/b:/usr/bin:/bin", "X=new", "Y=1"}
	if strings.Join(env, " ") != strings.Join(want, " ") {
		t.Errorf("daemonEnv = %v, want %v", env, want)
	}
	env = daemonEnv(nil, []string{"/a"}, nil)
	if len(env) != 1 || !strings.HasPrefix(env[0], "PATH=/a:/usr/local/sbin:") {
		t.Errorf("daemonEnv without PATH = %v", env)
	}
}

func TestParseContainerdVersion(t *testing.T) {
	cases := map[string]string{
		"containerd github.com/containerd/containerd/v2 2.4.2+unknown \n":    "v2.4.2+unknown",
		"containerd github.com/containerd/containerd/v2 v2.0.14 abcdef\n":    "v2.0.14",
		"containerd github.com/containerd/containerd v1.7.27 05044ec0a9a7\n": "v1.7.27",
	}
	for in, want := range cases {
		got, err := parseContainerdVersion(in)
		if err != nil || got != want {
			t.Errorf("parseContainerdVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "runc version 1.4.3", "containerd x notaversion"} {
		if v, err := parseContainerdVersion(bad); err == nil {
			t.Errorf("parseContainerdVersion(%q) = %q, want error", bad, v)
		}
	}
	if ma, mi, ok := majorMinor("v2.10.1-rc.1"); !ok || ma != 2 || mi != 10 {
		t.Errorf("majorMinor = %d %d %v", ma, mi, ok)
	}
}
