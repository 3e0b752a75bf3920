package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// PIDs lists the processes in /proc. An error reading /proc is returned:
// a caller that checks "no process is left" must not pass on an empty list
// it could not read.
func PIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	pids := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Cmdline returns the arguments of pid; a process that has exited (or a
// kernel thread) gives an error or no arguments.
func Cmdline(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00"), nil
}
