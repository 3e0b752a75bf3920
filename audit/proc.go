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
	// Through the init's root, paths resolve in the container's mount
	// namespace, where /dev/shm is whatever its runtime mounted there.
	shm := filepath.Join(dir, "root", "dev", "shm")
	var st unix.Stat_t
	switch err := unix.Stat(shm, &st); {
	case err == nil:
		var sfs unix.Statfs_t
		if err := unix.Statfs(shm, &sfs); err != nil {
			return info, procErr(fmt.Errorf("statfs %s: %w", shm, err))
		}
		info.hasShm, info.shmDev = true, st.Dev
		info.shmSize = int64(sfs.Blocks) * int64(sfs.Bsize)
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		// No /dev/shm in the container, or the process is gone: the
		// start time check below tells which.
	default:
		return info, procErr(fmt.Errorf("stat %s: %w", shm, err))
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
