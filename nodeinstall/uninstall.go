package nodeinstall

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Uninstall removes what Install added and restores what it edited. Its
// steps: unlabel the node, read the record, check that no shim runs,
// plan, apply, restart containerd.
func Uninstall(ctx context.Context, o Options) error {
	if err := checkRoot(); err != nil {
		return err
	}
	if o.KubeNode != "" {
		// First, so that the scheduler sends no new nsiso pod here.
		if err := o.unlabelNode(ctx); err != nil {
			return err
		}
	}
	root, err := openRoot(o.Root)
	if err != nil {
		return err
	}
	defer root.Close()
	rec, err := readRecord(hostFS{root: root})
	if err != nil {
		return err
	}
	if rec == nil {
		o.logf("nothing to uninstall: no %s under %s", recordPath, o.Root)
		return nil
	}
	if !o.Force {
		if err := o.checkNoShims(); err != nil {
			return err
		}
	}
	r, err := planRemoval(root, rec, o.Force)
	if err != nil {
		return err
	}
	if err := r.apply(&o); err != nil {
		return err
	}
	if o.Restart {
		o.Handlers = rec.Handlers
		return o.restartFor(ctx, root, r.configChanged, false)
	}
	return nil
}

func (o *Options) unlabelNode(ctx context.Context) error {
	k, _ := o.labelKV()
	kn, err := newKubeNode(o.KubeNode)
	if err != nil {
		return err
	}
	if err := kn.setLabel(ctx, k, nil); err != nil {
		return err
	}
	o.logf("removed label %s from node %s", k, o.KubeNode)
	return nil
}

// checkNoShims refuses to take the runtime from containers that run on it.
func (o *Options) checkNoShims() error {
	pids, err := runningShims(o.Address, o.socket())
	if err != nil {
		return err
	}
	if len(pids) > 0 {
		return fmt.Errorf("refusing to uninstall: %d nsiso shim(s) serve containerd at %s (pids %v); their containers would lose their runtime: "+
			"move their pods away (the node label is gone, so none come back), or pass --force", len(pids), o.Address, pids)
	}
	return nil
}

// removal is the plan of an uninstall.
type removal struct {
	plan
	// kept are files the operator changed since install, left in place.
	kept          []string
	configChanged bool
}

// planRemoval undoes the record's files, last written first, and refuses
// with every conflict at once before anything is changed.
func planRemoval(root *hostRoot, rec *Record, force bool) (*removal, error) {
	r := &removal{plan: plan{h: hostFS{root: root}}}
	var conflicts []string
	for i := len(rec.Files) - 1; i >= 0; i-- {
		c, err := r.undo(rec.Files[i], force)
		if err != nil {
			return nil, err
		}
		if c != "" {
			conflicts = append(conflicts, c)
		}
	}
	conflicts = append(conflicts, r.missingBackups()...)
	if len(conflicts) > 0 {
		return nil, fmt.Errorf("refusing to uninstall, nothing was changed: %s", strings.Join(conflicts, "; "))
	}
	r.writes = append(r.writes, write{Path: recordPath, Remove: true})
	dirs := append([]string{}, rec.Dirs...)
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	r.rmdirs = dirs
	if err := r.checkWritable(); err != nil {
		return nil, fmt.Errorf("refusing to uninstall: %w; nothing was changed", err)
	}
	return r, nil
}

// undo plans taking back one file install wrote; a conflict is returned
// as text, to be reported with the others.
func (r *removal) undo(f RecordFile, force bool) (conflict string, err error) {
	cur, err := r.h.root.readFile(f.Path, maxFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		if f.Backup != "" {
			r.writes = append(r.writes, write{Path: f.Path, From: f.Backup})
		}
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", f.Path, unwrapPathError(err))
	}
	unchanged := digest(cur) == f.SHA256
	switch {
	case f.Edit != nil:
		orig, ok := f.Edit.Revert(cur)
		if !ok {
			return fmt.Sprintf("%s no longer holds the text install added at byte %d (%q)", f.Path, f.Edit.Offset, f.Edit.Text), nil
		}
		r.writes = append(r.writes, write{Path: f.Path, Data: orig})
		r.configChanged = true
	case f.Keep && !unchanged:
		r.kept = append(r.kept, f.Path)
	case !unchanged && !force:
		return fmt.Sprintf("%s changed since install (pass --force to remove it anyway)", f.Path), nil
	case f.Backup != "":
		r.writes = append(r.writes, write{Path: f.Path, From: f.Backup})
	default:
		r.writes = append(r.writes, write{Path: f.Path, Remove: true})
		if !f.Keep && filepath.Base(f.Path) != ShimName {
			r.configChanged = true
		}
	}
	return "", nil
}

// missingBackups lists backups that cannot be put back: each is restored
// by a rename, and one that is missing, or not a file, would stop
// uninstall halfway.
func (r *removal) missingBackups() []string {
	var out []string
	for _, w := range r.writes {
		if w.From == "" {
			continue
		}
		if st, err := r.h.root.stat(w.From); err != nil || !st.Mode().IsRegular() {
			out = append(out, fmt.Sprintf("the backup %s of %s is missing", w.From, w.Path))
		}
	}
	return out
}

func (r *removal) apply(o *Options) error {
	if err := r.plan.apply(); err != nil {
		return err
	}
	for _, w := range r.writes {
		switch {
		case w.Remove:
			o.logf("removed %s", w.Path)
		case w.From != "":
			o.logf("restored %s from %s", w.Path, w.From)
		default:
			o.logf("restored %s", w.Path)
		}
	}
	for _, k := range r.kept {
		o.logf("kept %s: changed since install, so it is the operator's", k)
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
