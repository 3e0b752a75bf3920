package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsiso/nsiso/internal/procfs"
	"github.com/nsiso/nsiso/testenv"
)

// containerdModule is the module whose shim library both shims are built on.
const containerdModule = "github.com/containerd/containerd/v2"

// hostFacts describes the machine and software a result was measured on,
// so two results can be told apart before their numbers are compared.
type hostFacts struct {
	Date       string `json:"date"`
	Kernel     string `json:"kernel"`
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model,omitempty"`
	MemTotalKB int64  `json:"mem_total_kb,omitempty"`
	Cgroup     string `json:"cgroup"`
	// StateFS is the file system type of containerd's state directory,
	// which holds the bundles whose config.json the shims rewrite.
	StateFS    string `json:"state_fs,omitempty"`
	RuncRootFS string `json:"runc_root_fs,omitempty"`
	// LoadAvg is /proc/loadavg at the start and the end; OtherDaemons
	// counts containerd daemons not started by this run, at the same two
	// moments. Either says whether something else competed for the CPUs.
	LoadAvg      [2]string `json:"loadavg"`
	OtherDaemons [2]int    `json:"other_containerd_daemons"`
	Snapshotter  string    `json:"snapshotter,omitempty"`
	Containerd   string    `json:"containerd,omitempty"`
	Runc         string    `json:"runc,omitempty"`
	GoVersion    string    `json:"go_version"`
	// Repo is the repository's commit, with "+changes" when its tree
	// differed from it as the run began; the nsiso shim is built from it.
	Repo string `json:"repo,omitempty"`
}

// shimBinary describes one shim executable: what containerd runs for a
// runtime, and what it was built from and with.
type shimBinary struct {
	Runtime string `json:"runtime"`
	Path    string `json:"path"`
	// BuiltAt is where the binary was copied from, when the run used a
	// copy.
	BuiltAt string `json:"built_at,omitempty"`
	SHA256  string `json:"sha256"`
	// Version is the shim's own `-v` report.
	Version string `json:"version"`
	// ContainerdLib is the version of the containerd module linked in,
	// i.e. of runc.v2's task service and the shim library.
	ContainerdLib string `json:"containerd_library"`
	GoVersion     string `json:"go_version"`
	CGOEnabled    string `json:"cgo_enabled"`
	Trimpath      bool   `json:"trimpath"`
	// RunningExe is /proc/<shim pid>/exe of a shim containerd actually
	// started for this runtime during the run.
	RunningExe string `json:"running_exe,omitempty"`
}

func collectHostFacts() hostFacts {
	h := hostFacts{
		Date:      time.Now().UTC().Format(time.RFC3339),
		CPUs:      runtime.NumCPU(),
		GoVersion: runtime.Version(),
		Cgroup:    "v1",
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		h.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		h.Cgroup = "v2"
	}
	h.CPUModel = firstField("/proc/cpuinfo", "model name")
	var kb int64
	if _, err := fmt.Sscanf(firstField("/proc/meminfo", "MemTotal"), "%d", &kb); err == nil {
		h.MemTotalKB = kb
	}
	return h
}

// userHZ is the unit of /proc/stat's CPU times; the kernel reports them
// in USER_HZ, which is 100 on every architecture Linux supports today.
const userHZ = 100

// cpuBusy returns the CPU time all CPUs have spent busy since boot: the
// first line of /proc/stat without idle and iowait (waiting on I/O leaves
// a CPU free for others) and without guest time (already in user).
func cpuBusy() (time.Duration, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("cpu time: unexpected /proc/stat line %q", line)
	}
	var ticks int64
	// user nice system idle iowait irq softirq steal
	for i, v := range fields[1:9] {
		if i == 3 || i == 4 {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time: /proc/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// loadAvg returns the first three fields of /proc/loadavg.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}

// otherDaemons counts running containerd daemons; it is called when none
// of this run's is running.
func otherDaemons() int {
	pids, _ := procfs.PIDs()
	n := 0
	for _, pid := range pids {
		if argv, err := procfs.Cmdline(pid); err == nil && len(argv) > 0 && filepath.Base(argv[0]) == "containerd" {
			n++
		}
	}
	return n
}

// firstField returns the value of the first "key: value" line of a /proc
// file that starts with key.
func firstField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// repoState returns "<commit>" or "<commit>+changes" for the repository
// holding this module, or "" outside a git checkout.
func repoState() string {
	root, err := testenv.RepoRoot()
	if err != nil {
		return ""
	}
	head, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(head))
	if out, err := exec.Command("git", "-C", root, "status", "--porcelain").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		s += "+changes"
	}
	return s
}

// copyFile copies an executable to dst, creating dst's directory.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// inspectShim reads a shim binary's build information.
func inspectShim(runtimeName, path string) (shimBinary, error) {
	s := shimBinary{Runtime: runtimeName, Path: path}
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("read build info of %s: %w", path, err)
	}
	s.GoVersion = bi.GoVersion
	if bi.Main.Path == containerdModule {
		s.ContainerdLib = bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == containerdModule {
			s.ContainerdLib = d.Version
			if d.Replace != nil {
				s.ContainerdLib += " => " + d.Replace.Path + " " + d.Replace.Version
			}
		}
	}
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "CGO_ENABLED":
			s.CGOEnabled = kv.Value
		case "-trimpath":
			s.Trimpath = kv.Value == "true"
		}
	}
	if s.SHA256, err = fileSHA256(path); err != nil {
		return s, err
	}
	out, err := exec.Command(path, "-v").Output()
	if err != nil {
		return s, fmt.Errorf("%s -v: %w", path, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version:"); ok {
			s.Version = strings.TrimSpace(v)
		}
	}
	return s, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// sameBuild lists how two shims differ in what makes a fair comparison:
// the shim library version and the build flags.
func sameBuild(a, b shimBinary) []string {
	var diffs []string
	if a.ContainerdLib != b.ContainerdLib {
		diffs = append(diffs, fmt.Sprintf("containerd library %s vs %s", a.ContainerdLib, b.ContainerdLib))
	}
	if a.GoVersion != b.GoVersion {
		diffs = append(diffs, fmt.Sprintf("Go %s vs %s", a.GoVersion, b.GoVersion))
	}
	if a.CGOEnabled != b.CGOEnabled {
		diffs = append(diffs, fmt.Sprintf("CGO_ENABLED=%s vs %s", a.CGOEnabled, b.CGOEnabled))
	}
	if a.Trimpath != b.Trimpath {
		diffs = append(diffs, fmt.Sprintf("-trimpath %v vs %v", a.Trimpath, b.Trimpath))
	}
	return diffs
}

// runcVersion returns the first line of `runc --version`.
func runcVersion(path string) string {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
