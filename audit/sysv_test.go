package audit

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/hostns"
)

// ipcThread starts a thread in an IPC namespace of its own with the given
// limits and one segment of size bytes (none for 0), and returns its tid;
// the thread and its namespace end when the test does.
func ipcThread(t *testing.T, limits map[string]string, size int) int {
	t.Helper()
	type ready struct {
		tid int
		err error
	}
	readyc, done := make(chan ready, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread, and with it the namespace, ends here.
		err := func() error {
			if err := unix.Unshare(unix.CLONE_NEWIPC); err != nil {
				return err
			}
			for k, v := range limits {
				if err := os.WriteFile("/proc/sys/kernel/"+k, []byte(v), 0); err != nil {
					return err
				}
			}
			if size == 0 {
				return nil
			}
			_, err := unix.SysvShmGet(unix.IPC_PRIVATE, size, unix.IPC_CREAT|0o600)
			return err
		}()
		readyc <- ready{unix.Gettid(), err}
		<-done
	}()
	r := <-readyc
	t.Cleanup(func() { close(done) })
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.tid
}

// ReadSysV against real IPC namespaces of the kernel's: a thread of this
// test unshares one, sets its limits and makes a segment there, and
// ReadSysV must see exactly that namespace's.
func TestReadSysV(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("joining an IPC namespace needs root")
	}
	const size = 1<<20 + 1 // 257 pages of 4 KiB
	tid := ipcThread(t, map[string]string{"shmmax": "8388608", "shmall": "4096", "shmmni": "7"}, size)
	otherTid := ipcThread(t, nil, 0)
	ns, err := hostns.Stat(fmt.Sprintf("/proc/%d/ns/ipc", tid))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadSysV(uint32(tid), ns)
	if err != nil {
		t.Fatal(err)
	}
	page := uint64(os.Getpagesize())
	want := SysV{Segments: 1, Bytes: (size + page - 1) / page * page, MaxBytes: 4096 * page, MaxSegmentBytes: 8388608, MaxSegments: 7}
	if got != want {
		t.Errorf("ReadSysV = %+v, want %+v", got, want)
	}
	// A fresh namespace has no segment and the kernel's limits.
	other, err := hostns.Stat(fmt.Sprintf("/proc/%d/ns/ipc", otherTid))
	if err != nil {
		t.Fatal(err)
	}
	got, err = ReadSysV(uint32(otherTid), other)
	if err != nil || got.Segments != 0 || got.Bytes != 0 || got.MaxSegments != 4096 || got.MaxBytes != math.MaxUint64 {
		t.Errorf("ReadSysV of a fresh namespace = %+v, %v", got, err)
	}
	// A namespace that the pid is not in (a reused pid) is refused.
	if _, err := ReadSysV(uint32(tid), other); err != errOtherNamespace {
		t.Errorf("ReadSysV with another namespace: %v, want errOtherNamespace", err)
	}
	if _, err := ReadSysV(0, other); err != errGone {
		t.Errorf("ReadSysV of pid 0: %v, want errGone", err)
	}
}

func TestMulSat(t *testing.T) {
	for _, tc := range []struct{ a, b, want uint64 }{
		{0, 4096, 0}, {4096, 4096, 1 << 24},
		{18446744073692774399, 4096, math.MaxUint64},
		{math.MaxUint64 / 4096, 4096, math.MaxUint64 / 4096 * 4096},
	} {
		if got := mulSat(tc.a, tc.b); got != tc.want {
			t.Errorf("mulSat(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
