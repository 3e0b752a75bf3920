package nodeinstall

import (
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/nsiso/nsiso/shim"
)

func TestRuntimeTypeIsTheShims(t *testing.T) {
	if RuntimeType != shim.RuntimeName {
		t.Fatalf("RuntimeType %q, shim.RuntimeName %q", RuntimeType, shim.RuntimeName)
	}
}

func TestAddImport(t *testing.T) {
	const p = "/etc/containerd/conf.d/nsiso-cri.toml"
	for _, tc := range []struct {
		name, in, want string
	}{
		{
			name: "after the version line",
			in:   "# operator's\nversion = 2 # layout\n\n[plugins.x]\n  a = 1\n",
			want: "# operator's\nversion = 2 # layout\nimports = [\"" + p + "\"]\n\n[plugins.x]\n  a = 1\n",
		},
		{
			name: "no version: before the first table",
			in:   "# comment\nroot = \"/var/lib/containerd\"\n\n[grpc]\n  address = \"/run/x.sock\"\n",
			want: "# comment\nroot = \"/var/lib/containerd\"\n\nimports = [\"" + p + "\"]\n[grpc]\n  address = \"/run/x.sock\"\n",
		},
		{
			name: "version line without a newline at the end",
			in:   "version = 3",
			want: "version = 3\nimports = [\"" + p + "\"]\n",
		},
		{
			name: "empty file",
			in:   "",
			want: "imports = [\"" + p + "\"]\n",
		},
		{
			name: "existing imports: at their head",
			in:   "version = 3\nimports = ['/etc/containerd/other.toml']\n",
			want: "version = 3\nimports = [\"" + p + "\", '/etc/containerd/other.toml']\n",
		},
		{
			name: "existing multi-line imports with comments",
			in:   "version = 3\nimports = [ # mine\n  \"/a.toml\", # first\n  \"/b.toml\",\n]\n[x]\n",
			want: "version = 3\nimports = [\"" + p + "\",  # mine\n  \"/a.toml\", # first\n  \"/b.toml\",\n]\n[x]\n",
		},
		{
			name: "empty imports",
			in:   "imports = []\n",
			want: "imports = [\"" + p + "\", ]\n",
		},
		{
			name: "a version key inside a table is not the top-level one",
			in:   "[plugins.x]\nversion = 1\n",
			want: "imports = [\"" + p + "\"]\n[plugins.x]\nversion = 1\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ins, err := addImport([]byte(tc.in), p)
			if err != nil {
				t.Fatal(err)
			}
			got := string(ins.Apply([]byte(tc.in)))
			if got != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tc.want)
			}
			back, ok := ins.Revert([]byte(got))
			if !ok || string(back) != tc.in {
				t.Fatalf("revert: %v %q", ok, back)
			}
		})
	}
}

func TestAddImportRefusesUnparsable(t *testing.T) {
	if _, err := addImport([]byte("version = \n"), "/x.toml"); err == nil {
		t.Fatal("an unparsable config was edited")
	}
}

func TestRevertOnlyWhatWasInserted(t *testing.T) {
	in := Insertion{Offset: 4, Text: "XY"}
	if _, ok := in.Revert([]byte("abcdXZef")); ok {
		t.Error("reverted text that is not the insertion")
	}
	if _, ok := in.Revert([]byte("abc")); ok {
		t.Error("reverted past the end")
	}
	if got, ok := in.Revert([]byte("abcdXYef")); !ok || string(got) != "abcdef" {
		t.Errorf("revert = %q %v", got, ok)
	}
}

func TestRenderDropIn(t *testing.T) {
	for _, tc := range []struct {
		version     int64
		runtimePath string
	}{{2, ""}, {3, ""}, {3, "/opt/nsiso/bin/containerd-shim-nsiso-v1"}} {
		data := renderDropIn(tc.version, []string{"nsiso", "nsiso-batch"}, "/etc/containerd/nsiso.toml", tc.runtimePath)
		f, err := parseConfigFile("drop-in", data)
		if err != nil {
			t.Fatalf("%s\n%v", data, err)
		}
		if f.Version != tc.version {
			t.Errorf("version %d, want %d", f.Version, tc.version)
		}
		for _, h := range []string{"nsiso", "nsiso-batch"} {
			tbl, ok := f.handlerTable(h)
			if !ok {
				t.Fatalf("v%d: no handler %s in\n%s", tc.version, h, data)
			}
			merged := map[string]any{"plugins": map[string]any{criPlugin(tc.version): map[string]any{"containerd": map[string]any{"runtimes": map[string]any{h: tbl}}}}}
			if err := checkHandler(merged, h, "/etc/containerd/nsiso.toml"); err != nil {
				t.Error(err)
			}
			if rp, _ := tbl["runtime_path"].(string); rp != tc.runtimePath {
				t.Errorf("runtime_path %q, want %q", rp, tc.runtimePath)
			}
			for _, k := range []string{"pod_annotations", "container_annotations"} {
				if l, _ := tbl[k].([]any); len(l) != 1 || l[0] != "nsiso/*" {
					t.Errorf("%s = %v", k, tbl[k])
				}
			}
		}
	}
}

func TestNsisoDefaultsAreTheDocumentedOnes(t *testing.T) {
	c, err := shim.ParseConfig("nsiso.toml", []byte(nsisoDefaults))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Policy()
	if !p.DisallowHostIPC || !p.DisallowHostPID || p.DefaultShmSize != 0 || p.MaxShmSize != 0 {
		t.Errorf("defaults written by install: %+v", p)
	}
	var m map[string]any
	if err := toml.Unmarshal([]byte(nsisoDefaults), &m); err != nil || len(m) != 2 {
		t.Errorf("only the two rules are set: %v %v", m, err)
	}
}

func TestDropInDirFor(t *testing.T) {
	for _, tc := range []struct {
		imports []string
		want    string
	}{
		{[]string{"/etc/containerd/conf.d/*.toml"}, "/etc/containerd/conf.d/nsiso-cri.toml"},
		{[]string{"conf.d/*.toml"}, "/etc/containerd/conf.d/nsiso-cri.toml"},
		{[]string{"/etc/containerd/other.toml", "/etc/containerd/d/*"}, "/etc/containerd/d/nsiso-cri.toml"},
		{[]string{"/etc/containerd/conf.d/10-*.toml"}, ""},
		{[]string{"/etc/*/conf.d/*.toml"}, ""},
		{nil, ""},
	} {
		got, ok := dropInDirFor(&configFile{Path: "/etc/containerd/config.toml", Imports: tc.imports}, dropInName)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%v: %q %v, want %q", tc.imports, got, ok, tc.want)
		}
	}
}

func TestIsShimOf(t *testing.T) {
	const addr = "/run/containerd/containerd.sock"
	for _, tc := range []struct {
		argv []string
		want bool
	}{
		{[]string{"/usr/local/bin/containerd-shim-nsiso-v1", "-namespace", "k8s.io", "-id", "x", "-address", addr}, true},
		{[]string{"containerd-shim-nsiso-v1", "-address", "unix://" + addr}, true},
		{[]string{"containerd-shim-nsiso-v1", "-address=" + addr}, true},
		{[]string{"containerd-shim-nsiso-v1", "-address", "/tmp/other.sock"}, false},
		{[]string{"containerd-shim-runc-v2", "-address", addr}, false},
		{nil, false},
	} {
		if got := isShimOf(tc.argv, addr); got != tc.want {
			t.Errorf("%v: %v", tc.argv, got)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := ParseFlags(false, []string{"--root", "/host", "--handler", "nsiso", "--handler", "nsiso-batch", "--restart", "--shim", "/bin/true"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Root != "/host" || len(o.Handlers) != 2 || !o.Restart || o.Config != DefaultConfig || o.Policy != DefaultPolicy || o.NodeLabel != DefaultNodeLabel {
		t.Errorf("%+v", o)
	}
	for _, bad := range [][]string{
		{"--handler", "Not_A_Label"},
		{"--config", "etc/containerd/config.toml"},
		{"--node-label", "novalue"},
		{"extra"},
	} {
		if _, err := ParseFlags(false, bad, &strings.Builder{}); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := ParseFlags(true, []string{"--handler", "x"}, &strings.Builder{}); err == nil {
		t.Error("uninstall takes no --handler: it reads the record")
	}
}
