package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/nsiso/nsiso/testenv"
)

// nodeEnv marks the re-executed test binary that runs inside the node's
// namespaces.
const nodeEnv = "NSISO_E2E_NODE"

// cluster is the one cluster every test of the package uses.
var cluster *Cluster

func TestMain(m *testing.M) {
	bin := os.Getenv(binDirEnv)
	if bin == "" {
		// Unit tests only; TestNode skips without a cluster.
		os.Exit(m.Run())
	}
	if os.Getenv(nodeEnv) == "" {
		os.Exit(reexec())
	}
	os.Exit(runNode(m, bin))
}

// reexec runs this test binary again in a new network and mount
// namespace: the node's iptables rules, bridge and mounts go with them,
// and nothing of the host's network or mount table is touched. It
// forwards SIGINT and SIGTERM, so the child stops the cluster.
func reexec() int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: must run as root")
		return 1
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), nodeEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS, Setpgid: true}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	go func() {
		for s := range sig {
			_ = cmd.Process.Signal(s)
		}
	}()
	err := cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return 0
}

// runNode starts the cluster, runs the tests and stops everything,
// also on SIGINT or SIGTERM.
func runNode(m *testing.M, bin string) int {
	h, err := testenv.NewHarness()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer h.Close()
	dir, err := os.MkdirTemp("", "nsiso-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	t := &teardown{dir: dir}
	t.created, err = nodeSetup(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: node setup:", err)
		return t.run(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	cluster, err = StartCluster(ctx, h, dir, bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: start cluster:", err)
		return t.run(1)
	}
	fmt.Printf("e2e: cluster up in %s (logs in %s)\n", time.Since(start).Round(100*time.Millisecond), dir)
	go supervise(ctx, t)
	return t.run(m.Run())
}

// teardown stops what runNode started, once, whichever comes first: the
// end of the tests or a signal.
type teardown struct {
	dir     string
	created []string // host directories made for hostPaths
	once    sync.Once
	code    int
}

// run stops the cluster, removes its cgroups, directory and the host
// directories it made, and returns the exit code (1 if stopping failed).
func (t *teardown) run(code int) int {
	t.once.Do(func() {
		if code != 0 {
			keepLogs(t.dir)
		}
		if cluster != nil {
			if err := cluster.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "e2e: stop:", err)
				code = 1
			}
		}
		if err := removeCgroupRoot(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
		}
		// The kubelet leaves its volumes mounted when it is stopped
		// mid-way; the logs of a failed run were copied by keepLogs.
		unmountBeneath(t.dir)
		if err := os.RemoveAll(t.dir); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
		}
		for i := len(t.created) - 1; i >= 0; i-- {
			_ = syscall.Unmount(t.created[i], syscall.MNT_DETACH)
			_ = os.Remove(t.created[i])
		}
		t.code = code
	})
	return t.code
}

// unmountBeneath detaches every mount beneath dir, deepest first.
func unmountBeneath(dir string) {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
	for _, m := range mounts {
		_ = syscall.Unmount(m.Mountpoint, syscall.MNT_DETACH)
	}
}

// supervise is the node's service manager: SIGUSR1 (the installer's
// --restart-command) restarts containerd; SIGINT or SIGTERM tears the
// node down and exits.
func supervise(ctx context.Context, t *teardown) {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, os.Interrupt, syscall.SIGTERM)
	for s := range sig {
		if s == syscall.SIGUSR1 {
			if err := cluster.Ctd.Restart(ctx); err != nil {
				fmt.Fprintln(os.Stderr, "e2e: restart containerd:", err)
			}
			continue
		}
		fmt.Fprintln(os.Stderr, "e2e: interrupted; stopping the cluster")
		os.Exit(t.run(2))
	}
}

// keepLogs copies the components' logs to <repo>/_output/e2e-logs, so a
// failure can be read after the cluster's directory is gone.
func keepLogs(dir string) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return
	}
	dst := filepath.Join(root, "_output", "e2e-logs")
	_ = os.RemoveAll(dst)
	_ = os.MkdirAll(dst, 0o755)
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil {
			_ = os.WriteFile(filepath.Join(dst, filepath.Base(l)), b, 0o644)
		}
	}
	fmt.Fprintln(os.Stderr, "e2e: component logs in", dst)
}
