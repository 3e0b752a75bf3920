package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// ShimBinEnv names the directory holding the freshly built
// containerd-shim-nsiso-v1 and nsiso (`make build` puts them in
// <repo>/_output/bin, the default).
const ShimBinEnv = "NSISO_BIN"

// Harness is what the integration tests, the demo and the benchmarks all
// need before they start a daemon: the dependencies, the nsiso binaries
// to test, and a scratch directory for configs and image archives. It is
// the one way they start a private containerd with nsiso on its PATH.
type Harness struct {
	Deps Deps
	// ShimDir holds containerd-shim-nsiso-v1 (and nsiso).
	ShimDir string
	// Scratch holds configs and image archives; Close removes it.
	Scratch string

	mu     sync.Mutex
	images map[string]string // ref -> archive in Scratch
}

// NewHarness finds the dependencies (an error wrapping ErrDepsMissing when
// they are not installed) and the nsiso binaries, and makes a scratch
// directory.
func NewHarness() (*Harness, error) {
	deps, err := FindDeps()
	if err != nil {
		return nil, err
	}
	shimDir, err := FindShimDir()
	if err != nil {
		return nil, err
	}
	scratch, err := os.MkdirTemp("", "nsiso-env-")
	if err != nil {
		return nil, err
	}
	return &Harness{Deps: deps, ShimDir: shimDir, Scratch: scratch, images: map[string]string{}}, nil
}

// FindShimDir is $NSISO_BIN, else <repo>/_output/bin, as an absolute path;
// it must hold containerd-shim-nsiso-v1.
func FindShimDir() (string, error) {
	dir := os.Getenv(ShimBinEnv)
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "_output", "bin")
	}
	if _, err := os.Stat(filepath.Join(dir, "containerd-shim-nsiso-v1")); err != nil {
		return "", fmt.Errorf("containerd-shim-nsiso-v1 not built (run `make build`): %w", err)
	}
	return filepath.Abs(dir)
}

// Close removes the scratch directory.
func (h *Harness) Close() error { return os.RemoveAll(h.Scratch) }

// Start starts a private containerd with the nsiso shim and the pinned
// runc and runc.v2 shim first on its PATH. opts.Binary and
// opts.PathPrepend are filled in; the rest is the caller's.
func (h *Harness) Start(ctx context.Context, opts Options) (*Containerd, error) {
	if opts.Binary == "" {
		opts.Binary = h.Deps.Containerd
	}
	opts.PathPrepend = append([]string{h.ShimDir, h.Deps.BinDir}, opts.PathPrepend...)
	return StartContainerd(ctx, opts)
}

// RuncRoot is where a daemon started with dir keeps runc's state when its
// nsiso configs say so (WritePolicy): inside the daemon's directory, so
// that it goes with the daemon.
func RuncRoot(dir string) string { return filepath.Join(dir, "runc") }

// WritePolicy writes an nsiso.toml named name into the scratch directory,
// with runc's root set to runcRoot (where parents are looked up) and body
// after it, and returns its path.
func (h *Harness) WritePolicy(name, runcRoot, body string) (string, error) {
	p := filepath.Join(h.Scratch, name)
	data := fmt.Sprintf("root = %q\n%s\n", runcRoot, body)
	return p, os.WriteFile(p, []byte(data), 0o644)
}

// IpcmkPath is where the test images hold the static ipcmk helper
// (busybox has neither ipcmk nor ipcs).
const IpcmkPath = "/usr/local/bin/ipcmk"

// BusyboxImage builds, once per ref, the busybox image with the ipcmk
// helper and the given Cmd (nil: /bin/sh) as an archive in the scratch
// directory, and returns its path for ImportImage or `ctr images import`.
func (h *Harness) BusyboxImage(ctx context.Context, ref string, cmd []string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p, ok := h.images[ref]; ok {
		return p, nil
	}
	ipcmk := filepath.Join(h.Scratch, "ipcmk")
	if _, err := os.Stat(ipcmk); errors.Is(err, os.ErrNotExist) {
		if err := BuildIpcmk(ctx, ipcmk); err != nil {
			return "", err
		}
	}
	if cmd == nil {
		cmd = []string{"/bin/sh"}
	}
	var buf bytes.Buffer
	if err := BuildBusyboxImageWithCmd(ctx, h.Deps.Busybox, map[string]string{IpcmkPath: ipcmk}, ref, cmd, &buf); err != nil {
		return "", err
	}
	p := filepath.Join(h.Scratch, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	h.images[ref] = p
	return p, nil
}
