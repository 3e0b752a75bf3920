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
	data, err := os.ReadFile(h.real(recordPath))
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
func (p *plan) addWrite(path string, data []byte, mode os.FileMode) bool {
	if cur, err := os.ReadFile(p.h.real(path)); err == nil && sameBytes(cur, data) {
		return false
	}
	p.writes = append(p.writes, write{Path: path, Data: data, Mode: mode})
	p.needDir(filepath.Dir(path))
	return true
}

// needDir schedules the missing directories of dir.
func (p *plan) needDir(dir string) {
	var missing []string
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if _, err := os.Stat(p.h.real(d)); err == nil {
			break
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
			if _, err := os.Stat(p.h.real(e)); err == nil || e == "/" {
				break
			}
			e = filepath.Dir(e)
		}
		if err := unix.Access(p.h.real(e), unix.W_OK); err != nil {
			if errors.Is(err, unix.EROFS) {
				return fmt.Errorf("%s is on a read-only file system, so %s cannot be written", e, d)
			}
			return fmt.Errorf("%s is not writable: %w", e, err)
		}
	}
	return nil
}

// apply makes the plan's changes: directories, then each file atomically
// (a new file renamed over the old, so a running shim keeps its binary and
// containerd never reads half a config), then empty directories removed.
func (p *plan) apply() error {
	for _, d := range p.mkdirs {
		if err := os.Mkdir(p.h.real(d), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	for _, w := range p.writes {
		real := p.h.real(w.Path)
		switch {
		case w.Remove:
			if err := os.Remove(real); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", w.Path, err)
			}
		case w.From != "":
			if err := os.Rename(p.h.real(w.From), real); err != nil {
				return fmt.Errorf("restore %s: %w", w.Path, err)
			}
		default:
			if err := writeAtomic(real, w.Data, w.Mode); err != nil {
				return fmt.Errorf("write %s: %w", w.Path, err)
			}
		}
	}
	for _, d := range p.rmdirs {
		if err := os.Remove(p.h.real(d)); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("remove %s: %w", d, err)
		}
	}
	return nil
}

// writeAtomic replaces path with data. An existing file keeps its mode and
// owner, so that a restored config is the operator's file again.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	uid, gid := -1, -1
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(sys.Uid), int(sys.Gid)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".nsiso-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if uid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
