package shim

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nsiso/nsiso/specmod"
)

func TestParseConfig(t *testing.T) {
	known := "binary_name, default_container_shm_size, disallow_sharing_host_ipc_namespace, disallow_sharing_host_pid_namespace, max_container_shm_size, max_container_sysv_shm_size, root, systemd_cgroup"
	for _, tc := range []struct {
		name    string
		toml    string
		want    specmod.Policy
		wantErr string // the whole message
	}{
		{name: "empty means CIS defaults", want: specmod.Policy{DisallowHostIPC: true, DisallowHostPID: true}},
		{name: "full", toml: `
binary_name = "runc"
root = "/run/x"
systemd_cgroup = true
disallow_sharing_host_ipc_namespace = false
disallow_sharing_host_pid_namespace = false
default_container_shm_size = "256Mi"
max_container_shm_size = "8Gi"
`, want: specmod.Policy{DefaultShmSize: 256 << 20, MaxShmSize: 8 << 30}},
		{name: "a System V cap", toml: "max_container_shm_size = \"1Gi\"\nmax_container_sysv_shm_size = \"16Gi\"\n",
			want: specmod.Policy{DisallowHostIPC: true, DisallowHostPID: true, MaxShmSize: 1 << 30, MaxSysvShmSize: 16 << 30}},
		{name: "a System V cap alone", toml: "max_container_sysv_shm_size = \"64Mi\"\n",
			want: specmod.Policy{DisallowHostIPC: true, DisallowHostPID: true, MaxSysvShmSize: 64 << 20}},
		{name: "bad System V size", toml: "max_container_sysv_shm_size = \"0\"\n",
			wantErr: `nsiso config test: max_container_sysv_shm_size = "0": size "0" must be greater than zero`},
		{name: "System V size of the wrong type", toml: "max_container_sysv_shm_size = 8\n",
			wantErr: `nsiso config test: line 1: max_container_sysv_shm_size = 8: want a quoted size such as "8Gi"`},
		{name: "CRI options table with ConfigPath and TypeUrl keys", toml: "TypeUrl = \"x\"\nConfigPath = \"\"\n",
			want: specmod.Policy{DisallowHostIPC: true, DisallowHostPID: true}},
		{name: "a byte order mark is not part of the first key", toml: "\ufeffdisallow_sharing_host_pid_namespace = false\n",
			want: specmod.Policy{DisallowHostIPC: true}},
		{name: "unknown key", toml: "\n\ndisallow_sharing_host_ipc = false\n",
			wantErr: `nsiso config test: line 3: unknown key "disallow_sharing_host_ipc" (known: ` + known + `)`},
		{name: "unknown table", toml: "[plugins]\nx = 1\n",
			wantErr: `nsiso config test: line 1: unknown key "plugins" (known: ` + known + `)`},
		{name: "string for a boolean", toml: "disallow_sharing_host_ipc_namespace = \"no\"\n",
			wantErr: `nsiso config test: line 1: disallow_sharing_host_ipc_namespace = "no": want true or false`},
		{name: "array for a boolean", toml: "root = \"/r\"\ndisallow_sharing_host_ipc_namespace = [true]\n",
			wantErr: `nsiso config test: line 2: disallow_sharing_host_ipc_namespace = [true]: want true or false`},
		{name: "number for a string", toml: "binary_name = 3\n",
			wantErr: `nsiso config test: line 1: binary_name = 3: want a quoted string`},
		{name: "non-ASCII key is shown as written", toml: "dïsallow = true\n",
			wantErr: `nsiso config test: line 1, column 2: expected '=' after key (in "dïsallow = true")`},
		{name: "bad size", toml: "default_container_shm_size = \"lots\"\n",
			wantErr: `nsiso config test: default_container_shm_size = "lots": size "lots" does not start with a number`},
		{name: "default over max", toml: "default_container_shm_size = \"2Gi\"\nmax_container_shm_size = \"1Gi\"\n",
			wantErr: `nsiso config test: default_container_shm_size "2Gi" is over max_container_shm_size "1Gi"`},
		{name: "empty binary_name", toml: "binary_name = \"\"\n",
			wantErr: `nsiso config test: binary_name = "": name the runtime binary, or leave the key out for runc`},
		{name: "relative root", toml: "root = \"run/runc\"\n",
			wantErr: `nsiso config test: root = "run/runc": must be an absolute path (runc's state root, e.g. "/run/containerd/runc")`},
		{name: "keys are case-sensitive (go-toml alone would take this one)", toml: "Binary_Name = \"runc\"\n",
			wantErr: `nsiso config test: line 1: unknown key "Binary_Name" (known: ` + known + `)`},
		{name: "more than 1 MiB in ConfigBody", toml: strings.Repeat("#", 1<<20+1),
			wantErr: `nsiso config test: 1048577 bytes, more than the 1048576 allowed`},
		{name: "not toml", toml: "[[[",
			wantErr: `nsiso config test: line 1, column 3: invalid character at start of key: U+005B '[' (in "[[[")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig("test", []byte(tc.toml))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("got  %v\nwant %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// kernel.shmall counts the running kernel's pages.
			tc.want.PageSize = int64(os.Getpagesize())
			if p := c.Policy(); p != tc.want {
				t.Fatalf("policy = %+v; want %+v", p, tc.want)
			}
		})
	}
}

// TestDecodeConfig holds the decoder to nsiso.toml's shape: top-level
// keys of Config, in their exact letter case, set once, with values of
// their types; anything else names its line.
func TestDecodeConfig(t *testing.T) {
	str := func(s string) *string { return &s }
	boolean := func(b bool) *bool { return &b }
	for _, tc := range []struct {
		name    string
		doc     string
		want    Config
		wantErr string // a prefix of the message
	}{
		{name: "comments, blank lines, indentation and CRLF",
			doc:  "# nsiso\r\n\r\n  binary_name = \"crun\"   # the runtime\r\n\troot='/run/x'\r\n",
			want: Config{BinaryName: str("crun"), Root: str("/run/x")}},
		{name: "quoted keys", doc: "\"binary_name\" = \"a\"\n'root' = \"/b\"\n", want: Config{BinaryName: str("a"), Root: str("/b")}},
		{name: "basic string escapes", doc: `binary_name = "a\"b\\c\tdé\u00e9\U0001F600"`, want: Config{BinaryName: str("a\"b\\c\tdéé😀")}},
		{name: "literal strings keep backslashes", doc: `root = '/a\b'`, want: Config{Root: str(`/a\b`)}},
		{name: "multi-line strings", doc: "root = \"\"\"/a\"\"\"\nbinary_name = '''\nrunc'''\n", want: Config{Root: str("/a"), BinaryName: str("runc")}},
		{name: "booleans", doc: "systemd_cgroup = true\ndisallow_sharing_host_ipc_namespace = false#x\n", want: Config{SystemdCgroup: true, DisallowSharingHostIPCNamespace: boolean(false)}},
		{name: "what containerd's CRI hands over as ConfigBody", doc: "ConfigPath = ''\nTypeUrl = \"a'b\"\ndefault_container_shm_size = '192Mi'\nsystemd_cgroup = true\n",
			want: Config{TypeURL: "a'b", DefaultContainerShmSize: "192Mi", SystemdCgroup: true}},
		{name: "no final newline", doc: "root = '/r'", want: Config{Root: str("/r")}},

		{name: "set twice", doc: "root = '/a'\n\nroot = '/b'\n", wantErr: `line 3: key "root" is set twice (first on line 1)`},
		{name: "set twice, once quoted", doc: "root = '/a'\n'root' = '/b'\n", wantErr: `line 2: key "root" is set twice (first on line 1)`},
		{name: "dotted key", doc: "root.x = '/a'\n", wantErr: `line 1: unknown key "root.x"`},
		{name: "array of tables", doc: "[[plugins]]\n", wantErr: `line 1: unknown key "plugins"`},
		{name: "table named like a key (go-toml alone reads it as root = \"\")", doc: "[root]\n", wantErr: `line 1: unknown key "root"`},
		{name: "inline table", doc: "\nroot = {a = 1}\n", wantErr: `line 2: root = {a = 1}: want a quoted absolute path`},
		{name: "array over two lines", doc: "root = ['/a',\n'/b']\n", wantErr: `line 1: root = ['/a',: want a quoted absolute path`},
		{name: "a CR after a value of the wrong type", doc: "root = 1\rx\n", wantErr: `line 1, column 9: expected newline but got U+000D (in "root = 1\rx")`},
		{name: "a date (go-toml v2.2.4 panics on it)", doc: "systemd_cgroup = 1979-05-27\n", wantErr: `line 1: systemd_cgroup = 1979-05-27: want true or false`},
		{name: "unclosed table", doc: "[root\n", wantErr: `line 1, column 6: expected ']' to close table name (in "[root")`},
		{name: "unclosed string", doc: "root = \"/a\n", wantErr: `line 1, column 11: basic strings cannot have new lines (in "root = \"/a")`},
		{name: "bad escape", doc: `root = "/a\q"`, wantErr: `line 1, column 11: invalid escape character U+0071 'q'`},
		{name: "surrogate", doc: `root = "\ud800"`, wantErr: `line 1, column 9: escape sequence is not a valid unicode code point`},
		{name: "short unicode escape", doc: `root = "\u12"`, wantErr: `line 1, column 9: unicode escape sequence is too short`},
		{name: "control character in a string", doc: "root = \"/a\x01\"\n", wantErr: `line 1, column 11: basic strings cannot have control characters`},
		{name: "control character in a comment", doc: "# a\x7f\n", wantErr: `line 1, column 4: control characters are not allowed in comments`},
		{name: "a lone CR", doc: "root = '/a'\rsystemd_cgroup = true\n", wantErr: `line 1, column 12: expected newline but got U+000D`},
		{name: "text after the value", doc: "systemd_cgroup = true false\n", wantErr: `line 1, column 23: expected newline but got U+0066 'f'`},
		{name: "no equals", doc: "systemd_cgroup true\n", wantErr: `line 1, column 16: expected '=' after key`},
		{name: "no value", doc: "systemd_cgroup =  # none\n", wantErr: `line 1, column 19: unexpected character U+0023 '#' at start of value`},
		{name: "bool-like word", doc: "systemd_cgroup = trueish\n", wantErr: `line 1, column 22: expected newline but got U+0069 'i'`},
		{name: "not UTF-8", doc: "root = '/a\xff'\n", wantErr: `line 1, column 11: invalid UTF-8 character in literal string`},
		{name: "keys are case-sensitive", doc: "Binary_Name = 'x'\n", wantErr: `line 1: unknown key "Binary_Name"`},
		{name: "keys are case-sensitive, quoted", doc: "'typeurl' = 'x'\n", wantErr: `line 1: unknown key "typeurl"`},
		{name: "an escape in an unknown quoted key (go-toml v2.2.4 panics on it)", doc: `"\b"=""`, wantErr: `line 1: unknown key "\b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := decodeConfig([]byte(tc.doc))
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("got  %v\nwant %s…", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*c, tc.want) {
				t.Fatalf("got %+v\nwant %+v", *c, tc.want)
			}
		})
	}
}

// TestParseConfigErrorsAreShort gives every kind of error a long value
// (the shim logs the message and containerd hands it to the client) and
// wants one line of at most 2 KiB.
func TestParseConfigErrorsAreShort(t *testing.T) {
	long := strings.Repeat("x", 600<<10)
	for _, tc := range []struct{ name, doc string }{
		{"unknown key", long + " = 1\n"},
		{"unknown quoted key of control characters", "\"" + strings.Repeat(`\u0001`, 100<<10) + "\" = 1\n"},
		{"unknown table", "[" + long + "]\n"},
		{"wrong type", "root = [\"" + long + "\"]\n"},
		{"syntax error in a long line", "root = '/a' " + long + "\n"},
		{"syntax error after control characters", "root = '" + strings.Repeat("\u00e9", 300<<10) + "\x01'\n"},
		{"bad size", "max_container_shm_size = \"1" + long + "\"\n"},
		{"default over max", "default_container_shm_size = \"" + strings.Repeat(" ", 600<<10) + "1Gi\"\nmax_container_shm_size = \"1Mi\"\n"},
		{"relative root", "root = \"" + long + "\"\n"},
		{"too large", "# " + long + long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(long, []byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if n := len(err.Error()); n > 2048 || strings.Contains(err.Error(), "\n") {
				t.Errorf("a %d-byte error: %.300q…", n, err.Error())
			}
		})
	}
}

// TestGoTOMLPanicIsAnError gives the decoder alone the document go-toml
// v2.2.4 panics on: the shim must get an error, not a crash.
func TestGoTOMLPanicIsAnError(t *testing.T) {
	err := goTOML(func() error {
		d := toml.NewDecoder(strings.NewReader(`"\b"=""`))
		d.DisallowUnknownFields()
		return d.Decode(&Config{})
	})
	if err == nil {
		t.Fatal(`go-toml accepted "\b" as a key of Config`)
	}
	t.Log(err)
}

func TestLoadConfigRefuses(t *testing.T) {
	dir := t.TempDir()
	nested := filepath.Join(dir, "nested.toml")
	if err := os.WriteFile(nested, []byte("ConfigPath = \"/etc/other.toml\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("# padding\n"), 200<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{nested, `nsiso config ` + nested + `: ConfigPath = "/etc/other.toml": belongs in containerd's runtime options, not in nsiso.toml`},
		{"/dev/zero", `nsiso config "/dev/zero": not a regular file (a character device)`},
		{big, `nsiso config "` + big + `": file is larger than allowed (2048000 bytes, limit 1048576)`},
	} {
		if _, err := LoadConfig(tc.path); err == nil || err.Error() != tc.want {
			t.Errorf("LoadConfig(%s):\n got %v\nwant %s", tc.path, err, tc.want)
		}
	}
}

func TestResolveOptions(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "nsiso.toml")
	if err := os.WriteFile(cfgPath, []byte("binary_name = \"crun\"\ndisallow_sharing_host_pid_namespace = false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(ConfigPathEnv, filepath.Join(dir, "default.toml"))
	if err := os.WriteFile(filepath.Join(dir, "default.toml"), []byte("root = \"/run/def\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustAny := func(v any) *anyT {
		a, err := typeurl.MarshalAnyToProto(v)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, tc := range []struct {
		name       string
		opts       *anyT
		wantBinary string
		wantRoot   string
		wantPID    bool
		wantErr    string
	}{
		{name: "ConfigPath", opts: mustAny(&runtimeoptions.Options{ConfigPath: cfgPath}), wantBinary: "crun"},
		{name: "ConfigBody", opts: mustAny(&runtimeoptions.Options{ConfigBody: []byte("root = \"/r\"\n")}), wantRoot: "/r", wantPID: true},
		{name: "runc options keep default policy", opts: mustAny(&options.Options{BinaryName: "runc", Root: "/x"}), wantBinary: "runc", wantRoot: "/x", wantPID: true},
		{name: "none reads the default file", wantRoot: "/run/def", wantPID: true},
		{name: "missing ConfigPath", opts: mustAny(&runtimeoptions.Options{ConfigPath: filepath.Join(dir, "nope")}), wantErr: "no such file"},
		{name: "bad ConfigBody", opts: mustAny(&runtimeoptions.Options{ConfigBody: []byte("nope = 1\n")}), wantErr: "unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := resolveOptions(tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.runc.BinaryName != tc.wantBinary || r.runc.Root != tc.wantRoot || r.policy.DisallowHostPID != tc.wantPID {
				t.Fatalf("got runc %+v policy %+v", r.runc, r.policy)
			}
		})
	}
}

func TestLoadDefaultConfigMissingFile(t *testing.T) {
	t.Setenv(ConfigPathEnv, "")
	if _, err := os.Stat(DefaultConfigPath); err == nil {
		t.Skipf("%s exists on this machine", DefaultConfigPath)
	}
	c, err := LoadDefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Policy(); !p.DisallowHostIPC || !p.DisallowHostPID {
		t.Fatalf("defaults must forbid host sharing: %+v", p)
	}
}

// FuzzParseConfig checks that config parsing never panics, that an error
// is one short line, and that an accepted config yields a usable policy
// and reads back the same once go-toml has written it out again.
func FuzzParseConfig(f *testing.F) {
	f.Add("default_container_shm_size = \"256Mi\"\nmax_container_shm_size = \"8Gi\"\n")
	f.Add("disallow_sharing_host_ipc_namespace = false\n")
	f.Add("binary_name = 1\n")
	f.Add("x = [1,2]\n")
	f.Add("binary_name = \"runc\"\nroot = '/run/containerd/runc'\nsystemd_cgroup = false\n")
	f.Add("disallow_sharing_host_ipc_namespace = true # CIS 5.16\ndisallow_sharing_host_pid_namespace = false\n")
	f.Add("default_container_shm_size = \"256Mi\"\r\nmax_container_shm_size = \"8Gi\"\r\n")
	f.Add("\"root\" = \"/a\\u00e9\\\"b\"\n")
	f.Add("ConfigPath = ''\nTypeUrl = \"x\"\n")
	f.Add("root = \"\"\"/a\"\"\"\n")
	f.Add("root.x = 1\n")
	f.Add("systemd_cgroup=true#")
	f.Fuzz(func(t *testing.T, doc string) {
		c, err := ParseConfig("fuzz", []byte(doc))
		if err != nil {
			if n := len(err.Error()); n > 2048 || strings.Contains(err.Error(), "\n") {
				t.Fatalf("a %d-byte error: %.300q", n, err.Error())
			}
			return
		}
		p := c.Policy()
		if p.MaxShmSize > 0 && p.DefaultShmSize > p.MaxShmSize {
			t.Fatalf("default %d over max %d accepted", p.DefaultShmSize, p.MaxShmSize)
		}
		out, err := toml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseConfig("fuzz", out)
		if err != nil {
			t.Fatalf("refused what go-toml wrote of %q:\n%s\n%v", doc, out, err)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("%q read back as %+v, not %+v", out, again, c)
		}
	})
}

type anyT = anypb.Any

// BenchmarkParseConfig parses the example nsiso.toml, as every Create
// does.
func BenchmarkParseConfig(b *testing.B) {
	data, err := os.ReadFile("../examples/nsiso.toml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseConfig("bench", data); err != nil {
			b.Fatal(err)
		}
	}
}
