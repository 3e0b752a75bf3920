package audit

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/hostns"
)

// SysV is the System V shared memory of one IPC namespace and the limits
// it lives under, as the kernel reports them inside that namespace
// (shmctl IPC_INFO and SHM_INFO).
type SysV struct {
	// Segments is the number of segments (SHM_INFO used_ids).
	Segments int64 `json:"segments"`
	// Bytes is the memory the segments take, each rounded up to whole
	// pages (SHM_INFO shm_tot): what kernel.shmall is checked against.
	Bytes uint64 `json:"bytes"`
	// ResidentBytes is the part of it in memory (touched, not swapped).
	ResidentBytes uint64 `json:"residentBytes"`
	// MaxBytes is kernel.shmall in bytes (saturated at 2^64-1), MaxSegmentBytes
	// kernel.shmmax, MaxSegments kernel.shmmni.
	MaxBytes        uint64 `json:"maxBytes"`
	MaxSegmentBytes uint64 `json:"maxSegmentBytes"`
	MaxSegments     uint64 `json:"maxSegments"`
}

// shmctl commands of <linux/shm.h> and <linux/ipc.h>.
const (
	ipcInfo = 3
	shmInfo = 14
)

// shminfo64 is the kernel's struct shminfo64 (IPC_INFO's answer) on 64-bit
// architectures.
type shminfo64 struct {
	shmmax, shmmin, shmmni, shmseg, shmall uint64
	unused                                 [4]uint64
}

// kernelShmInfo is the kernel's struct shm_info (SHM_INFO's answer).
type kernelShmInfo struct {
	usedIDs       int32
	_             int32
	shmTot        uint64
	shmRss        uint64
	shmSwp        uint64
	swapAttempts  uint64
	swapSuccesses uint64
}

// errOtherNamespace says that the process read no longer is in the IPC
// namespace asked about (it exited and its pid was reused).
var errOtherNamespace = errors.New("the process is in another IPC namespace now")

// ReadSysV reads the System V shared memory of the IPC namespace ns, which
// process pid is in. The kernel answers only about the caller's own IPC
// namespace: shmctl, /proc/sysvipc/shm and /proc/sys/kernel/shm* all look
// at the calling thread's namespace, whoever's /proc they are read from,
// and there is no /proc/<pid>/sysvipc. So the reading is done by one
// locked OS thread that joins the namespace (setns(CLONE_NEWIPC), which a
// multi-threaded process may do thread by thread) and is never unlocked:
// Go ends the thread with its goroutine, so no other code ever runs in the
// container's namespace. Only its IPC namespace changes; the thread keeps
// the host's mount namespace and root, and asks the kernel two questions
// whose answers are fixed-size structs, so nothing the container wrote is
// parsed.
func ReadSysV(pid uint32, ns hostns.FileID) (SysV, error) {
	type result struct {
		v   SysV
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		v, err := readSysVHere(fmt.Sprintf("/proc/%d/ns/ipc", pid), ns)
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

// readSysVHere joins the IPC namespace at path, which must be ns, on the
// calling (locked, discarded) thread and asks the kernel about it.
func readSysVHere(path string, ns hostns.FileID) (SysV, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return SysV{}, procErr(&os.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return SysV{}, procErr(&os.PathError{Op: "stat", Path: path, Err: err})
	}
	if (hostns.FileID{Dev: st.Dev, Ino: st.Ino}) != ns {
		return SysV{}, errOtherNamespace
	}
	if err := unix.Setns(fd, unix.CLONE_NEWIPC); err != nil {
		return SysV{}, fmt.Errorf("join IPC namespace %d: %w", ns.Ino, err)
	}
	return shmctlInfo(uint64(os.Getpagesize()))
}

// shmctlInfo asks the calling thread's IPC namespace for its System V
// shared memory and limits; page is the unit of shm_tot and shmall.
func shmctlInfo(page uint64) (SysV, error) {
	var lim shminfo64
	if _, _, e := unix.Syscall(unix.SYS_SHMCTL, 0, ipcInfo, uintptr(unsafe.Pointer(&lim))); e != 0 {
		return SysV{}, fmt.Errorf("shmctl IPC_INFO: %w", e)
	}
	var use kernelShmInfo
	if _, _, e := unix.Syscall(unix.SYS_SHMCTL, 0, shmInfo, uintptr(unsafe.Pointer(&use))); e != 0 {
		return SysV{}, fmt.Errorf("shmctl SHM_INFO: %w", e)
	}
	return SysV{
		Segments:        int64(use.usedIDs),
		Bytes:           mulSat(use.shmTot, page),
		ResidentBytes:   mulSat(use.shmRss, page),
		MaxBytes:        mulSat(lim.shmall, page),
		MaxSegmentBytes: lim.shmmax,
		MaxSegments:     lim.shmmni,
	}, nil
}

// mulSat is a×b, or the largest uint64 when that overflows: a new IPC
// namespace's kernel.shmall is near 2^64 pages.
func mulSat(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}
