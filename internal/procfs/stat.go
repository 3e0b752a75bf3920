// Package procfs reads the few fields of /proc/<pid>/stat and status that
// nsiso's shim, audit, tests and benchmarks need, in one place: the command
// name may hold spaces and parentheses, so stat's fields are counted after
// the last ')'.
package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is what nsiso reads of /proc/<pid>/stat.
type Stat struct {
	// State is the one-letter process state (R, S, Z, ...).
	State string
	// PPID is the parent's pid.
	PPID int
	// StartTime is the start time in clock ticks since boot, the value runc
	// records as init_process_start: a pid and its start time name one
	// process for good.
	StartTime uint64
}

// ReadStat reads /proc/<pid>/stat.
func ReadStat(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(string(data))
}

// ParseStat parses the text of a /proc/<pid>/stat file.
func ParseStat(text string) (Stat, error) {
	i := strings.LastIndexByte(text, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("malformed stat: no ')'")
	}
	// Fields after the command: state is field 3, ppid 4, starttime 22.
	f := strings.Fields(text[i+1:])
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("malformed stat: %d fields after the command", len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("malformed stat: ppid %q", f[1])
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("malformed stat: starttime %q", f[19])
	}
	return Stat{State: f[0], PPID: ppid, StartTime: start}, nil
}
