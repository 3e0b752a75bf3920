package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/hostns"
	"github.com/nsiso/nsiso/internal/beneath"
	"github.com/nsiso/nsiso/internal/procfs"
)

// errGone says that a task's init exited while it was being read; such a
// container is reported by its spec rather than failing the audit.
var errGone = errors.New("process exited")

// procInfo is what the kernel tells about one init process.
type procInfo struct {
	ipc, pid  hostns.FileID
	innerPid  int
	startTime uint64
	hasShm    bool
	shmDev    uint64
	shmSize   int64
	// shmUsed is the bytes in use on /dev/shm; shmBounded is false for a
	// file system without a size (a tmpfs mounted with size=0), whose use
	// statfs does not count.
	shmUsed    int64
	shmBounded bool
	// shmSymlink is set when the container's /dev/shm is a symlink, which
	// is not followed: it could name any path on the host.
	shmSymlink bool
}

// readProc reads the namespaces, /dev/shm, NSpid and start time of pid
// under procDir (normally /proc).
func readProc(procDir string, pid uint32) (procInfo, error) {
	dir := filepath.Join(procDir, strconv.FormatUint(uint64(pid), 10))
	var info procInfo
	start, err := readStartTime(dir)
	if err != nil {
		return info, err
	}
	info.startTime = start
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return info, procErr(err)
	}
	// Kernels before 4.1 have no NSpid; the owner is then chosen by the
	// other rules.
	info.innerPid, _ = parseNSpid(string(status))
	if info.ipc, err = hostns.Stat(filepath.Join(dir, "ns", "ipc")); err != nil {
		return info, procErr(err)
	}
	if info.pid, err = hostns.Stat(filepath.Join(dir, "ns", "pid")); err != nil {
		return info, procErr(err)
	}
	if err := readDevShm(dir, &info); err != nil {
		return info, err
	}
	// A pid reused by another process between the reads above would have
	// another start time.
	again, err := readStartTime(dir)
	if err != nil {
		return info, err
	}
	if again != start {
		return info, errGone
	}
	return info, nil
}

// readDevShm reads the file system at the init's /dev/shm. The path is
// resolved beneath the init's root (/proc/<pid>/root, its mount namespace's
// view) without following symlinks: a container that made /dev/shm a
// symlink to "/etc" or "/dev/shm" would otherwise have the host's path
// read, since an absolute symlink under /proc/<pid>/root resolves against
// the reader's root. Size and use come from fstatfs on the handle opened.
func readDevShm(dir string, info *procInfo) error {
	// O_PATH|O_NOFOLLOW opens a symlink at the end itself (or fails with
	// ELOOP where openat2 is missing), so the type below tells it.
	f, err := beneath.Open(filepath.Join(dir, "root"), "dev/shm", unix.O_PATH)
	switch {
	case err == nil:
	case errors.Is(err, unix.ELOOP):
		info.shmSymlink = true
		return nil
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		// No /dev/shm in the container, or the process is gone: the
		// start time check in readProc tells which.
		return nil
	default:
		return procErr(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return procErr(fmt.Errorf("stat %s: %w", f.Name(), err))
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
	case unix.S_IFLNK:
		info.shmSymlink = true
		return nil
	default:
		// A file where /dev/shm should be holds no shared memory.
		return nil
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return procErr(fmt.Errorf("statfs %s: %w", f.Name(), err))
	}
	info.hasShm, info.shmDev = true, st.Dev
	info.shmSize = int64(sfs.Blocks) * sfs.Bsize
	info.shmBounded = sfs.Blocks > 0
	if sfs.Bfree <= sfs.Blocks {
		info.shmUsed = int64(sfs.Blocks-sfs.Bfree) * sfs.Bsize
	}
	return nil
}

func readStartTime(dir string) (uint64, error) {
	data, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return 0, procErr(err)
	}
	st, err := procfs.ParseStat(string(data))
	return st.StartTime, err
}

// procErr turns the errors of a vanished process into errGone and explains
// a refusal, which is nearly always a missing root.
func procErr(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ESRCH):
		return errGone
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w (reading another process's namespaces and /dev/shm needs root)", err)
	}
	return err
}

// parseNSpid returns the last field of the NSpid line of a
// /proc/<pid>/status text: the pid in the innermost PID namespace.
func parseNSpid(status string) (int, error) {
	for line := range strings.SplitSeq(status, "\n") {
		rest, ok := strings.CutPrefix(line, "NSpid:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, fmt.Errorf("empty NSpid line")
		}
		n, err := strconv.Atoi(f[len(f)-1])
		if err != nil {
			return 0, fmt.Errorf("NSpid line %q: %w", line, err)
		}
		return n, nil
	}
	return 0, errors.New("no NSpid line")
}
