package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/internal/procfs"
	"github.com/nsiso/nsiso/testenv"
)

const (
	nsisoRuntime = "io.containerd.nsiso.v1"
	runcRuntime  = "io.containerd.runc.v2"
	nsisoShim    = "containerd-shim-nsiso-v1"
	runcShim     = "containerd-shim-runc-v2"
	imageRef     = "docker.io/library/nsiso-busybox:bench"
	benchNS      = "nsiso-bench"
	// opTimeout bounds one container operation, so a wedged shim fails
	// the run instead of hanging it.
	opTimeout = 2 * time.Minute
)

// rt is one side of the comparison.
type rt struct {
	// Name is how tables and JSON name the runtime: "nsiso", "runc.v2"
	// (the stock shim of the containerd under test) or "runc.v2-lib"
	// (runc.v2 built from the containerd library nsiso is built on).
	Name string
	// runtime is what containerd is asked for: a runtime name, or the
	// absolute path of a shim binary.
	runtime string
	opts    any
	// short names the runtime in container IDs.
	short string
	// shim is the shim binary containerd runs for it.
	shim string
}

// env is the private containerd the runtimes run on.
type env struct {
	ctd   *testenv.Containerd
	ctx   context.Context
	image client.Image
	nsiso rt
	// stock is the containerd-shim-runc-v2 built with the containerd under
	// test, which the targets compare against; lib is runc.v2 built from
	// the containerd library nsiso is built on, with nsiso's flags, so
	// that the two binaries differ only by nsiso's wrapper.
	stock rt
	lib   rt
	// runcRoot is the runc root both runc.v2 shims are given and nsiso is
	// configured with; fifoDir holds ctr's stdio FIFOs.
	runcRoot string
	fifoDir  string
	// runcPath is the runc binary the shims run.
	runcPath string
	// tmp is a scratch directory removed at the end of the run.
	tmp string
}

// runtimes are the sides of every comparison, nsiso first.
func (e *env) runtimes() []rt { return []rt{e.nsiso, e.stock, e.lib} }

// names are the runtimes' names, in the same order.
func (e *env) names() []string { return []string{e.nsiso.Name, e.stock.Name, e.lib.Name} }

// goTool finds the go command: $GO, then PATH, then the standard install
// location, since sudo often resets PATH.
func goTool() (string, error) {
	if g := os.Getenv("GO"); g != "" {
		if p, err := exec.LookPath(g); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go", nil
	}
	return "", errors.New("go command not found on PATH or in /usr/local/go/bin")
}

// buildRuncShim builds containerd-shim-runc-v2 from the containerd module
// this repository requires, with the flags the Makefile builds nsiso with,
// so that both shims share the task service, shim library and toolchain
// and differ only by nsiso's wrapper.
func buildRuncShim(ctx context.Context, dir string) (string, error) {
	goBin, err := goTool()
	if err != nil {
		return "", fmt.Errorf("build %s: %w", runcShim, err)
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		return "", fmt.Errorf("build %s: %w", runcShim, err)
	}
	out := filepath.Join(dir, runcShim)
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", out, containerdModule+"/cmd/"+runcShim)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w: %s", runcShim, err, strings.TrimSpace(string(output)))
	}
	return out, nil
}

// mountTmpfs mounts a fresh tmpfs on each directory, creating it. On error
// nothing stays mounted.
func mountTmpfs(dirs ...string) error {
	for i, d := range dirs {
		err := os.MkdirAll(d, 0o711)
		if err == nil {
			err = unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=711")
		}
		if err != nil {
			errs := []error{fmt.Errorf("mount tmpfs on %s: %w", d, err)}
			for _, m := range dirs[:i] {
				if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
					errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
				}
			}
			return errors.Join(errs...)
		}
	}
	return nil
}

// removeDaemonDir removes a daemon directory that StartContainerd never
// took charge of, unmounting first so that the removal cannot reach into
// a mount: it keeps the directory when an unmount fails.
func removeDaemonDir(dir string) error {
	for _, sub := range []string{"state", "runc"} {
		m := filepath.Join(dir, sub)
		// EINVAL: not a mount point, as without -state-tmpfs.
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove daemon directory: %w", err)
	}
	return nil
}

// newContainer makes a container record with its own snapshot. Nothing of
// this touches a shim, so callers keep it out of their timings.
func (e *env) newContainer(ctx context.Context, id string, r rt, args []string, extra ...oci.SpecOpts) (client.Container, error) {
	opts := append([]oci.SpecOpts{oci.WithImageConfig(e.image), oci.WithProcessArgs(args...)}, extra...)
	c, err := e.ctd.Client().NewContainer(ctx, id,
		client.WithNewSnapshot(id+"-snap", e.image),
		client.WithRuntime(r.runtime, r.opts),
		client.WithNewSpec(opts...),
	)
	if err != nil {
		return nil, fmt.Errorf("new container %s: %w", id, err)
	}
	return c, nil
}

// removeContainer deletes a container record and its snapshot. It uses its
// own context so that clean-up still runs after the run was interrupted.
func (e *env) removeContainer(c client.Container) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), opTimeout)
	defer cancel()
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", c.ID(), err)
	}
	return nil
}

// removeTask kills and deletes a task whatever its state, then its
// container.
func (e *env) removeTask(c client.Container, t client.Task) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), opTimeout)
	defer cancel()
	var errs []error
	if t != nil {
		if _, err := t.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete task %s: %w", c.ID(), err))
		}
	}
	if err := e.removeContainer(c); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sleeper is a long-running container: a parent, or one whose shim's
// memory is read.
type sleeper struct {
	c client.Container
	t client.Task
}

// startSleeper creates and starts a container that sleeps until removed.
func (e *env) startSleeper(ctx context.Context, id string, r rt, extra ...oci.SpecOpts) (*sleeper, error) {
	c, err := e.newContainer(ctx, id, r, []string{"sleep", "3600"}, extra...)
	if err != nil {
		return nil, err
	}
	t, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("create task %s: %w", id, err), e.removeContainer(c))
	}
	if err := t.Start(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("start task %s: %w", id, err), e.removeTask(c, t))
	}
	return &sleeper{c: c, t: t}, nil
}

func (e *env) stopSleeper(s *sleeper) error {
	if s == nil {
		return nil
	}
	return e.removeTask(s.c, s.t)
}

// shimOf finds the shim serving container id: the containerd-shim-*
// process whose -id argument is id. It checks that the container's init is
// that process's child, as it is for runc.v2-style shims (a subreaper), so
// a grouped shim or a stale process cannot be mistaken for it.
func shimOf(id string, initPID uint32) (int, error) {
	pids, err := procfs.PIDs()
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		argv, err := procfs.Cmdline(pid)
		if err != nil || len(argv) == 0 {
			continue
		}
		if !strings.HasPrefix(filepath.Base(argv[0]), "containerd-shim-") || !hasArg(argv, "-id", id) {
			continue
		}
		st, err := procfs.ReadStat(int(initPID))
		if err != nil {
			return 0, err
		}
		if ppid := st.PPID; ppid != pid {
			return 0, fmt.Errorf("shim of %s is pid %d, but its init %d has parent %d", id, pid, initPID, ppid)
		}
		return pid, nil
	}
	return 0, fmt.Errorf("no containerd-shim-* process with -id %s", id)
}

func hasArg(argv []string, flag, value string) bool {
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag && argv[i+1] == value {
			return true
		}
	}
	return false
}

// verifyShims starts one sleeper per runtime and records the executable
// containerd really started for it, which proves which binaries were
// compared whatever the PATH held.
func (e *env) verifyShims(ctx context.Context, bins map[string]*shimBinary) error {
	for _, r := range e.runtimes() {
		id := "verify-" + strings.ReplaceAll(r.Name, ".", "")
		s, err := e.startSleeper(ctx, id, r)
		if err != nil {
			return err
		}
		pid, err := shimOf(id, s.t.Pid())
		var exe string
		if err == nil {
			exe, err = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		}
		if serr := e.stopSleeper(s); err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("verify %s shim: %w", r.Name, err)
		}
		b := bins[r.Name]
		b.RunningExe = exe
		if exe != b.Path {
			return fmt.Errorf("containerd started %s for %s, not %s", exe, r.runtime, b.Path)
		}
	}
	return nil
}

// defaultRuncRoot is runc.v2's runc root when a client passes no options,
// as ctr does for a shim named by its path.
const defaultRuncRoot = "/run/containerd/runc"

// removeDefaultRuncRoot notes which of runc's default root directories
// exist now, and returns a function that removes, if empty, the one for
// namespace ns and any of the others this run created.
func removeDefaultRuncRoot(ns string) func() {
	dirs := []string{filepath.Dir(defaultRuncRoot), defaultRuncRoot}
	existed := make([]bool, len(dirs))
	for i, d := range dirs {
		_, err := os.Stat(d)
		existed[i] = err == nil
	}
	return func() {
		os.Remove(filepath.Join(defaultRuncRoot, ns))
		for i := len(dirs) - 1; i >= 0; i-- {
			if !existed[i] {
				os.Remove(dirs[i])
			}
		}
	}
}
