package nodeinstall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
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

// Install puts nsiso on the host; see the package documentation.
func Install(ctx context.Context, o Options) error {
	if err := checkRoot(); err != nil {
		return err
	}
	root, err := openRoot(o.Root)
	if err != nil {
		return err
	}
	defer root.Close()
	h := hostFS{root: root}
	shim, err := os.ReadFile(o.Shim)
	if err != nil {
		return fmt.Errorf("read the shim to install: %w", err)
	}
	rec, err := readRecord(h)
	if err != nil {
		return err
	}
	if rec == nil {
		rec = &Record{Format: recordFormat}
	}
	rec.Handlers = o.Handlers

	g, err := loadGraph(h, o.Config)
	if err != nil {
		return err
	}
	defaultDropIn := filepath.Join(defaultDropInFolder, dropInName)
	var (
		dropIn     = defaultDropIn
		mainData   []byte // new main config, nil: unchanged
		mainEdit   *Insertion
		mainExists = g != nil
	)
	switch {
	case g == nil:
		mainData = renderMainConfig(dropIn)
	default:
		if v := g.Main.Version; v < 2 || v > 4 {
			return fmt.Errorf("%s has config version %d; containerd 2.x reads versions 2 to 4 (containerd config migrate writes the current one)", o.Config, v)
		}
		if p, ok := dropInDirFor(g.Main, dropInName); ok {
			dropIn = p
		} else if !hasImport(g.Main, dropIn) {
			ins, err := addImport(g.Main.Data, dropIn)
			if err != nil {
				return fmt.Errorf("%s: %w", o.Config, err)
			}
			mainEdit = &ins
			mainData = ins.Apply(g.Main.Data)
		}
		// A handler of the same name anywhere else would be merged with
		// ours or win over it.
		for _, f := range g.Files {
			if f.Path == dropIn || rec.file(f.Path) != nil && rec.file(f.Path).Added {
				continue
			}
			for _, name := range o.Handlers {
				if t, ok := f.handlerTable(name); ok {
					rt, _ := t["runtime_type"].(string)
					if rt == "" {
						return fmt.Errorf("CRI runtime handler %q is already configured in %s; remove it there, or choose another name with --handler", name, f.Path)
					}
					if rt != RuntimeType {
						return fmt.Errorf("CRI runtime handler %q already exists in %s with runtime_type %q; choose another name with --handler", name, f.Path, rt)
					}
					return fmt.Errorf("CRI runtime handler %q is already defined in %s (not by nsiso install); remove it there, or choose another name with --handler", name, f.Path)
				}
			}
		}
	}
	runtimePath := ""
	if filepath.Clean(o.BinDir) != DefaultBinDir {
		runtimePath = filepath.Join(o.BinDir, ShimName)
	}
	dropInData := renderDropIn(dropInVersion, o.Handlers, o.Policy, runtimePath)
	if _, err := root.stat(dropIn); err == nil && !root.holds(dropIn, dropInData) && rec.file(dropIn) == nil {
		return fmt.Errorf("%s exists and was not written by nsiso install; move it away first", dropIn)
	}

	// The result, checked by containerd before anything is written.
	overlay := map[string][]byte{dropIn: dropInData}
	if mainData != nil {
		overlay[o.Config] = mainData
	}
	v := findContainerd(root, o.Containerd)
	merged, err := v.dump(ctx, hostFS{root: root, overlay: overlay}, o.Config)
	if err != nil {
		return fmt.Errorf("refusing to install: the resulting containerd config does not load: %w", err)
	}
	for _, name := range o.Handlers {
		if err := checkHandler(merged, name, o.Policy); err != nil {
			return fmt.Errorf("refusing to install: %w", err)
		}
	}
	o.logf("checked the resulting config with %s", v)

	p := &plan{h: h}
	shimPath := filepath.Join(o.BinDir, ShimName)
	record := func(path string, data []byte, mut func(*RecordFile)) {
		f := rec.file(path)
		if f == nil {
			rec.Files = append(rec.Files, RecordFile{Path: path})
			f = &rec.Files[len(rec.Files)-1]
		}
		f.SHA256 = digest(data)
		if mut != nil {
			mut(f)
		}
	}
	// The shim: a file nsiso install did not put there is kept aside for
	// uninstall to put back.
	var planErr []error
	if rec.file(shimPath) == nil {
		cur, err := root.readFile(shimPath, maxFileSize)
		switch {
		case err == nil:
			backup := filepath.Join(backupDir, ShimName)
			mode := os.FileMode(0o755)
			if st, err := root.stat(shimPath); err == nil {
				mode = st.Mode().Perm()
			}
			planErr = append(planErr, p.addWrite(backup, cur, mode))
			record(shimPath, shim, func(f *RecordFile) { f.Backup = backup })
		case errors.Is(err, fs.ErrNotExist):
			record(shimPath, shim, func(f *RecordFile) { f.Added = true })
		default:
			return fmt.Errorf("read %s: %w", shimPath, err)
		}
	} else {
		record(shimPath, shim, nil)
	}
	planErr = append(planErr, p.addWrite(shimPath, shim, 0o755))

	// nsiso.toml: written once, never over an operator's file.
	if _, err := root.stat(o.Policy); errors.Is(err, fs.ErrNotExist) {
		policy := nsisoDefaults
		if usesSystemdCgroup(merged) {
			policy += nsisoSystemdCgroup
		}
		planErr = append(planErr, p.addWrite(o.Policy, []byte(policy), 0o644))
		record(o.Policy, []byte(policy), func(f *RecordFile) { f.Added, f.Keep = true, true })
	} else if err != nil {
		return fmt.Errorf("stat %s: %w", o.Policy, err)
	}

	planErr = append(planErr, p.addWrite(dropIn, dropInData, 0o644))
	record(dropIn, dropInData, func(f *RecordFile) {
		if f.Edit == nil && f.Backup == "" {
			f.Added = true
		}
	})
	if mainData != nil {
		planErr = append(planErr, p.addWrite(o.Config, mainData, 0o644))
		record(o.Config, mainData, func(f *RecordFile) {
			if mainExists {
				f.Edit = mainEdit
			} else {
				f.Added = true
			}
		})
	}
	if len(p.writes) > 0 {
		planErr = append(planErr, p.needDir(stateDir))
	}
	if err := errors.Join(planErr...); err != nil {
		return fmt.Errorf("refusing to install: %w; nothing was changed", err)
	}
	for _, d := range p.mkdirs {
		if !slicesContains(rec.Dirs, d) {
			rec.Dirs = append(rec.Dirs, d)
		}
	}
	configChanged := false
	for _, w := range p.writes {
		if w.Path == dropIn || w.Path == o.Config {
			configChanged = true
		}
	}
	if len(p.writes) > 0 {
		if err := p.addWrite(recordPath, rec.encode(), 0o644); err != nil {
			return fmt.Errorf("refusing to install: %w; nothing was changed", err)
		}
	}
	if err := p.checkWritable(); err != nil {
		hint := ""
		if strings.Contains(err.Error(), o.BinDir) {
			hint = " (put the shim elsewhere with --bin-dir, e.g. /opt/nsiso/bin)"
		}
		return fmt.Errorf("refusing to install: %w; nothing was changed%s", err, hint)
	}
	if err := p.apply(); err != nil {
		return err
	}
	if len(p.writes) == 0 {
		o.logf("nothing to change: nsiso is installed as asked")
	}
	for _, w := range p.writes {
		o.logf("wrote %s", w.Path)
	}

	if o.Restart {
		if err := o.restartFor(ctx, root, configChanged, true); err != nil {
			return err
		}
	}
	if o.KubeNode != "" {
		// The label sends pods here: only once containerd can run them.
		names, err := criHandlers(ctx, root, o.Address)
		if err != nil {
			return fmt.Errorf("not labelling node %s: containerd's CRI at %s: %w", o.KubeNode, o.Address, err)
		}
		for _, h := range o.Handlers {
			if !slicesContains(names, h) {
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
	}
	return nil
}

// restartFor restarts containerd when its config changed or its CRI does
// not (install) or still does (uninstall) report the handlers, then waits
// until it does.
func (o *Options) restartFor(ctx context.Context, root *hostRoot, configChanged, present bool) error {
	if !configChanged {
		if names, err := criHandlers(ctx, root, o.Address); err == nil {
			ok := true
			for _, h := range o.Handlers {
				if slicesContains(names, h) != present {
					ok = false
				}
			}
			if ok {
				o.logf("containerd's config is unchanged and its CRI reports %v as expected; not restarting", o.Handlers)
				return nil
			}
		}
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

// Uninstall removes what Install added and restores what it edited.
func Uninstall(ctx context.Context, o Options) error {
	if err := checkRoot(); err != nil {
		return err
	}
	if o.KubeNode != "" {
		// First, so that the scheduler sends no new nsiso pod here.
		k, _ := o.labelKV()
		kn, err := newKubeNode(o.KubeNode)
		if err != nil {
			return err
		}
		if err := kn.setLabel(ctx, k, nil); err != nil {
			return err
		}
		o.logf("removed label %s from node %s", k, o.KubeNode)
	}
	root, err := openRoot(o.Root)
	if err != nil {
		return err
	}
	defer root.Close()
	h := hostFS{root: root}
	rec, err := readRecord(h)
	if err != nil {
		return err
	}
	if rec == nil {
		o.logf("nothing to uninstall: no %s under %s", recordPath, o.Root)
		return nil
	}
	if !o.Force {
		pids, err := runningShims(o.Address, o.socket())
		if err != nil {
			return err
		}
		if len(pids) > 0 {
			return fmt.Errorf("refusing to uninstall: %d nsiso shim(s) serve containerd at %s (pids %v); their containers would lose their runtime: "+
				"move their pods away (the node label is gone, so none come back), or pass --force", len(pids), o.Address, pids)
		}
	}

	p := &plan{h: h}
	var conflicts, kept []string
	configChanged := false
	for i := len(rec.Files) - 1; i >= 0; i-- {
		f := rec.Files[i]
		cur, err := root.readFile(f.Path, maxFileSize)
		if errors.Is(err, fs.ErrNotExist) {
			if f.Backup != "" {
				p.writes = append(p.writes, write{Path: f.Path, From: f.Backup})
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", f.Path, unwrapPathError(err))
		}
		unchanged := digest(cur) == f.SHA256
		switch {
		case f.Edit != nil:
			orig, ok := f.Edit.Revert(cur)
			if !ok {
				conflicts = append(conflicts, fmt.Sprintf("%s no longer holds the text install added at byte %d (%q)", f.Path, f.Edit.Offset, f.Edit.Text))
				continue
			}
			p.writes = append(p.writes, write{Path: f.Path, Data: orig})
			configChanged = true
		case f.Keep && !unchanged:
			kept = append(kept, f.Path)
		case !unchanged && !o.Force:
			conflicts = append(conflicts, fmt.Sprintf("%s changed since install (pass --force to remove it anyway)", f.Path))
		case f.Backup != "":
			p.writes = append(p.writes, write{Path: f.Path, From: f.Backup})
		default:
			p.writes = append(p.writes, write{Path: f.Path, Remove: true})
			if !f.Keep && filepath.Base(f.Path) != ShimName {
				configChanged = true
			}
		}
	}
	// A backup is put back by a rename: one that is missing, or not a
	// file, would stop uninstall halfway.
	for _, w := range p.writes {
		if w.From == "" {
			continue
		}
		if st, err := root.stat(w.From); err != nil || !st.Mode().IsRegular() {
			conflicts = append(conflicts, fmt.Sprintf("the backup %s of %s is missing", w.From, w.Path))
		}
	}
	if len(conflicts) > 0 {
		return fmt.Errorf("refusing to uninstall, nothing was changed: %s", strings.Join(conflicts, "; "))
	}
	p.writes = append(p.writes, write{Path: recordPath, Remove: true})
	dirs := append([]string{}, rec.Dirs...)
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	p.rmdirs = dirs
	if err := p.checkWritable(); err != nil {
		return fmt.Errorf("refusing to uninstall: %w; nothing was changed", err)
	}
	if err := p.apply(); err != nil {
		return err
	}
	for _, w := range p.writes {
		switch {
		case w.Remove:
			o.logf("removed %s", w.Path)
		case w.From != "":
			o.logf("restored %s from %s", w.Path, w.From)
		default:
			o.logf("restored %s", w.Path)
		}
	}
	for _, k := range kept {
		o.logf("kept %s: changed since install, so it is the operator's", k)
	}
	if o.Restart {
		o.Handlers = rec.Handlers
		return o.restartFor(ctx, root, configChanged, false)
	}
	return nil
}

// runningShims lists nsiso shims serving the containerd at one of
// addresses: as the host names its socket, or as this process sees it
// when the host's root is not this process's (the DaemonSet runs with
// hostPID, so it sees the host's processes).
func runningShims(addresses ...string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		for _, a := range addresses {
			if isShimOf(argv, a) {
				pids = append(pids, pid)
				break
			}
		}
	}
	sort.Ints(pids)
	return pids, nil
}

// isShimOf tells whether argv is an nsiso shim of the containerd at
// address (containerd passes its socket as -address).
func isShimOf(argv []string, address string) bool {
	if len(argv) == 0 || filepath.Base(argv[0]) != ShimName {
		return false
	}
	for i, a := range argv {
		if (a == "-address" || a == "--address") && i+1 < len(argv) {
			return strings.TrimPrefix(argv[i+1], "unix://") == address
		}
		if v, ok := strings.CutPrefix(a, "-address="); ok {
			return strings.TrimPrefix(v, "unix://") == address
		}
	}
	return false
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
