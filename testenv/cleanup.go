package testenv

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/internal/procfs"
)

// legacyShimSocketDir is where containerd releases without the shim
// manager's socket_dir option (2.2 and older), and shims built with their
// shim library, put shim sockets regardless of configuration.
const legacyShimSocketDir = "/run/containerd/s"

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

type procInfo struct {
	pid  int
	ppid int
	argv []string
	cwd  string
}

// listProcs reads the process table. Processes that vanish while being
// read are skipped.
func listProcs() ([]procInfo, error) {
	pids, err := procfs.PIDs()
	if err != nil {
		return nil, err
	}
	var procs []procInfo
	for _, pid := range pids {
		st, err := procfs.ReadStat(pid)
		if err != nil {
			continue
		}
		p := procInfo{pid: pid, ppid: st.PPID}
		p.argv, _ = procfs.Cmdline(pid)
		p.cwd, _ = os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd"))
		procs = append(procs, p)
	}
	return procs, nil
}

// strayPIDs returns the shims that belong to the daemon rooted at dir (their
// command line names its socket or their working directory is a bundle
// inside dir) together with all their descendants, i.e. the container
// processes they supervise.
func strayPIDs(procs []procInfo, dir string, self int) []int {
	children := map[int][]int{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	seen := map[int]bool{}
	var out []int
	var walk func(pid int)
	walk = func(pid int) {
		if seen[pid] || pid == self || pid <= 1 {
			return
		}
		seen[pid] = true
		out = append(out, pid)
		for _, c := range children[pid] {
			walk(c)
		}
	}
	for _, p := range procs {
		if len(p.argv) == 0 || !strings.HasPrefix(filepath.Base(p.argv[0]), "containerd-shim") {
			continue
		}
		if under(p.cwd, dir) || strings.Contains(strings.Join(p.argv, " "), dir+"/") {
			walk(p.pid)
		}
	}
	sort.Ints(out)
	return out
}

// killStrays SIGKILLs leftover shims of the daemon rooted at dir and their
// descendants, and waits for them to go away.
func killStrays(dir string) error {
	self := os.Getpid()
	deadline := time.Now().Add(10 * time.Second)
	for {
		procs, err := listProcs()
		if err != nil {
			return fmt.Errorf("kill leftover shims: %w", err)
		}
		pids := strayPIDs(procs, dir, self)
		alive := pids[:0]
		for _, pid := range pids {
			if !isZombie(pid) {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill leftover shims: processes %v still running", alive)
		}
		for _, pid := range alive {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// isZombie reports whether pid has exited but not been reaped; such a
// process holds no resources and cannot be killed any further.
func isZombie(pid int) bool {
	st, err := procfs.ReadStat(pid)
	return err != nil || st.State == "Z" // an error: gone
}

// shimSocketPath mirrors containerd's shim.CreateSocketAddress: the socket
// is named by the sha256 of "<daemon address>/<namespace>/<id>[/debug]".
func shimSocketPath(root, daemonAddress, ns, id string, debug bool) string {
	p := filepath.Join(daemonAddress, ns, id)
	if debug {
		p = filepath.Join(p, "debug")
	}
	return filepath.Join(root, fmt.Sprintf("%x", sha256.Sum256([]byte(p))))
}

// removeShimSockets deletes the sockets of this daemon's shims that a
// killed shim could not remove itself. Only the sockets for bundles found
// in the daemon's state directory are considered, and only unix sockets
// are removed.
func removeShimSockets(dir, daemonAddress, extraRoot string) {
	roots := []string{legacyShimSocketDir, filepath.Join(dir, "s")}
	if extraRoot != "" {
		roots = append(roots, extraRoot)
	}
	bundles, _ := filepath.Glob(filepath.Join(dir, "state", "io.containerd.runtime.v2.task", "*", "*"))
	for _, b := range bundles {
		id := filepath.Base(b)
		ns := filepath.Base(filepath.Dir(b))
		candidates := []string{}
		for _, r := range roots {
			candidates = append(candidates,
				shimSocketPath(r, daemonAddress, ns, id, false),
				shimSocketPath(r, daemonAddress, ns, id, true))
		}
		// A shim records the socket it actually listens on; grouped shims
		// (one shim for a whole sandbox) are named after the group, not id.
		if addr, err := os.ReadFile(filepath.Join(b, "address")); err == nil {
			candidates = append(candidates, strings.TrimPrefix(strings.TrimSpace(string(addr)), "unix://"))
		}
		for _, s := range candidates {
			if st, err := os.Lstat(s); err == nil && st.Mode()&os.ModeSocket != 0 {
				_ = os.Remove(s)
			}
		}
	}
}

// mountPointsUnder returns the mount points at or below dir, deepest and
// most recently mounted first.
func mountPointsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return mountPointsIn(f, dir)
}

// mountPointsIn is mountPointsUnder over the mountinfo text r.
func mountPointsIn(r io.Reader, dir string) ([]string, error) {
	infos, err := mountinfo.GetMountsFromReader(r, func(m *mountinfo.Info) (skip, stop bool) {
		return !under(m.Mountpoint, dir), false
	})
	if err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	// Later lines are later mounts: reverse, then a stable sort by depth.
	out := make([]string, len(infos))
	for i, m := range infos {
		out[len(infos)-1-i] = m.Mountpoint
	}
	sort.SliceStable(out, func(i, j int) bool {
		return strings.Count(out[i], "/") > strings.Count(out[j], "/")
	})
	return out, nil
}

// unmountUnder lazily unmounts everything mounted at or below dir. Lazy
// detaching cannot fail on busy mounts, and repeating handles mounts
// stacked on the same point.
func unmountUnder(dir string) error {
	for range 20 {
		mps, err := mountPointsUnder(dir)
		if err != nil {
			return fmt.Errorf("unmount under %s: %w", dir, err)
		}
		if len(mps) == 0 {
			return nil
		}
		for _, p := range mps {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil &&
				!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
		}
	}
	mps, _ := mountPointsUnder(dir)
	return fmt.Errorf("unmount under %s: still mounted: %v", dir, mps)
}

// bundleIDs maps namespace to the container ids that still have a bundle
// in the daemon's state directory, i.e. whose tasks were not deleted.
func bundleIDs(dir string) map[string][]string {
	out := map[string][]string{}
	bundles, _ := filepath.Glob(filepath.Join(dir, "state", "io.containerd.runtime.v2.task", "*", "*"))
	for _, b := range bundles {
		ns := filepath.Base(filepath.Dir(b))
		out[ns] = append(out[ns], filepath.Base(b))
	}
	return out
}

// cgroupRoots returns the cgroup v2 root, or every cgroup v1 hierarchy.
func cgroupRoots() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	var roots []string
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range ents {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		// cpu,cpuacct style links point at a hierarchy listed anyway.
		if e.IsDir() {
			roots = append(roots, p)
		}
	}
	return roots
}

// removeCgroups removes the cgroups runc creates for containerd's default
// "/<namespace>/<id>" cgroup path: those of containers whose tasks were
// killed without being deleted, then the per-namespace parents, which runc
// never removes. rmdir fails on a cgroup that still has tasks or children,
// so a cgroup another daemon is using survives.
func removeCgroups(nsIDs map[string][]string) {
	valid := func(s string) bool {
		return s != "" && s != "." && s != ".." && !strings.Contains(s, "/")
	}
	for _, root := range cgroupRoots() {
		for ns, ids := range nsIDs {
			if !valid(ns) {
				continue
			}
			for _, id := range ids {
				if valid(id) {
					_ = unix.Rmdir(filepath.Join(root, ns, id))
				}
			}
			_ = unix.Rmdir(filepath.Join(root, ns))
		}
	}
}
