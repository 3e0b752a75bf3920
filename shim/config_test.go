package shim

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
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
			wantErr: `nsiso config test: line 1, column 2: 'ï' cannot be part of a bare key: use letters, digits, "_" and "-", or quote the key (in "dïsallow = true")`},
		{name: "bad size", toml: "default_container_shm_size = \"lots\"\n",
			wantErr: `nsiso config test: default_container_shm_size = "lots": size "lots" does not start with a number`},
		{name: "default over max", toml: "default_container_shm_size = \"2Gi\"\nmax_container_shm_size = \"1Gi\"\n",
			wantErr: `nsiso config test: default_container_shm_size "2Gi" is over max_container_shm_size "1Gi"`},
		{name: "empty binary_name", toml: "binary_name = \"\"\n",
			wantErr: `nsiso config test: binary_name = "": name the runtime binary, or leave the key out for runc`},
		{name: "relative root", toml: "root = \"run/runc\"\n",
			wantErr: `nsiso config test: root = "run/runc": must be an absolute path (runc's state root, e.g. "/run/containerd/runc")`},
		{name: "not toml", toml: "[[[",
			wantErr: `nsiso config test: line 1, column 3: a key is letters, digits, "_" and "-", or a quoted string (in "[[[")`},
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

// FuzzParseConfig checks that config parsing never panics and that an
// accepted config always yields a usable policy.
func FuzzParseConfig(f *testing.F) {
	f.Add("default_container_shm_size = \"256Mi\"\nmax_container_shm_size = \"8Gi\"\n")
	f.Add("disallow_sharing_host_ipc_namespace = false\n")
	f.Add("binary_name = 1\n")
	f.Add("x = [1,2]\n")
	f.Fuzz(func(t *testing.T, doc string) {
		c, err := ParseConfig("fuzz", []byte(doc))
		if err != nil {
			return
		}
		p := c.Policy()
		if p.MaxShmSize > 0 && p.DefaultShmSize > p.MaxShmSize {
			t.Fatalf("default %d over max %d accepted", p.DefaultShmSize, p.MaxShmSize)
		}
	})
}

type anyT = anypb.Any
