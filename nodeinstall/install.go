package nodeinstall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Defaults, as the host sees the paths.
const (
	DefaultConfig       = "/etc/containerd/config.toml"
	DefaultPolicy       = "/etc/containerd/nsiso.toml"
	DefaultBinDir       = "/usr/local/bin"
	DefaultAddress      = "/run/containerd/containerd.sock"
	DefaultHandler      = "nsiso"
	DefaultUnit         = "containerd.service"
	DefaultNodeLabel    = "nsiso.io/runtime=installed"
	DefaultTimeout      = 2 * time.Minute
	ShimName            = "containerd-shim-nsiso-v1"
	dropInName          = "nsiso-cri.toml"
	defaultDropInFolder = "/etc/containerd/conf.d"
)

// Options are the settings of an install or uninstall. Paths named "as the
// host sees it" are placed under Root.
type Options struct {
	Root string // the host's root; "/" on the node
	// Config is containerd's main config, as the host sees it.
	Config string
	// Handlers are the CRI runtime handler names to register.
	Handlers []string
	// Shim is the shim binary to install, as this process sees it.
	Shim string
	// BinDir is where the shim goes, as the host sees it.
	BinDir string
	// Policy is nsiso.toml, as the host sees it.
	Policy string
	// Containerd is the binary that validates, as this process sees it;
	// empty means the host's own (run inside Root), else containerd's
	// config loader.
	Containerd string
	Restart    bool
	// RestartCommand replaces the systemd restart.
	RestartCommand string
	Unit           string
	// Address is containerd's socket, as the host sees it.
	Address string
	Timeout time.Duration
	// KubeNode is the node to label (from inside a pod); empty: none.
	KubeNode  string
	NodeLabel string // key=value
	// Force: uninstall while nsiso shims run, and remove files changed
	// since install.
	Force bool

	Stdout io.Writer
}

func (o *Options) logf(format string, args ...any) {
	fmt.Fprintf(o.Stdout, format+"\n", args...)
}

// socket is containerd's socket as this process names it.
func (o *Options) socket() string { return filepath.Join(o.Root, o.Address) }

func (o *Options) labelKV() (string, string) {
	k, v, _ := strings.Cut(o.NodeLabel, "=")
	return k, v
}

func checkRoot() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (euid is %d): it writes %s, %s and containerd's config", os.Geteuid(), DefaultBinDir, "/etc/containerd")
	}
	return nil
}

// Install puts nsiso on the host; see the package documentation. Its
// steps: plan the config, validate it with containerd, plan the files,
// apply them, restart containerd, label the node.
func Install(ctx context.Context, o Options) error {
	if err := checkRoot(); err != nil {
		return err
	}
	root, err := openRoot(o.Root)
	if err != nil {
		return err
	}
	defer root.Close()
	in, err := newInstaller(&o, root)
	if err != nil {
		return err
	}
	if err := in.planConfig(); err != nil {
		return err
	}
	merged, err := in.validate(ctx)
	if err != nil {
		return err
	}
	configChanged, err := in.planFiles(merged)
	if err != nil {
		return err
	}
	if err := in.apply(); err != nil {
		return err
	}
	if o.Restart {
		if err := o.restartFor(ctx, root, configChanged, true); err != nil {
			return err
		}
	}
	if o.KubeNode != "" {
		return o.labelNode(ctx, root)
	}
	return nil
}

// installer is one install between its steps.
type installer struct {
	o    *Options
	root *hostRoot
	h    hostFS
	shim []byte  // the binary to install
	rec  *Record // the previous install's, updated as the plan grows
	cfg  configPlan
	plan *plan
	// planErrs are the plan's refusals, reported together.
	planErrs []error
}

// configPlan is how install changes containerd's config.
type configPlan struct {
	dropIn     string // as the host sees it
	dropInData []byte
	mainData   []byte     // the new main config; nil: unchanged
	mainEdit   *Insertion // what mainData inserts into an existing main config
	mainExists bool
}

func newInstaller(o *Options, root *hostRoot) (*installer, error) {
	in := &installer{o: o, root: root, h: hostFS{root: root}}
	in.plan = &plan{h: in.h}
	var err error
	if in.shim, err = os.ReadFile(o.Shim); err != nil {
		return nil, fmt.Errorf("read the shim to install: %w", err)
	}
	if in.rec, err = readRecord(in.h); err != nil {
		return nil, err
	}
	if in.rec == nil {
		in.rec = &Record{Format: recordFormat}
	}
	in.rec.Handlers = o.Handlers
	return in, nil
}

// planConfig decides where the drop-in goes, what it holds and how the
// main config imports it, refusing a handler defined elsewhere.
func (in *installer) planConfig() error {
	g, err := loadGraph(in.h, in.o.Config)
	if err != nil {
		return err
	}
	c := &in.cfg
	c.dropIn = filepath.Join(defaultDropInFolder, dropInName)
	if g == nil {
		// No main config: containerd runs on defaults and imports nothing.
		c.mainData = renderMainConfig(c.dropIn)
	} else {
		c.mainExists = true
		if err := c.importDropIn(g.Main, in.o.Config); err != nil {
			return err
		}
		if err := checkConflicts(g.Files, in.rec, c.dropIn, in.o.Handlers); err != nil {
			return err
		}
	}
	runtimePath := ""
	if filepath.Clean(in.o.BinDir) != DefaultBinDir {
		runtimePath = filepath.Join(in.o.BinDir, ShimName)
	}
	c.dropInData = renderDropIn(dropInVersion, in.o.Handlers, in.o.Policy, runtimePath)
	if _, err := in.root.stat(c.dropIn); err == nil && !in.root.holds(c.dropIn, c.dropInData) && in.rec.file(c.dropIn) == nil {
		return fmt.Errorf("%s exists and was not written by nsiso install; move it away first", c.dropIn)
	}
	return nil
}

// importDropIn places the drop-in where the main config already imports
// it (a glob), or else adds an import of it to the main config.
func (c *configPlan) importDropIn(main *configFile, configPath string) error {
	if v := main.Version; v < 2 || v > 4 {
		return fmt.Errorf("%s has config version %d; containerd 2.x reads versions 2 to 4 (containerd config migrate writes the current one)", configPath, v)
	}
	if p, ok := dropInDirFor(main, dropInName); ok {
		c.dropIn = p
		return nil
	}
	if hasImport(main, c.dropIn) {
		return nil
	}
	ins, err := addImport(main.Data, c.dropIn)
	if err != nil {
		return fmt.Errorf("%s: %w", configPath, err)
	}
	c.mainEdit = &ins
	c.mainData = ins.Apply(main.Data)
	return nil
}

// checkConflicts refuses a handler of the same name in any file but the
// drop-in and files install added: containerd would merge it with ours,
// or let it win over ours.
func checkConflicts(files []*configFile, rec *Record, dropIn string, handlers []string) error {
	for _, f := range files {
		if f.Path == dropIn {
			continue
		}
		if r := rec.file(f.Path); r != nil && r.Added {
			continue
		}
		for _, name := range handlers {
			t, ok := f.handlerTable(name)
			if !ok {
				continue
			}
			switch rt, _ := t["runtime_type"].(string); rt {
			case "":
				return fmt.Errorf("CRI runtime handler %q is already configured in %s; remove it there, or choose another name with --handler", name, f.Path)
			case RuntimeType:
				return fmt.Errorf("CRI runtime handler %q is already defined in %s (not by nsiso install); remove it there, or choose another name with --handler", name, f.Path)
			default:
				return fmt.Errorf("CRI runtime handler %q already exists in %s with runtime_type %q; choose another name with --handler", name, f.Path, rt)
			}
		}
	}
	return nil
}

// validate has containerd load the config as it will be, before anything
// is written, and checks that it defines the handlers as nsiso's.
func (in *installer) validate(ctx context.Context) (map[string]any, error) {
	overlay := map[string][]byte{in.cfg.dropIn: in.cfg.dropInData}
	if in.cfg.mainData != nil {
		overlay[in.o.Config] = in.cfg.mainData
	}
	v := findContainerd(in.root, in.o.Containerd)
	merged, err := v.dump(ctx, hostFS{root: in.root, overlay: overlay}, in.o.Config)
	if err != nil {
		return nil, fmt.Errorf("refusing to install: the resulting containerd config does not load: %w", err)
	}
	for _, name := range in.o.Handlers {
		if err := checkHandler(merged, name, in.o.Policy); err != nil {
			return nil, fmt.Errorf("refusing to install: %w", err)
		}
	}
	in.o.logf("checked the resulting config with %s", v)
	return merged, nil
}

// planFiles plans every file install writes and records it; it tells
// whether containerd's config changes.
func (in *installer) planFiles(merged map[string]any) (configChanged bool, err error) {
	if err := in.planShim(); err != nil {
		return false, err
	}
	if err := in.planPolicy(merged); err != nil {
		return false, err
	}
	in.planConfigFiles()
	p := in.plan
	if len(p.writes) > 0 {
		in.planErrs = append(in.planErrs, p.needDir(stateDir))
	}
	if err := errors.Join(in.planErrs...); err != nil {
		return false, fmt.Errorf("refusing to install: %w; nothing was changed", err)
	}
	for _, d := range p.mkdirs {
		if !slices.Contains(in.rec.Dirs, d) {
			in.rec.Dirs = append(in.rec.Dirs, d)
		}
	}
	for _, w := range p.writes {
		configChanged = configChanged || w.Path == in.cfg.dropIn || w.Path == in.o.Config
	}
	if len(p.writes) > 0 {
		if err := p.addWrite(recordPath, in.rec.encode(), 0o644); err != nil {
			return false, fmt.Errorf("refusing to install: %w; nothing was changed", err)
		}
	}
	return configChanged, nil
}

// write adds a write to the plan, keeping its refusal for later.
func (in *installer) write(path string, data []byte, mode os.FileMode) {
	in.planErrs = append(in.planErrs, in.plan.addWrite(path, data, mode))
}

// planShim installs the shim; a file nsiso install did not put there is
// kept aside for uninstall to put back.
func (in *installer) planShim() error {
	shimPath := filepath.Join(in.o.BinDir, ShimName)
	if in.rec.file(shimPath) != nil {
		in.rec.set(shimPath, in.shim)
		in.write(shimPath, in.shim, 0o755)
		return nil
	}
	cur, err := in.root.readFile(shimPath, maxFileSize)
	switch {
	case err == nil:
		backup := filepath.Join(backupDir, ShimName)
		mode := os.FileMode(0o755)
		if st, err := in.root.stat(shimPath); err == nil {
			mode = st.Mode().Perm()
		}
		in.write(backup, cur, mode)
		in.rec.set(shimPath, in.shim).Backup = backup
	case errors.Is(err, fs.ErrNotExist):
		in.rec.set(shimPath, in.shim).Added = true
	default:
		return fmt.Errorf("read %s: %w", shimPath, err)
	}
	in.write(shimPath, in.shim, 0o755)
	return nil
}

// planPolicy writes nsiso.toml once, never over an operator's file.
func (in *installer) planPolicy(merged map[string]any) error {
	_, err := in.root.stat(in.o.Policy)
	if err == nil {
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat %s: %w", in.o.Policy, err)
	}
	policy := nsisoDefaults
	if usesSystemdCgroup(merged) {
		policy += nsisoSystemdCgroup
	}
	in.write(in.o.Policy, []byte(policy), 0o644)
	f := in.rec.set(in.o.Policy, []byte(policy))
	f.Added, f.Keep = true, true
	return nil
}

// planConfigFiles writes the drop-in and, when it changes, the main
// config.
func (in *installer) planConfigFiles() {
	c := in.cfg
	in.write(c.dropIn, c.dropInData, 0o644)
	if f := in.rec.set(c.dropIn, c.dropInData); f.Edit == nil && f.Backup == "" {
		f.Added = true
	}
	if c.mainData == nil {
		return
	}
	in.write(in.o.Config, c.mainData, 0o644)
	f := in.rec.set(in.o.Config, c.mainData)
	if c.mainExists {
		f.Edit = c.mainEdit
	} else {
		f.Added = true
	}
}

// apply makes the plan's changes once every directory they need is known
// to be writable.
func (in *installer) apply() error {
	p := in.plan
	if err := p.checkWritable(); err != nil {
		hint := ""
		if strings.Contains(err.Error(), in.o.BinDir) {
			hint = " (put the shim elsewhere with --bin-dir, e.g. /opt/nsiso/bin)"
		}
		return fmt.Errorf("refusing to install: %w; nothing was changed%s", err, hint)
	}
	if err := p.apply(); err != nil {
		return err
	}
	if len(p.writes) == 0 {
		in.o.logf("nothing to change: nsiso is installed as asked")
	}
	for _, w := range p.writes {
		in.o.logf("wrote %s", w.Path)
	}
	return nil
}

// labelNode labels the node, which sends pods here: only once
// containerd's CRI reports the handlers, so that it can run them.
func (o *Options) labelNode(ctx context.Context, root *hostRoot) error {
	names, err := criHandlers(ctx, root, o.Address)
	if err != nil {
		return fmt.Errorf("not labelling node %s: containerd's CRI at %s: %w", o.KubeNode, o.Address, err)
	}
	for _, h := range o.Handlers {
		if !slices.Contains(names, h) {
			return fmt.Errorf("not labelling node %s: containerd's CRI reports runtime handlers %q, not %q (restart containerd: --restart)", o.KubeNode, names, h)
		}
	}
	k, val := o.labelKV()
	kn, err := newKubeNode(o.KubeNode)
	if err != nil {
		return err
	}
	if err := kn.setLabel(ctx, k, &val); err != nil {
		return err
	}
	o.logf("labelled node %s %s", o.KubeNode, o.NodeLabel)
	return nil
}

// restartFor restarts containerd when its config changed or its CRI does
// not (install) or still does (uninstall) report the handlers, then waits
// until it does.
func (o *Options) restartFor(ctx context.Context, root *hostRoot, configChanged, present bool) error {
	if !configChanged && o.handlersAre(ctx, root, present) {
		o.logf("containerd's config is unchanged and its CRI reports %v as expected; not restarting", o.Handlers)
		return nil
	}
	r := restarter{root: root, unit: o.Unit, command: o.RestartCommand, stdout: o.Stdout}
	how, err := r.restart(ctx)
	if err != nil {
		return err
	}
	o.logf("%s", how)
	if err := waitHandlers(ctx, root, o.Address, o.Handlers, present, o.Timeout); err != nil {
		return err
	}
	if present {
		o.logf("containerd's CRI reports runtime handlers %v", o.Handlers)
	} else {
		o.logf("containerd's CRI no longer reports runtime handlers %v", o.Handlers)
	}
	return nil
}

// handlersAre tells whether containerd's CRI answers and reports every
// handler (present) or none of them (!present).
func (o *Options) handlersAre(ctx context.Context, root *hostRoot, present bool) bool {
	names, err := criHandlers(ctx, root, o.Address)
	if err != nil {
		return false
	}
	for _, h := range o.Handlers {
		if slices.Contains(names, h) != present {
			return false
		}
	}
	return true
}
