package shim

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
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
