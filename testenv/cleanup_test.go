package testenv

import (
	"context"
	"os"
	"path/filepath"
	"slices"
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

func TestUnescapeMountPath(t *testing.T) {
	cases := map[string]string{
		`/tmp/a`:                 "/tmp/a",
		`/tmp/with\040space`:     "/tmp/with space",
		`/tmp/tab\011and\134bs`:  "/tmp/tab\tand\\bs",
		`/tmp/trailing\04`:       `/tmp/trailing\04`,
		`/tmp/not\999an-escape`:  `/tmp/not\999an-escape`,
		`/tmp/newline\012x\040y`: "/tmp/newline\nx y",
	}
	for in, want := range cases {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
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
