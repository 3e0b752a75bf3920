package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// goTool finds the go command: PATH first, then the standard install
// location, because test runners and sudo often start with a minimal PATH.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go", nil
	}
	return "", errors.New("go command not found on PATH or in /usr/local/go/bin")
}

// BuildIpcmk builds the static ipcmk test helper (this package's ipcmk
// command) into outPath, ready to be baked into an image with
// BuildBusyboxImage.
func BuildIpcmk(ctx context.Context, outPath string) error {
	goBin, err := goTool()
	if err != nil {
		return fmt.Errorf("build ipcmk: %w", err)
	}
	root, err := RepoRoot()
	if err != nil {
		return fmt.Errorf("build ipcmk: %w", err)
	}
	out, err := filepath.Abs(outPath)
	if err != nil {
		return fmt.Errorf("build ipcmk: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "github.com/nsiso/nsiso/testenv/ipcmk")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build ipcmk: %w: %s", err, strings.TrimSpace(string(output)))
	}
	return nil
}
