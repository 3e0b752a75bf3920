package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

// daemon is one long-running component of the cluster, logging to
// <dir>/<name>.log.
type daemon struct {
	name   string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// startDaemon starts path with args. The process dies with the test
// binary (Pdeathsig), and gets its own process group so that a terminal's
// Ctrl-C reaches only the test binary, which stops everything in order.
func startDaemon(dir, name, path string, args ...string) (*daemon, error) {
	d := &daemon{name: name, log: filepath.Join(dir, name+".log"), exited: make(chan struct{})}
	f, err := os.OpenFile(d.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d.cmd = exec.Command(path, args...)
	d.cmd.Stdout, d.cmd.Stderr = f, f
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	// Pdeathsig fires when the forking thread exits: keep it locked.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := d.cmd.Start(); err != nil {
			started <- err
			close(d.exited)
			return
		}
		started <- nil
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return d, nil
}

// running reports whether the process is still alive.
func (d *daemon) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and, after grace, SIGKILL.
func (d *daemon) stop(grace time.Duration) {
	if !d.running() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(grace):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
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
