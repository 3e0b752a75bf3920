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

func writeSpec(t *testing.T, in string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(in), 0o640); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readJSON(t *testing.T, dir string) (map[string]any, []byte) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m, data
}

// linux.sysctl is read as runc reads it and written back with the rewrite's
// additions; every other field of linux stays as it was.
func TestBundleSpecSysctlRoundTrip(t *testing.T) {
	in := `{"ociVersion":"1.2.0","root":{"path":"rootfs"},
"linux":{"namespaces":[{"type":"ipc"}],"sysctl":{"net.ipv4.ip_forward":"1","kernel.shm_rmid_forced":"1"},"futureLinuxField":{"a":1}}}`
	dir := writeSpec(t, in)
	b, err := readBundleSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Spec.Linux.Sysctl; !reflect.DeepEqual(got, map[string]string{"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}) {
		t.Fatalf("decoded sysctl %v", got)
	}
	b.Spec.Linux.Sysctl["kernel.shmmax"] = "33554432"
	written, err := b.writeIfChanged()
	if err != nil || !written {
		t.Fatalf("written %v, %v; want a write", written, err)
	}
	got, data := readJSON(t, dir)
	var want map[string]any
	_ = json.Unmarshal([]byte(in), &want)
	want["linux"].(map[string]any)["sysctl"].(map[string]any)["kernel.shmmax"] = "33554432"
	want["mounts"] = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %s\nwant %v", data, want)
	}
}

// A rewrite that sets the sysctls a spec already has writes nothing, and
// one that changes only the namespaces leaves linux.sysctl as it was
// spelled, since only what nsiso writes must be in one case.
func TestBundleSpecSysctlUnchanged(t *testing.T) {
	in := `{"root":{"path":"rootfs"},"mounts":[],"linux":{"namespaces":[{"type":"ipc"}],"Sysctl":{"kernel.shmmax":"1"}}}`
	dir := writeSpec(t, in)
	b, err := readBundleSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Spec.Linux.Sysctl["kernel.shmmax"] != "1" {
		t.Fatalf("Sysctl not read as runc reads it: %v", b.Spec.Linux.Sysctl)
	}
	b.Spec.Linux.Sysctl["kernel.shmmax"] = "1"
	if written, err := b.writeIfChanged(); err != nil || written {
		t.Fatalf("written %v, %v; want no write", written, err)
	}
	b.Spec.Linux.Namespaces[0].Path = "/proc/1/ns/ipc"
	if written, err := b.writeIfChanged(); err != nil || !written {
		t.Fatalf("written %v, %v; want a write", written, err)
	}
	_, data := readJSON(t, dir)
	if !strings.Contains(string(data), `"Sysctl":{"kernel.shmmax":"1"}`) {
		t.Fatalf("linux.Sysctl not kept as written: %s", data)
	}
}

// encoding/json merges "sysctl" and "SYSCTL" into one map, in an order the
// spec's bytes decide; nsiso refuses to write into such a spec, as for
// mounts and namespaces.
func TestBundleSpecSysctlCaseDuplicates(t *testing.T) {
	in := `{"root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"ipc"}],"sysctl":{"kernel.shmall":"1"},"SYSCTL":{"kernel.shmmax":"18446744073709551615"}}}`
	dir := writeSpec(t, in)
	b, err := readBundleSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	// nsiso judges what runc would read: both keys, merged.
	if len(b.Spec.Linux.Sysctl) != 2 || b.Spec.Linux.Sysctl["kernel.shmmax"] != "18446744073709551615" {
		t.Fatalf("decoded %v; want both objects merged, as runc decodes them", b.Spec.Linux.Sysctl)
	}
	b.Spec.Linux.Sysctl["kernel.shmmni"] = "4096"
	if _, err := b.writeIfChanged(); err == nil || !strings.Contains(err.Error(), `mean "sysctl" to runc`) {
		t.Fatalf("err %v; want a refusal of the duplicate keys", err)
	}
}

// A spec without a linux object gets one holding what the rewrite set.
func TestBundleSpecSysctlNewLinux(t *testing.T) {
	dir := writeSpec(t, `{"root":{"path":"rootfs"},"mounts":[]}`)
	b, err := readBundleSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Spec.Linux != nil {
		t.Fatalf("linux %+v", b.Spec.Linux)
	}
	b.Spec.Linux = &specs.Linux{
		Namespaces: []specs.LinuxNamespace{{Type: specs.IPCNamespace}},
		Sysctl:     map[string]string{"kernel.shmall": "8192"},
	}
	if written, err := b.writeIfChanged(); err != nil || !written {
		t.Fatalf("written %v, %v; want a write", written, err)
	}
	got, data := readJSON(t, dir)
	linux, _ := got["linux"].(map[string]any)
	if sc, _ := linux["sysctl"].(map[string]any); sc["kernel.shmall"] != "8192" || len(sc) != 1 {
		t.Fatalf("linux.sysctl not written: %s", data)
	}
}
