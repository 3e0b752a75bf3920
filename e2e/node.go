package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The node's address on its private network and the ranges around it.
const (
	nodeIP      = "10.200.0.1"
	nodeCIDR    = nodeIP + "/24"
	podCIDR     = "10.88.0.0/16"
	serviceCIDR = "10.96.0.0/24"
	serviceIP   = "10.96.0.1" // kubernetes.default
	cgroupRoot  = "/nsiso-e2e"
)

// hostPaths are the fixed paths the node's components write whatever
// their configuration says (the CNI cache, the kubelet's container log
// links, runc's default root, nsiso install's record and drop-in). Each gets a tmpfs
// in the node's own mount namespace, so nothing of the host's is read or
// written there.
var hostPaths = []string{
	"/etc/containerd", // nsiso install's drop-in directory
	"/run/containerd",
	"/var/lib/cni",
	"/var/lib/kubelet",
	"/var/lib/nsiso",
	"/var/log/containers",
	"/var/log/pods",
}

// kernelDefaults are the sysctls the kubelet insists on (it writes them
// unless protectKernelDefaults, and then refuses to start when they
// differ). They are global, so the node shows the kubelet files holding
// the expected values instead of changing the host's.
var kernelDefaults = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// nodeSetup prepares the namespaces the test binary was started in (a new
// network and mount namespace, see reexec): loopback and a dummy interface
// with the node's address, tmpfs over hostPaths, the kernel defaults, and
// the kubelet's cgroup root. It returns the directories it had to create
// on the host, for removal after the node is gone.
func nodeSetup(dir string) (created []string, err error) {
	// Mounts made here must not reach the host's mount namespace (slave),
	// and a pod's HostToContainer volume needs a shared or slave source:
	// shared here is a new peer group of this namespace only.
	for _, flag := range []uintptr{unix.MS_SLAVE, unix.MS_SHARED} {
		if err := unix.Mount("", "/", "", flag|unix.MS_REC, ""); err != nil {
			return nil, fmt.Errorf("mount propagation of /: %w", err)
		}
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		// A veth pair whose peer stays here: the dummy driver is not
		// everywhere, veth (which CNI's bridge needs anyway) is.
		{"link", "add", "e2e0", "type", "veth", "peer", "name", "e2e1"},
		{"addr", "add", nodeCIDR, "dev", "e2e0"},
		{"link", "set", "e2e1", "up"},
		{"link", "set", "e2e0", "up"},
		{"route", "add", "default", "dev", "e2e0"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, p := range hostPaths {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return created, err
			}
			created = append(created, p)
		}
		if err := unix.Mount("tmpfs", p, "tmpfs", 0, "mode=0755"); err != nil {
			return created, fmt.Errorf("mount tmpfs on %s: %w", p, err)
		}
	}
	if err := maskKernelDefaults(dir); err != nil {
		return created, err
	}
	if systemdDriver() {
		return created, nil
	}
	return created, makeCgroupRoot()
}

// maskKernelDefaults binds a file with the kubelet's value over each
// sysctl that differs.
func maskKernelDefaults(dir string) error {
	for name, want := range kernelDefaults {
		p := "/proc/sys/" + name
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(got)) == want {
			continue
		}
		f := filepath.Join(dir, "sysctl-"+strings.ReplaceAll(name, "/", "."))
		if err := os.WriteFile(f, []byte(want+"\n"), 0o444); err != nil {
			return err
		}
		if err := unix.Mount(f, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", f, p, err)
		}
	}
	return nil
}

// cgroupDirs are the kubelet's cgroup root in every hierarchy: the one
// unified directory on cgroup v2, one per controller on v1.
func cgroupDirs() ([]string, error) {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup" + cgroupRoot}, nil
	}
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		// cpu and cpuacct are links to cpu,cpuacct.
		if e.IsDir() && e.Type()&os.ModeSymlink == 0 {
			dirs = append(dirs, filepath.Join("/sys/fs/cgroup", e.Name())+cgroupRoot)
		}
	}
	return dirs, nil
}

func makeCgroupRoot() error {
	dirs, err := cgroupDirs()
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("cgroup root: %w", err)
		}
	}
	return nil
}

// removeCgroupRoot removes the kubelet's cgroups, deepest first; it runs
// once every process of the node is gone.
func removeCgroupRoot() error {
	if systemdDriver() {
		// systemd removes a slice's cgroup when its last unit stops.
		return nil
	}
	dirs, err := cgroupDirs()
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		var all []string
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			if err := unix.Rmdir(all[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", all[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
