package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindShimDir(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(ShimBinEnv, dir)
	if _, err := FindShimDir(); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("a directory without the shim: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "containerd-shim-nsiso-v1"), []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := FindShimDir(); err != nil || got != dir {
		t.Fatalf("FindShimDir = %q, %v; want %q", got, err, dir)
	}
}

func TestWritePolicy(t *testing.T) {
	h := &Harness{Scratch: t.TempDir()}
	p, err := h.WritePolicy("x.toml", "/run/x/runc", `max_container_shm_size = "1Gi"`)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil || string(data) != "root = \"/run/x/runc\"\nmax_container_shm_size = \"1Gi\"\n" {
		t.Fatalf("%s: %q, %v", p, data, err)
	}
}
