package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// StatusField returns the value of the first "key:" line of text, the
// format of /proc/<pid>/status and smaps_rollup, without surrounding blanks.
func StatusField(text, key string) (string, bool) {
	for line := range strings.SplitSeq(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// ReadKB reads the "key: N kB" line of /proc/<pid>/<file>, where file is
// status or smaps_rollup, in KiB.
func ReadKB(pid int, file, key string) (int64, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/" + file
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, ok := StatusField(string(data), key)
	if !ok {
		return 0, fmt.Errorf("no %s in %s", key, path)
	}
	num, ok := strings.CutSuffix(v, " kB")
	kb, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if !ok || err != nil || kb < 0 {
		return 0, fmt.Errorf("%s %s %q: not a size in kB", path, key, v)
	}
	return kb, nil
}
