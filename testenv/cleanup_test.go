package testenv

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
)

func TestShimSocketPathMatchesContainerd(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "ns1")
	for _, debug := range []bool{false, true} {
		want, err := shim.SocketAddress(ctx, "/tmp/d/containerd.sock", "ctr1", debug)
		if err != nil {
			t.Fatal(err)
		}
		got := "unix://" + shimSocketPath(legacyShimSocketDir, "/tmp/d/containerd.sock", "ns1", "ctr1", debug)
		if got != want {
			t.Errorf("debug=%v: shimSocketPath = %s, containerd uses %s", debug, got, want)
		}
	}
}

func TestStrayPIDs(t *testing.T) {
	dir := "/tmp/ctd"
	procs := []procInfo{
		{pid: 1, ppid: 0, argv: []string{"/sbin/init"}},
		{pid: 10, ppid: 1, argv: []string{"/usr/bin/containerd-shim-runc-v2", "-namespace", "x", "-address", dir + "/containerd.sock"}},
		{pid: 11, ppid: 10, argv: []string{"/bin/sleep", "100"}},
		{pid: 12, ppid: 11, argv: []string{"/bin/sh"}},
		{pid: 20, ppid: 1, argv: []string{"containerd-shim-nsiso-v1"}, cwd: dir + "/state/io.containerd.runtime.v2.task/x/c2"},
		{pid: 21, ppid: 20, argv: []string{"sh"}},
		// Another daemon's shim, a prefix-sharing dir and unrelated processes.
		{pid: 30, ppid: 1, argv: []string{"containerd-shim-runc-v2", "-address", "/run/containerd/containerd.sock"}, cwd: "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc"},
		{pid: 31, ppid: 30, argv: []string{"pause"}},
		{pid: 40, ppid: 1, argv: []string{"containerd-shim-runc-v2", "-address", dir + "2/containerd.sock"}, cwd: dir + "2/state"},
		{pid: 50, ppid: 1, argv: []string{"vim", dir + "/config.toml"}, cwd: dir},
		{pid: 60, ppid: 1}, // kernel thread: no argv
	}
	got := strayPIDs(procs, dir, 999)
	want := []int{10, 11, 12, 20, 21}
	if !slices.Equal(got, want) {
		t.Errorf("strayPIDs = %v, want %v", got, want)
	}
	if got := strayPIDs(procs, dir, 11); !slices.Equal(got, []int{10, 20, 21}) {
		t.Errorf("strayPIDs must skip itself and what only hangs below it: %v", got)
	}
}

func TestMountPointsIn(t *testing.T) {
	const text = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:5 / /tmp/d rw shared:2 - tmpfs tmpfs rw
31 30 0:6 / /tmp/d/a rw - tmpfs tmpfs rw
32 31 0:7 / /tmp/d/a/b rw - tmpfs tmpfs rw
33 30 0:8 / /tmp/d/with\040space rw - tmpfs tmpfs rw
34 30 0:9 / /tmp/d/tab\011and\134bs rw - tmpfs tmpfs rw
35 31 0:10 / /tmp/d/a rw - tmpfs tmpfs rw
36 22 0:11 / /tmp/dd rw - tmpfs tmpfs rw
37 30 0:12 / /tmp/d/newline\012x\040y rw - tmpfs tmpfs rw
`
	for _, tc := range []struct {
		dir  string
		want []string
	}{
		// Deepest first; at one depth, the later mount first.
		{"/tmp/d", []string{"/tmp/d/a/b", "/tmp/d/newline\nx y", "/tmp/d/a", "/tmp/d/tab\tand\\bs", "/tmp/d/with space", "/tmp/d/a", "/tmp/d"}},
		{"/tmp/d/a", []string{"/tmp/d/a/b", "/tmp/d/a", "/tmp/d/a"}},
		{"/tmp/d/with space", []string{"/tmp/d/with space"}},
		{"/tmp/none", []string{}},
	} {
		got, err := mountPointsIn(strings.NewReader(text), tc.dir)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("mountPointsIn(%q) = %q, %v; want %q", tc.dir, got, err, tc.want)
		}
	}
}

func TestBundleIDs(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"ns1/a", "ns1/b", "ns2/c"} {
		if err := os.MkdirAll(filepath.Join(dir, "state", "io.containerd.runtime.v2.task", p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got := bundleIDs(dir)
	if len(got) != 2 || !slices.Equal(got["ns1"], []string{"a", "b"}) || !slices.Equal(got["ns2"], []string{"c"}) {
		t.Errorf("bundleIDs = %v", got)
	}
}
