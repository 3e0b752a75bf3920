package specmod

import (
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// RuleMaxSysvShmSize is the config key capping the System V shared memory
// of every IPC namespace nsiso lets runc create.
const RuleMaxSysvShmSize = "max_container_sysv_shm_size"

// The IPC namespace's System V shared memory limits, as runc names the
// sysctls it writes into /proc/sys of the container's IPC namespace.
const (
	SysctlShmMax = "kernel.shmmax" // bytes: the largest segment
	SysctlShmAll = "kernel.shmall" // pages: all segments of the namespace
	SysctlShmMni = "kernel.shmmni" // the number of segments
)

// DefaultPageSize is the unit of kernel.shmall when Policy.PageSize is not
// set: the page size of x86-64 and of most arm64 kernels.
const DefaultPageSize = 4096

// DefaultShmMni is the kernel's own kernel.shmmni of a new IPC namespace
// (SHMMNI), written out so the namespace's limits are all in its spec.
const DefaultShmMni = 4096

// defaultShmMni is DefaultShmMni as the sysctl's value.
var defaultShmMni = strconv.Itoa(DefaultShmMni)

// MaxShmMni is the most segments an IPC namespace may be given: the
// kernel's IPCMNI, above which only a kernel booted with ipcmni_extend
// accepts kernel.shmmni. Each segment costs kernel memory beyond its pages.
const MaxShmMni = 32768

// sysvCap is the node's cap on one IPC namespace's System V shared memory
// and the config key it comes from; 0 when there is none.
func sysvCap(p Policy) (int64, string) {
	if p.MaxSysvShmSize > 0 {
		return p.MaxSysvShmSize, RuleMaxSysvShmSize
	}
	return p.MaxShmSize, RuleMaxShmSize
}

// ipcSysctl tells whether runc writes sysctl name (in runc's dotted form)
// into the container's IPC namespace: those its validation allows only
// with an IPC namespace entry.
func ipcSysctl(name string) bool {
	switch name {
	case "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
		SysctlShmAll, SysctlShmMax, SysctlShmMni, "kernel.shm_rmid_forced":
		return true
	}
	return strings.HasPrefix(name, "fs.mqueue.")
}

// sysctlName is the sysctl a spec key names, as runc's validation reads it:
// a key whose first separator is '/' has its '/' and '.' swapped
// ("kernel/shmmax" is kernel.shmmax). runc then writes the key with every
// '.' made '/', so both spellings reach the same file.
func sysctlName(key string) string {
	i := strings.IndexAny(key, "./")
	if i < 0 || key[i] == '.' {
		return key
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, key)
}

// parseSysctlUint reads a sysctl value nsiso can judge: an unsigned decimal
// number without sign, spaces or leading zeros. The kernel reads more
// (proc_doulongvec_minmax parses with base 0, so "010" is 8 and "0x10" is
// 16, skips blanks and ignores a second number), and anything nsiso does
// not read exactly as the kernel will is refused rather than guessed.
func parseSysctlUint(v string) (uint64, bool) {
	if v == "" || len(v) > 20 || len(v) > 1 && v[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}

// limitSysV holds the System V shared memory of the container's IPC
// namespace to the node's cap. shmget does not go through /dev/shm, whose
// size bounds only POSIX shared memory, and a new IPC namespace starts with
// the kernel's defaults, which are effectively unlimited (kernel.shmall and
// kernel.shmmax near 2^64). ipc names what decided the final namespace,
// for messages.
//
// A namespace nsiso lets runc create (the final ipc entry has no path) gets
// kernel.shmmax, kernel.shmall and kernel.shmmni: the client's values when
// within the cap, else the namespace's budget (see sysvBudget). A
// container that joins a namespace by path may set none of the sysctls
// runc would write into it: they are the namespace owner's limits. A
// container without an ipc entry is in the runtime's namespace, which the
// host IPC rule judges and whose sysctls runc refuses.
func limitSysV(s *specs.Spec, in Input, ipc cause) error {
	max, rule := sysvCap(in.Policy)
	if max == 0 || s.Linux == nil {
		return nil
	}
	ns, ok := namespace(s, specs.IPCNamespace)
	if !ok {
		return nil
	}
	c := sysvCheck{in: in, max: max, rule: rule, page: pageSize(in.Policy)}
	keys := ipcSysctlKeys(s.Linux.Sysctl)
	if ns.Path != "" {
		return c.joined(s.Linux.Sysctl, keys, ipc)
	}
	l, err := c.clientLimits(s.Linux.Sysctl, keys)
	if err != nil {
		return err
	}
	l.fill(sysvBudget(in.Request, in.Policy, max), c.page, max)
	l.write(s.Linux)
	return nil
}

// sysvCheck is what judging one IPC namespace's System V sysctls needs: the
// container, the node's cap and the config key it comes from, and the page
// size kernel.shmall counts in.
type sysvCheck struct {
	in   Input
	max  int64
	rule string
	page int64
}

// reject refuses sysctl key with value v, naming the container and its pod.
func (c sysvCheck) reject(key, v, format string, args ...any) error {
	return reject(c.in.ID, c.in.Request, "linux.sysctl."+key, v, format, args...)
}

// pageSize is the unit of kernel.shmall by the node's policy.
func pageSize(p Policy) int64 {
	if p.PageSize <= 0 {
		return DefaultPageSize
	}
	return p.PageSize
}

// ipcSysctlKeys are the spec's sysctl keys that runc writes into the IPC
// namespace, sorted so a spec with several problems always reports the
// same one.
func ipcSysctlKeys(sysctl map[string]string) []string {
	keys := make([]string, 0, 4)
	for k := range sysctl {
		if ipcSysctl(sysctlName(k)) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// joined refuses any IPC sysctl of a container that joins a namespace by
// path: runc would write it into a namespace whose limits are its owner's.
func (c sysvCheck) joined(sysctl map[string]string, keys []string, ipc cause) error {
	if len(keys) == 0 {
		return nil
	}
	k := keys[0]
	return c.reject(k, sysctl[k],
		"would be written into the IPC namespace this container joins (%s=%q), whose limits are its owner's; set it on the container that owns the namespace (%s=%s holds every namespace's System V shared memory)",
		ipc.key, Truncate(ipc.value), c.rule, FormatSize(c.max))
}

// sysvLimits are a new IPC namespace's System V shared memory limits, and
// which of them its client set.
type sysvLimits struct {
	shmMax, shmAll         uint64
	hasMax, hasAll, hasMni bool
}

// clientLimits judges the client's values, by the sysctl they name; each
// is judged alone.
func (c sysvCheck) clientLimits(sysctl map[string]string, keys []string) (sysvLimits, error) {
	var l sysvLimits
	for i, k := range keys {
		name, v := sysctlName(k), sysctl[k]
		if err := c.distinct(keys[:i], k, v); err != nil {
			return l, err
		}
		switch name {
		case SysctlShmMax, SysctlShmAll, SysctlShmMni:
		default:
			continue // not a limit on shared memory
		}
		n, ok := parseSysctlUint(v)
		if !ok {
			return l, c.reject(k, v, "not a plain unsigned decimal number, which nsiso needs to hold it to %s=%s", c.rule, FormatSize(c.max))
		}
		if err := c.within(name, k, v, n); err != nil {
			return l, err
		}
		l.set(name, n)
	}
	return l, nil
}

// distinct refuses key when an earlier key names the same sysctl: runc
// writes the two in no set order.
func (c sysvCheck) distinct(earlier []string, key, v string) error {
	name := sysctlName(key)
	for _, first := range earlier {
		if sysctlName(first) == name {
			return c.reject(key, v, "names the same sysctl as linux.sysctl.%s, and runc writes the two in no set order", first)
		}
	}
	return nil
}

// within refuses a limit n, set under key as sysctl name, that is over the
// node's cap.
func (c sysvCheck) within(name, key, v string, n uint64) error {
	switch name {
	case SysctlShmMax:
		if n > uint64(c.max) {
			return c.reject(key, v, "a System V segment of %s is over %s=%s", formatUint(n), c.rule, FormatSize(c.max))
		}
	case SysctlShmAll:
		if n > uint64(c.max/c.page) {
			return c.reject(key, v, "%s pages of %d bytes of System V shared memory are over %s=%s", strconv.FormatUint(n, 10), c.page, c.rule, FormatSize(c.max))
		}
	case SysctlShmMni:
		if n > MaxShmMni {
			return c.reject(key, v, "more System V segments than the %d (the kernel's IPCMNI) nsiso allows an IPC namespace under %s=%s", MaxShmMni, c.rule, FormatSize(c.max))
		}
	}
	return nil
}

// set records the client's value n of sysctl name.
func (l *sysvLimits) set(name string, n uint64) {
	switch name {
	case SysctlShmMax:
		l.shmMax, l.hasMax = n, true
	case SysctlShmAll:
		l.shmAll, l.hasAll = n, true
	case SysctlShmMni:
		l.hasMni = true
	}
}

// fill derives the limits the client did not set from the namespace's
// budget, in pages of page bytes, never over max.
func (l *sysvLimits) fill(budget, page, max int64) {
	if !l.hasAll {
		// Enough pages for the budget, and for one segment as large as the
		// client's kernel.shmmax, which asks for that much.
		b := uint64(budget)
		if l.hasMax && l.shmMax > b {
			b = l.shmMax
		}
		l.shmAll = min((b+uint64(page)-1)/uint64(page), uint64(max/page))
	}
	if !l.hasMax {
		l.shmMax = l.shmAll * uint64(page)
	}
}

// write puts the limits the client did not set into the spec. A value the
// client gave stays under the key it gave it (maybe "kernel/shmmax"): a
// second spelling would be written in no set order.
func (l sysvLimits) write(lx *specs.Linux) {
	if lx.Sysctl == nil {
		lx.Sysctl = make(map[string]string, 3)
	}
	if !l.hasMax {
		lx.Sysctl[SysctlShmMax] = strconv.FormatUint(l.shmMax, 10)
	}
	if !l.hasAll {
		lx.Sysctl[SysctlShmAll] = strconv.FormatUint(l.shmAll, 10)
	}
	if !l.hasMni {
		lx.Sysctl[SysctlShmMni] = defaultShmMni
	}
}

// sysvBudget is the System V shared memory a new IPC namespace holds when
// its client does not ask with kernel.shmall or kernel.shmmax: as much as
// its /dev/shm may hold by nsiso's settings (nsiso/shm-size, else
// default_container_shm_size, else max_container_shm_size), so each kind
// of shared memory holds at most that; never more than the cap.
func sysvBudget(r Request, p Policy, max int64) int64 {
	b := max
	switch {
	case r.ShmSize > 0:
		b = r.ShmSize
	case p.DefaultShmSize > 0:
		b = p.DefaultShmSize
	case p.MaxShmSize > 0:
		b = p.MaxShmSize
	}
	return min(b, max)
}

// formatUint renders a byte count a client wrote, which may be beyond
// int64, for messages.
func formatUint(n uint64) string {
	if n <= maxSize {
		return FormatSize(int64(n))
	}
	return strconv.FormatUint(n, 10)
}
