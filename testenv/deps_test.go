package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindDeps(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(DepsBinEnv, dir)

	_, err := FindDeps()
	if !errors.Is(err, ErrDepsMissing) || !strings.Contains(err.Error(), "make deps") {
		t.Fatalf("empty dir: err = %v, want ErrDepsMissing mentioning make deps", err)
	}

	for _, name := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	deps, err := FindDeps()
	if _, statErr := os.Stat(DefaultBusybox); statErr != nil {
		if !errors.Is(err, ErrDepsMissing) {
			t.Fatalf("without %s: err = %v", DefaultBusybox, err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	want := Deps{
		BinDir:     dir,
		Containerd: filepath.Join(dir, "containerd"),
		Ctr:        filepath.Join(dir, "ctr"),
		Runc:       filepath.Join(dir, "runc"),
		RuncShim:   filepath.Join(dir, "containerd-shim-runc-v2"),
		Busybox:    DefaultBusybox,
	}
	if deps != want {
		t.Errorf("FindDeps = %+v, want %+v", deps, want)
	}

	// Not executable counts as missing.
	if err := os.Chmod(filepath.Join(dir, "runc"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := FindDeps(); !errors.Is(err, ErrDepsMissing) || !strings.Contains(err.Error(), "runc") {
		t.Errorf("non-executable runc: err = %v", err)
	}
}

func TestFindDepsRelativeToRepo(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("RepoRoot %s has no go.mod", root)
	}
	t.Setenv(DepsBinEnv, "does/not/exist")
	_, err = FindDeps()
	if err == nil || !strings.Contains(err.Error(), filepath.Join(root, "does/not/exist")) {
		t.Errorf("relative %s not resolved against %s: %v", DepsBinEnv, root, err)
	}
}
