package nodeinstall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/pelletier/go-toml/v2"
	"golang.org/x/sys/unix"
)

// binDirs are where a host keeps containerd, searched in PATH order.
var binDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// validator runs the node's containerd on a candidate config.
type validator struct {
	root string
	// binary is containerd as this process sees it; empty means none was
	// found and containerd's config loader (this module's copy) is used.
	binary string
	// chroot runs binary inside root, where the host's own binary finds
	// its libraries; binary is then a path inside root.
	chroot bool
}

// findContainerd picks the containerd that validates: the one given, else
// the host's own under root (its usual directories, resolved as the
// chrooted binary is, then, on the node itself, PATH).
func findContainerd(host *hostRoot, given string) validator {
	root := host.path
	if given != "" {
		return validator{root: root, binary: given}
	}
	for _, d := range binDirs {
		p := filepath.Join(d, "containerd")
		if st, err := host.stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			if root == "/" {
				return validator{root: root, binary: p}
			}
			return validator{root: root, binary: p, chroot: true}
		}
	}
	// On the node itself, wherever the operator's PATH finds it.
	if root == "/" {
		if p, err := exec.LookPath("containerd"); err == nil {
			return validator{root: root, binary: p}
		}
	}
	return validator{root: root}
}

func (v validator) String() string {
	switch {
	case v.binary == "":
		return "containerd's config loader (no containerd binary found under " + v.root + ")"
	case v.chroot:
		return v.binary + " config dump (in " + v.root + ")"
	default:
		return v.binary + " config dump"
	}
}

// dump loads the config graph of mainPath, with the overlay's files as if
// they were written, the way containerd loads it, and returns the merged
// config. Nothing else under root changes: every file of the graph is
// copied to a scratch directory with its imports pointed at the copies.
func (v validator) dump(ctx context.Context, h hostFS, mainPath string) (map[string]any, error) {
	g, err := loadGraph(h, mainPath)
	if err != nil {
		return nil, err
	}
	if g == nil {
		return nil, fmt.Errorf("%s: not found", mainPath)
	}
	// The scratch directory is in this process's temporary directory, or,
	// for the chrooted binary, in the host's /tmp resolved as that binary
	// resolves it. view is the directory as the validating process sees it.
	var parent *os.File
	if v.chroot {
		parent, err = h.root.open("/tmp", unix.O_PATH|unix.O_DIRECTORY)
	} else {
		parent, err = os.OpenFile(os.TempDir(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	defer parent.Close()
	scratch, err := newScratch(parent)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	defer scratch.remove()
	view := filepath.Join(os.TempDir(), scratch.name)
	if v.chroot {
		view = filepath.Join("/tmp", scratch.name)
	}
	names := map[string]string{}
	for i, f := range g.Files {
		names[f.Path] = strconv.Itoa(i) + ".toml"
	}
	for _, f := range g.Files {
		tree := f.tree
		if len(f.Imports) > 0 {
			tree = make(map[string]any, len(f.tree))
			for k, val := range f.tree {
				tree[k] = val
			}
			var imports []any
			for _, paths := range g.Resolved[f.Path] {
				for _, p := range paths {
					imports = append(imports, filepath.Join(view, names[p]))
				}
			}
			tree["imports"] = imports
		}
		data, err := toml.Marshal(tree)
		if err != nil {
			return nil, fmt.Errorf("validate: copy %s: %w", f.Path, err)
		}
		if err := scratch.write(names[f.Path], data); err != nil {
			return nil, fmt.Errorf("validate: %w", err)
		}
	}
	mainView := filepath.Join(view, names[mainPath])
	if v.binary == "" {
		return loadInProcess(ctx, mainView)
	}
	return v.run(ctx, mainView)
}

// scratchDir is a new directory made and filled through handles, never by
// a path walked again, and removed with what was put in it.
type scratchDir struct {
	parent *os.File
	dir    int
	name   string
	files  []string
}

func newScratch(parent *os.File) (*scratchDir, error) {
	for range 100 {
		name := "nsiso-validate-" + strconv.FormatUint(uint64(rand.Uint32()), 10)
		err := unix.Mkdirat(int(parent.Fd()), name, 0o700)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "mkdir", Path: name, Err: err}
		}
		dir, err := unix.Openat(int(parent.Fd()), name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			_ = unix.Unlinkat(int(parent.Fd()), name, unix.AT_REMOVEDIR) // best effort: the open already failed
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
		return &scratchDir{parent: parent, dir: dir, name: name}, nil
	}
	return nil, fmt.Errorf("no free name for a scratch directory: %w", unix.EEXIST)
}

func (s *scratchDir) write(name string, data []byte) error {
	fd, err := unix.Openat(s.dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: filepath.Join(s.name, name), Err: err}
	}
	s.files = append(s.files, name)
	f := os.NewFile(uintptr(fd), name)
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// remove takes the scratch directory away, best effort: what it held was
// only ever read.
func (s *scratchDir) remove() {
	for _, n := range s.files {
		_ = unix.Unlinkat(s.dir, n, 0)
	}
	_ = unix.Close(s.dir)
	_ = unix.Unlinkat(int(s.parent.Fd()), s.name, unix.AT_REMOVEDIR)
}

// run is `containerd --config main config dump`.
func (v validator) run(ctx context.Context, mainView string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, v.binary, "--config", mainView, "config", "dump")
	if v.chroot {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: v.root}
		cmd.Dir = "/"
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", v, err, lastLines(stderr.String(), 5))
	}
	out := map[string]any{}
	if err := toml.Unmarshal(stdout.Bytes(), &out); err != nil {
		return nil, fmt.Errorf("%s printed no config: %w", v, err)
	}
	return out, nil
}

// loadInProcess merges the graph with containerd's own loader. It runs no
// plugin migrations (those live in the plugins), so runtime handlers of a
// version 2 graph stay under the CRI gRPC plugin; runtimeHandler looks in
// both places.
func loadInProcess(ctx context.Context, mainPath string) (map[string]any, error) {
	var cfg srvconfig.Config
	if err := srvconfig.LoadConfig(ctx, mainPath, &cfg); err != nil {
		return nil, fmt.Errorf("containerd's config loader: %w", err)
	}
	return map[string]any{"version": int64(cfg.Version), "plugins": cfg.Plugins}, nil
}

// runtimeHandler finds handler name in a merged config.
func runtimeHandler(merged map[string]any, name string) (map[string]any, bool) {
	for _, p := range []string{criPluginV3, criPluginV2} {
		if t, ok := dig(merged, "plugins", p, "containerd", "runtimes", name); ok {
			if m, ok := t.(map[string]any); ok {
				return m, true
			}
		}
	}
	return nil, false
}

// checkHandler tells whether the merged config gives handler name to nsiso
// with the policy file configPath; the error says what containerd would
// use instead.
func checkHandler(merged map[string]any, name, configPath string) error {
	h, ok := runtimeHandler(merged, name)
	if !ok {
		return fmt.Errorf("containerd would have no runtime handler %q", name)
	}
	if rt, _ := h["runtime_type"].(string); rt != RuntimeType {
		return fmt.Errorf("containerd would run handler %q with runtime_type %q, not %q", name, rt, RuntimeType)
	}
	opts, _ := h["options"].(map[string]any)
	if cp, _ := opts["ConfigPath"].(string); cp != configPath {
		return fmt.Errorf("containerd would give handler %q options.ConfigPath %q, not %q", name, cp, configPath)
	}
	return nil
}

// usesSystemdCgroup tells whether the merged config's default CRI runtime
// is runc with the systemd cgroup driver (kubeadm's setting). kubelet then
// hands every container a "slice:prefix:name" cgroup path, which runc
// reads right only with its own systemd driver, so nsiso's runc needs the
// same driver.
func usesSystemdCgroup(merged map[string]any) bool {
	for _, p := range []string{criPluginV3, criPluginV2} {
		ctd, ok := dig(merged, "plugins", p, "containerd")
		if !ok {
			continue
		}
		m, _ := ctd.(map[string]any)
		name, _ := m["default_runtime_name"].(string)
		if name == "" {
			name = "runc"
		}
		if v, ok := dig(m, "runtimes", name, "options", "SystemdCgroup"); ok {
			b, _ := v.(bool)
			return b
		}
	}
	return false
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
