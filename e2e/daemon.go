package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/nsiso/nsiso/testenv"
)

// daemon is one long-running component of the cluster, logging to
// <dir>/<name>.log.
type daemon struct {
	name string
	log  string
	*testenv.Process
}

// startDaemon starts path with args as a testenv.Process: it dies with
// the test binary, and a terminal's Ctrl-C reaches only the test binary,
// which stops everything in order.
func startDaemon(dir, name, path string, args ...string) (*daemon, error) {
	d := &daemon{name: name, log: filepath.Join(dir, name+".log")}
	f, err := os.OpenFile(d.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if d.Process, err = testenv.StartProcess(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return d, nil
}

// tail returns the last lines of the log, for a failure message.
func (d *daemon) tail(n int) string {
	b, _ := os.ReadFile(d.log)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
