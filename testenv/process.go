package testenv

import (
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// Process is a long-running child of the test binary (a daemon): it dies
// with the test binary and is stopped the way a service manager stops one.
type Process struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// StartProcess starts cmd in a process group of its own, so that a
// terminal's Ctrl-C reaches only the test binary (which stops its
// daemons in order), with SIGKILL as its parent-death signal.
//
// Pdeathsig fires when the forking OS thread exits, not the process, and
// Go retires a thread when a goroutine that locked it ends, which tests
// entering namespaces do: the fork happens on a goroutine that stays
// locked to its thread until the process exits.
func StartProcess(cmd *exec.Cmd) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.exited)
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// Pid is the process's ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// WaitErr is what waiting for the process returned; nil before it exits.
func (p *Process) WaitErr() error {
	if p.Running() {
		return nil
	}
	return p.waitErr
}

// Stop sends SIGTERM and, if the process is still there after grace,
// SIGKILL, and returns once it has exited.
func (p *Process) Stop(grace time.Duration) {
	if !p.Running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.Kill()
	}
}

// Kill sends SIGKILL and returns once the process has exited.
func (p *Process) Kill() {
	if p.Running() {
		_ = p.cmd.Process.Kill()
	}
	<-p.exited
}
