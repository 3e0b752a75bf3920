package audit

import (
	"os"
	"testing"

	"github.com/nsiso/nsiso/hostns"
)

func TestParseNSpid(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         int
		err          bool
	}{
		{"host process", "Name:\tsleep\nPid:\t4242\nNSpid:\t4242\n", 4242, false},
		{"init of a container", "Name:\tsleep\nNSpid:\t4242\t1\nNSsid:\t1\n", 1, false},
		{"nested twice", "NSpid:\t4242\t17\t3\n", 3, false},
		{"spaces", "NSpid: 10 2", 2, false},
		{"old kernel", "Name:\tsleep\nPid:\t4242\n", 0, true},
		{"empty", "NSpid:\n", 0, true},
		{"garbage", "NSpid:\t12\tx\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseNSpid(tc.status)
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("parseNSpid = %d, %v; want %d, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// readProc on the test process itself: its namespaces are the ones
// /proc/self/ns names and its NSpid ends in its own pid (it is not the init
// of a container).
func TestReadProcSelf(t *testing.T) {
	info, err := readProc("/proc", uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	ipc, _ := hostns.Stat("/proc/self/ns/ipc")
	pid, _ := hostns.Stat("/proc/self/ns/pid")
	if info.ipc != ipc || info.pid != pid {
		t.Errorf("namespaces %v %v, want %v %v", info.ipc, info.pid, ipc, pid)
	}
	if info.startTime == 0 {
		t.Error("no start time")
	}
	if _, err := os.Stat("/dev/shm"); err == nil && (!info.hasShm || info.shmSize <= 0) {
		t.Errorf("/dev/shm not seen: %+v", info)
	}
	if _, err := readProc("/proc", 0); err != errGone {
		t.Errorf("pid 0: %v, want errGone", err)
	}
}
