package specmod

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// unitScales are the size suffixes, lower-cased, and their multipliers.
// Sizes are binary, as in Docker's --shm-size and Mesos'
// --default_container_shm_size: "512m" means 512 MiB, never Kubernetes'
// "milli". An array, not a map: no init work at each shim exec (docs/performance.md).
var unitScales = [...]struct {
	unit  string
	scale float64
}{
	{"", 1}, {"b", 1},
	{"k", 1 << 10}, {"kb", 1 << 10}, {"ki", 1 << 10}, {"kib", 1 << 10},
	{"m", 1 << 20}, {"mb", 1 << 20}, {"mi", 1 << 20}, {"mib", 1 << 20},
	{"g", 1 << 30}, {"gb", 1 << 30}, {"gi", 1 << 30}, {"gib", 1 << 30},
	{"t", 1 << 40}, {"tb", 1 << 40}, {"ti", 1 << 40}, {"tib", 1 << 40},
}

func unitScale(unit string) (float64, bool) {
	for _, u := range unitScales {
		if u.unit == unit {
			return u.scale, true
		}
	}
	return 0, false
}

// maxSize keeps sizes far from int64 overflow; no tmpfs is an exabyte.
const maxSize = 1 << 60

// ParseSize parses a size such as "256Mi", "1Gi", "512m", "1g", "1.5G" or a
// bare number of bytes. The result is a positive number of bytes. Errors
// repeat the value cut to MaxEcho bytes, as every message does.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, errors.New("empty size")
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("size %q does not start with a number", Truncate(s))
	}
	scale, ok := unitScale(unit)
	if !ok {
		return 0, fmt.Errorf("size %q has unknown unit %q (use Ki, Mi, Gi, Ti, k, m, g, t or bytes)", Truncate(s), Truncate(strings.TrimSpace(t[i:])))
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(v) {
		return 0, fmt.Errorf("size %q is not a number", Truncate(s))
	}
	b := v * scale
	if b > maxSize {
		return 0, fmt.Errorf("size %q is too large", Truncate(s))
	}
	if b != math.Trunc(b) {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", Truncate(s))
	}
	if b < 1 {
		return 0, fmt.Errorf("size %q must be greater than zero", Truncate(s))
	}
	return int64(b), nil
}

// FormatSize renders bytes in the largest binary unit that divides them,
// for messages a person reads.
func FormatSize(b int64) string {
	for _, u := range []struct {
		suffix string
		scale  int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if b >= u.scale && b%u.scale == 0 {
			return strconv.FormatInt(b/u.scale, 10) + u.suffix
		}
	}
	return strconv.FormatInt(b, 10)
}

// parseTmpfsSize reads a tmpfs "size=" option value (bytes with an optional
// k, m or g suffix, as mount(8) takes it). A percentage of RAM cannot be
// turned into bytes without I/O, so it reports ok=false.
func parseTmpfsSize(v string) (int64, bool) {
	if v == "" || strings.HasSuffix(v, "%") {
		return 0, false
	}
	scale := int64(1)
	switch v[len(v)-1] {
	case 'k', 'K':
		scale = 1 << 10
	case 'm', 'M':
		scale = 1 << 20
	case 'g', 'G':
		scale = 1 << 30
	case 't', 'T':
		scale = 1 << 40
	}
	if scale != 1 {
		v = v[:len(v)-1]
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxSize/scale {
		return 0, false
	}
	return n * scale, true
}
