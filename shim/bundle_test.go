package shim

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A rewrite must keep every field it does not own, including ones newer
// than the runtime-spec version nsiso was built with.
func TestBundleSpecRoundTripKeepsUnknownFields(t *testing.T) {
	dir := t.TempDir()
	in := `{"ociVersion":"1.2.0","process":{"args":["sh"],"futureProcessField":7},
"root":{"path":"rootfs"},"annotations":{"nsiso/ipc-mode":"private"},
"mounts":[{"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["size=65536k"]}],
"linux":{"namespaces":[{"type":"ipc"},{"type":"pid"}],"futureLinuxField":{"a":1},"maskedPaths":["/proc/kcore"]},
"futureTopLevel":"kept"}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(in), 0o640); err != nil {
		t.Fatal(err)
	}
	b, err := readBundleSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Spec.Annotations["nsiso/ipc-mode"] != "private" || b.Spec.Root.Path != "rootfs" || len(b.Spec.Linux.Namespaces) != 2 {
		t.Fatalf("decoded %+v", b.Spec)
	}
	b.Spec.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.PIDNamespace}}
	b.Spec.Mounts[0].Options = []string{"size=1"}
	if err := b.write(); err != nil {
		t.Fatal(err)
	}
	var got, want map[string]any
	data, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal([]byte(in), &want)
	want["linux"].(map[string]any)["namespaces"] = []any{map[string]any{"type": "pid"}}
	want["mounts"].([]any)[0].(map[string]any)["options"] = []any{"size=1"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %s\nwant %v", data, want)
	}
	st, _ := os.Stat(filepath.Join(dir, "config.json"))
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

// A rewrite that changes nothing leaves config.json alone; one that
// changes something writes it, and in place (same file, same mode).
func TestBundleSpecWrittenOnlyWhenChanged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	in := `{"ociVersion":"1.2.0","root":{"path":"rootfs"},
"mounts":[{"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["nosuid","size=65536k"]}],
"linux":{"namespaces":[{"type":"ipc"},{"type":"pid"}]}}`
	if err := os.WriteFile(path, []byte(in), 0o640); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	for _, tc := range []struct {
		name    string
		edit    func(s *specs.Spec)
		written bool
	}{
		{"no edit", func(*specs.Spec) {}, false},
		{"same values set again", func(s *specs.Spec) {
			s.Mounts[0].Options = []string{"nosuid", "size=65536k"}
			s.Linux.Namespaces[0] = specs.LinuxNamespace{Type: specs.IPCNamespace}
		}, false},
		{"an option", func(s *specs.Spec) { s.Mounts[0].Options[1] = "size=1" }, true},
		{"a namespace path", func(s *specs.Spec) { s.Linux.Namespaces[1].Path = "/proc/1/ns/pid" }, true},
		{"a mount more", func(s *specs.Spec) { s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x"}) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(in), 0o640); err != nil {
				t.Fatal(err)
			}
			b, err := readBundleSpec(dir)
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(&b.Spec)
			written, err := b.writeIfChanged()
			if err != nil || written != tc.written {
				t.Fatalf("writeIfChanged = %v, %v; want %v", written, err, tc.written)
			}
			data, _ := os.ReadFile(path)
			if !tc.written && string(data) != in {
				t.Fatalf("config.json changed: %s", data)
			}
			var got specs.Spec
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Mounts, b.Spec.Mounts) || !reflect.DeepEqual(got.Linux.Namespaces, b.Spec.Linux.Namespaces) {
				t.Fatalf("runc would read mounts %+v namespaces %+v", got.Mounts, got.Linux.Namespaces)
			}
			after, _ := os.Stat(path)
			if !os.SameFile(before, after) || after.Mode().Perm() != 0o640 {
				t.Fatalf("config.json replaced or its mode changed: %v", after.Mode())
			}
		})
	}
}

// nsiso reads config.json as runc does (encoding/json into structs, keys
// matched regardless of case, every match merged in), and what it writes
// is what runc reads: a key nsiso rewrites that appears more than once, in
// any case, is refused, and one in another case is renamed.
func TestBundleSpecKeysAsRuncReadsThem(t *testing.T) {
	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{name: "canonical", in: `{"mounts":[{"destination":"/a","type":"tmpfs","source":"shm"}],"linux":{"namespaces":[{"type":"ipc"}],"sysctl":{"a":"b"}}}`},
		{name: "other cases", in: `{"Mounts":[{"Destination":"/dev/shm","type":"bind","source":"/dev/shm","options":["rbind"]}],"LINUX":{"Namespaces":[{"type":"pid"}],"sysctl":{"a":"b"}}}`},
		{name: "mounts twice", in: `{"mounts":[{"destination":"/a","type":"tmpfs","source":"shm"}],
"Mounts":[{"Destination":"/dev/shm","type":"bind","source":"/dev/shm","options":["rbind"]}],"linux":{}}`,
			wantErr: `keys ["mounts" "Mounts"] all mean "mounts" to runc, which would merge them; refused`},
		{name: "linux twice", in: `{"mounts":[],"linux":{"namespaces":[{"type":"ipc"}]},"linux":{"seccomp":{}}}`,
			wantErr: `keys ["linux" "linux"] all mean "linux" to runc`},
		{name: "namespaces twice", in: `{"mounts":[],"linux":{"namespaces":[{"type":"ipc"}],"nameSpaces":[]}}`,
			wantErr: `keys ["namespaces" "nameSpaces"] all mean "namespaces" to runc`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "config.json")
			if err := os.WriteFile(path, []byte(tc.in), 0o644); err != nil {
				t.Fatal(err)
			}
			var runc specs.Spec
			if err := json.Unmarshal([]byte(tc.in), &runc); err != nil {
				t.Fatal(err)
			}
			b, err := readBundleSpec(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(b.Spec.Mounts, runc.Mounts) || !reflect.DeepEqual(b.Spec.Linux.Namespaces, runc.Linux.Namespaces) {
				t.Fatalf("nsiso reads mounts %+v namespaces %+v; runc reads %+v %+v", b.Spec.Mounts, b.Spec.Linux.Namespaces, runc.Mounts, runc.Linux.Namespaces)
			}
			b.Spec.Mounts = []specs.Mount{{Destination: "/dev/shm", Type: "tmpfs", Source: "shm"}}
			b.Spec.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.IPCNamespace}, {Type: specs.PIDNamespace}}
			written, err := b.writeIfChanged()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
				}
				if data, _ := os.ReadFile(path); string(data) != tc.in {
					t.Fatalf("a refused spec was written: %s", data)
				}
				return
			}
			if err != nil || !written {
				t.Fatalf("writeIfChanged = %v, %v", written, err)
			}
			data, _ := os.ReadFile(path)
			var after specs.Spec
			if err := json.Unmarshal(data, &after); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(after.Mounts, b.Spec.Mounts) || !reflect.DeepEqual(after.Linux.Namespaces, b.Spec.Linux.Namespaces) || after.Linux.Sysctl["a"] != "b" {
				t.Fatalf("runc reads mounts %+v namespaces %+v sysctl %v after the rewrite:\n%s", after.Mounts, after.Linux.Namespaces, after.Linux.Sysctl, data)
			}
		})
	}
}
