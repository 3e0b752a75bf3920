package nodeinstall

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"golang.org/x/sys/unix"
)

// Where install keeps its record, as the host sees it.
const (
	stateDir   = "/var/lib/nsiso"
	recordPath = stateDir + "/install.json"
	backupDir  = stateDir + "/backup"
	// recordFormat changes when a record could be misread by another
	// release; uninstall refuses a format it does not know.
	recordFormat = 1
)

// Record is what install added to a host, so that uninstall takes away
// exactly that. It holds no times or versions: installing twice leaves it,
// like every other file, byte for byte the same.
type Record struct {
	Format int `json:"format"`
	// Handlers are the CRI runtime handlers the drop-in defines.
	Handlers []string     `json:"handlers"`
	Files    []RecordFile `json:"files"`
	// Dirs were created by install, parents first.
	Dirs []string `json:"dirs,omitempty"`
}

// RecordFile is one file install wrote.
type RecordFile struct {
	Path string `json:"path"`
	// SHA256 is the content install left.
	SHA256 string `json:"sha256"`
	// Added: the file did not exist before; uninstall removes it.
	Added bool `json:"added,omitempty"`
	// Edit is the text install inserted into an operator's file.
	Edit *Insertion `json:"edit,omitempty"`
	// Backup is where the file install replaced was kept.
	Backup string `json:"backup,omitempty"`
	// Keep marks a file that is the operator's once written (nsiso.toml):
	// uninstall removes it only when unchanged.
	Keep bool `json:"keep,omitempty"`
}

func digest(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func readRecord(h hostFS) (*Record, error) {
	data, err := h.root.readFile(recordPath, maxConfigSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read install record: %w", err)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("install record %s: %w", recordPath, err)
	}
	if r.Format != recordFormat {
		return nil, fmt.Errorf("install record %s has format %d; this nsiso reads format %d", recordPath, r.Format, recordFormat)
	}
	return &r, nil
}

func (r *Record) file(p string) *RecordFile {
	for i := range r.Files {
		if r.Files[i].Path == p {
			return &r.Files[i]
		}
	}
	return nil
}

func (r *Record) encode() []byte {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		panic(err) // plain structs always encode
	}
	return append(data, '\n')
}

// write is one file operation of a plan.
type write struct {
	Path string // as the host sees it
	Data []byte
	Mode os.FileMode
	// Remove deletes the file instead.
	Remove bool
	// Rename moves the file at From (a host path) to Path instead.
	From string
}

// plan is the file operations of one install or uninstall, checked before
// the first is made.
type plan struct {
	h      hostFS
	writes []write
	// mkdirs are directories to create, parents first.
	mkdirs []string
	// rmdirs are directories to remove when empty, deepest first.
	rmdirs []string
}

// addWrite adds a write unless the file already holds exactly data.
func (p *plan) addWrite(path string, data []byte, mode os.FileMode) error {
	if p.h.root.holds(path, data) {
		return nil
	}
	p.writes = append(p.writes, write{Path: path, Data: data, Mode: mode})
	return p.needDir(filepath.Dir(path))
}

// needDir schedules the missing directories of dir. A directory that is a
// symlink whose target does not exist on the host is refused: creating
// the target is for the operator to decide.
func (p *plan) needDir(dir string) error {
	var missing []string
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		st, err := p.h.root.stat(d)
		if err == nil {
			if !st.IsDir() {
				return fmt.Errorf("%s is not a directory", d)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if target, ok := p.h.root.danglingLink(d); ok {
			return fmt.Errorf("%s is a symlink to %q, which does not exist on the host (symlinks are resolved inside --root %s)", d, target, p.h.root.path)
		}
		missing = append([]string{d}, missing...)
	}
	for _, d := range missing {
		dup := false
		for _, m := range p.mkdirs {
			dup = dup || m == d
		}
		if !dup {
			p.mkdirs = append(p.mkdirs, d)
		}
	}
	return nil
}

// checkWritable refuses a plan whose files cannot be written, before any
// is: a read-only /usr (Flatcar, Talos, Bottlerocket) or /etc would
// otherwise stop an install halfway.
func (p *plan) checkWritable() error {
	dirs := map[string]bool{}
	for _, w := range p.writes {
		dirs[filepath.Dir(w.Path)] = true
	}
	var sorted []string
	for d := range dirs {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted)
	for _, d := range sorted {
		// The nearest directory that exists decides: a missing one is
		// created in it.
		e := d
		for {
			if _, err := p.h.root.stat(e); err == nil || e == "/" {
				break
			}
			e = filepath.Dir(e)
		}
		if err := p.h.root.writable(e); err != nil {
			if errors.Is(err, unix.EROFS) {
				return fmt.Errorf("%s is on a read-only file system, so %s cannot be written", e, d)
			}
			return fmt.Errorf("%s is not writable: %w", e, unwrapPathError(err))
		}
	}
	return nil
}

// apply makes the plan's changes: directories, then each file atomically
// (hostRoot.writeAtomic), then empty directories removed. Every path is
// resolved in the host root again as it is used.
func (p *plan) apply() error {
	r := p.h.root
	for _, d := range p.mkdirs {
		if err := r.mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", d, unwrapPathError(err))
		}
	}
	for _, w := range p.writes {
		switch {
		case w.Remove:
			if err := r.remove(w.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", w.Path, unwrapPathError(err))
			}
		case w.From != "":
			if err := r.rename(w.From, w.Path); err != nil {
				return fmt.Errorf("restore %s: %w", w.Path, err)
			}
		default:
			if err := r.writeAtomic(w.Path, w.Data, w.Mode); err != nil {
				return fmt.Errorf("write %s: %w", w.Path, err)
			}
		}
	}
	for _, d := range p.rmdirs {
		// Not empty, gone, or no longer a directory (a symlink put in its
		// place): not install's to remove.
		if err := r.rmdir(d); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("remove %s: %w", d, unwrapPathError(err))
		}
	}
	return nil
}

// set records that install leaves data at path, and returns the entry for
// the caller to mark how it came there.
func (r *Record) set(path string, data []byte) *RecordFile {
	f := r.file(path)
	if f == nil {
		r.Files = append(r.Files, RecordFile{Path: path})
		f = &r.Files[len(r.Files)-1]
	}
	f.SHA256 = digest(data)
	return f
}
