package nodeinstall

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/pelletier/go-toml/v2"
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
// the host's own under root (its usual directories, then, on the node
// itself, PATH).
func findContainerd(root, given string) validator {
	if given != "" {
		return validator{root: root, binary: given}
	}
	for _, d := range binDirs {
		p := filepath.Join(d, "containerd")
		if st, err := os.Stat(filepath.Join(root, p)); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
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
// config. Nothing under root changes: every file of the graph is copied to
// a scratch directory with its imports pointed at the copies.
func (v validator) dump(ctx context.Context, h hostFS, mainPath string) (map[string]any, error) {
	g, err := loadGraph(h, mainPath)
	if err != nil {
		return nil, err
	}
	if g == nil {
		return nil, fmt.Errorf("%s: not found", mainPath)
	}
	scratchParent := os.TempDir()
	if v.chroot {
		scratchParent = filepath.Join(v.root, "tmp")
	}
	scratch, err := os.MkdirTemp(scratchParent, "nsiso-validate-")
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	defer os.RemoveAll(scratch)
	// view is the scratch directory as the validating process sees it.
	view := scratch
	if v.chroot {
		rel, err := filepath.Rel(v.root, scratch)
		if err != nil {
			return nil, err
		}
		view = "/" + rel
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
		if err := os.WriteFile(filepath.Join(scratch, names[f.Path]), data, 0o600); err != nil {
			return nil, fmt.Errorf("validate: %w", err)
		}
	}
	mainView := filepath.Join(view, names[mainPath])
	if v.binary == "" {
		return loadInProcess(ctx, filepath.Join(scratch, names[mainPath]))
	}
	return v.run(ctx, mainView)
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
