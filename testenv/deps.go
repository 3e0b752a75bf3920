package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DepsBinEnv names the environment variable that overrides where FindDeps
// looks for containerd, ctr and runc.
const DepsBinEnv = "NSISO_DEPS_BIN"

// DefaultBusybox is where Debian's busybox-static package installs busybox.
const DefaultBusybox = "/bin/busybox"

// ErrDepsMissing is wrapped by FindDeps errors, so callers can tell "not
// installed" (skip) from other failures.
var ErrDepsMissing = errors.New("test dependencies missing (run `make deps`)")

// Deps are the absolute paths of the external programs the test environment
// runs.
type Deps struct {
	// BinDir holds containerd, ctr, runc and containerd-shim-runc-v2;
	// put it on the daemon's PATH (Options.PathPrepend).
	BinDir     string
	Containerd string
	Ctr        string
	Runc       string
	// RuncShim is containerd-shim-runc-v2, which containerd execs for the
	// io.containerd.runc.v2 runtime.
	RuncShim string
	Busybox  string
}

// FindDeps locates the binaries installed by scripts/install-deps.sh: in
// $NSISO_DEPS_BIN when set (relative to the repository root unless
// absolute), else in <repo>/_output/deps/bin, plus /bin/busybox. Any missing file yields an error wrapping ErrDepsMissing.
func FindDeps() (Deps, error) {
	dir := os.Getenv(DepsBinEnv)
	// go test runs each package in its own directory, so a relative
	// directory is taken relative to the repository root, not the cwd.
	if !filepath.IsAbs(dir) {
		root, err := RepoRoot()
		if err != nil {
			return Deps{}, fmt.Errorf("find deps: %w (%w)", err, ErrDepsMissing)
		}
		if dir == "" {
			dir = filepath.Join("_output", "deps", "bin")
		}
		dir = filepath.Join(root, dir)
	}
	d := Deps{
		BinDir:     dir,
		Containerd: filepath.Join(dir, "containerd"),
		Ctr:        filepath.Join(dir, "ctr"),
		Runc:       filepath.Join(dir, "runc"),
		RuncShim:   filepath.Join(dir, "containerd-shim-runc-v2"),
		Busybox:    DefaultBusybox,
	}
	var missing []string
	for _, p := range []string{d.Containerd, d.Ctr, d.Runc, d.RuncShim, d.Busybox} {
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return Deps{}, fmt.Errorf("find deps: not found or not executable: %s: %w",
			strings.Join(missing, ", "), ErrDepsMissing)
	}
	return d, nil
}

// RepoRoot returns the directory of the nearest go.mod at or above the
// working directory. Tests run in their package directory, so this finds
// the module root without relying on a fixed layout.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repo root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repo root: no go.mod in the working directory or above")
		}
		dir = parent
	}
}

// ContainerdVersion runs `binary --version` and returns the version it
// reports with a leading "v", e.g. "v2.4.2" or "v2.4.2+unknown" for a
// binary built by `go install`.
func ContainerdVersion(binary string) (string, error) {
	out, err := exec.Command(binary, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", binary, err)
	}
	v, err := parseContainerdVersion(string(out))
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", binary, err)
	}
	return v, nil
}

// parseContainerdVersion reads "containerd <package> <version> [<revision>]".
func parseContainerdVersion(out string) (string, error) {
	f := strings.Fields(out)
	if len(f) < 3 || f[0] != "containerd" {
		return "", fmt.Errorf("unexpected version output %q", strings.TrimSpace(out))
	}
	v := f[2]
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	if _, _, ok := majorMinor(v); !ok {
		return "", fmt.Errorf("unexpected version %q", f[2])
	}
	return v, nil
}

// majorMinor extracts the numeric major and minor from "vX.Y[.Z][...]".
func majorMinor(v string) (major, minor int, ok bool) {
	v = strings.TrimPrefix(v, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(parts[0], "%d", &major); err != nil {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(parts[1], "%d", &minor); err != nil {
		return 0, 0, false
	}
	return major, minor, true
}
