package nodeinstall

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// Read limits: a config or the record is small, a binary is not; anything
// larger is refused rather than read into memory.
const (
	maxConfigSize = 16 << 20
	maxFileSize   = 512 << 20
)

// hostRoot is the host's root directory (--root), opened once. Every host
// path is resolved in it as the host resolves it: an absolute symlink
// target starts at the root and ".." stops there (openat2 with
// RESOLVE_IN_ROOT), so no symlink under the root, wherever it points,
// leads outside it. Files are created, renamed and removed relative to a
// handle on their directory resolved that way, never by a path walked
// again, so nothing can be swapped in between.
//
// The final name of a file that is written, renamed or removed is not
// followed, as rename(2) and unlink(2) do not follow it on the host: a
// symlink there is replaced or removed itself, and cannot point the
// operation elsewhere.
type hostRoot struct {
	path string // as this process sees it
	dir  *os.File
	fd   int // dir's descriptor, O_PATH
	// plain: the root is this process's own "/", whose resolution is the
	// host's; paths resolve exactly as a plain open resolves them.
	plain bool
}

// noOpenat2 is set once openat2 proved missing (kernels before 5.6), or by
// a test; the resolution is then filepath-securejoin's, which walks the
// path itself with the same rules.
var noOpenat2 atomic.Bool

func openRoot(path string) (*hostRoot, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the host root: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	return &hostRoot{path: path, dir: os.NewFile(uintptr(fd), path), fd: fd, plain: path == "/"}, nil
}

func (r *hostRoot) Close() error { return r.dir.Close() }

// relPath is a host path relative to the root ("." for the root itself).
func relPath(hostPath string) string {
	rel := strings.TrimLeft(filepath.Clean("/"+hostPath), "/")
	if rel == "" {
		return "."
	}
	return rel
}

// open opens hostPath, resolved in the root (a final symlink too), with
// flags; O_CLOEXEC is always added.
func (r *hostRoot) open(hostPath string, flags int) (*os.File, error) {
	f, err := r.openRel(relPath(hostPath), flags|unix.O_CLOEXEC)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: hostPath, Err: unwrapPathError(err)}
	}
	return f, nil
}

func (r *hostRoot) openRel(rel string, flags int) (*os.File, error) {
	if r.plain {
		fd, err := unix.Openat(r.fd, rel, flags, 0)
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), rel), nil
	}
	if !noOpenat2.Load() {
		how := &unix.OpenHow{Flags: uint64(flags), Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
		for range 16 {
			fd, err := unix.Openat2(r.fd, rel, how)
			if errors.Is(err, unix.EAGAIN) {
				// A rename raced the resolution of ".."; the kernel
				// asks to try again.
				continue
			}
			if errors.Is(err, unix.ENOSYS) {
				noOpenat2.Store(true)
				break
			}
			if err != nil {
				return nil, err
			}
			return os.NewFile(uintptr(fd), rel), nil
		}
		if !noOpenat2.Load() {
			return nil, unix.EAGAIN
		}
	}
	h, err := pathrs.OpenatInRoot(r.dir, rel)
	if err != nil {
		return nil, err
	}
	if flags&unix.O_DIRECTORY != 0 {
		var st unix.Stat_t
		if err := unix.Fstat(int(h.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			h.Close()
			return nil, unix.ENOTDIR
		}
	}
	if flags&unix.O_PATH != 0 {
		return h, nil
	}
	defer h.Close()
	return pathrs.Reopen(h, flags)
}

// unwrapPathError keeps the innermost error, so that the message names the
// host path once.
func unwrapPathError(err error) error {
	for {
		var pe *os.PathError
		if !errors.As(err, &pe) {
			return err
		}
		err = pe.Err
	}
}

// parent opens the directory of hostPath, resolved in the root, and
// returns it with the final name, which is not resolved.
func (r *hostRoot) parent(hostPath string) (*os.File, string, error) {
	clean := filepath.Clean("/" + hostPath)
	if clean == "/" {
		return nil, "", fmt.Errorf("%s: the root itself has no parent", hostPath)
	}
	d, err := r.open(filepath.Dir(clean), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, "", err
	}
	return d, filepath.Base(clean), nil
}

// stat is the file at hostPath, resolved in the root.
func (r *hostRoot) stat(hostPath string) (os.FileInfo, error) {
	f, err := r.open(hostPath, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, &os.PathError{Op: "stat", Path: hostPath, Err: unwrapPathError(err)}
	}
	return st, nil
}

// readFile reads the regular file at hostPath, resolved in the root, at
// most max bytes. It never waits on a FIFO or reads a device.
func (r *hostRoot) readFile(hostPath string, max int64) ([]byte, error) {
	f, err := r.open(hostPath, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, &os.PathError{Op: "stat", Path: hostPath, Err: unwrapPathError(err)}
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file but %s", hostPath, fileType(st.Mode()))
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", hostPath, max)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: hostPath, Err: unwrapPathError(err)}
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", hostPath, max)
	}
	return data, nil
}

func fileType(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "of mode " + m.String()
}

// holds tells whether the regular file at hostPath holds exactly data,
// reading no more than one byte past it.
func (r *hostRoot) holds(hostPath string, data []byte) bool {
	cur, err := r.readFile(hostPath, int64(len(data)))
	return err == nil && sameBytes(cur, data)
}

// readDirNames lists the directory at hostPath, resolved in the root.
func (r *hostRoot) readDirNames(hostPath string) ([]string, error) {
	f, err := r.open(hostPath, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// glob matches a host pattern like filepath.Glob on the host: the
// directories it lists are resolved in the root; the matches are host
// paths as the pattern spells them, sorted per directory.
func (r *hostRoot) glob(pattern string) ([]string, error) {
	if _, err := filepath.Match(pattern, ""); err != nil {
		return nil, err
	}
	cur := []string{"/"}
	parts := strings.Split(relPath(pattern), "/")
	for i, part := range parts {
		var next []string
		for _, dir := range cur {
			if i < len(parts)-1 && !strings.ContainsAny(part, `*?[\`) {
				// Listed, and so checked, with the next component.
				next = append(next, filepath.Join(dir, part))
				continue
			}
			names, err := r.readDirNames(dir)
			if err != nil {
				continue // filepath.Glob skips what it cannot list
			}
			sort.Strings(names)
			for _, n := range names {
				if ok, _ := filepath.Match(part, n); ok {
					next = append(next, filepath.Join(dir, n))
				}
			}
		}
		cur = next
	}
	return cur, nil
}

// danglingLink returns the target of hostPath when hostPath is a symlink
// (its directory resolved in the root) whose target does not resolve.
func (r *hostRoot) danglingLink(hostPath string) (string, bool) {
	d, name, err := r.parent(hostPath)
	if err != nil {
		return "", false
	}
	defer d.Close()
	target, err := readlinkat(int(d.Fd()), name)
	if err != nil {
		return "", false
	}
	if _, err := r.stat(hostPath); !errors.Is(err, fs.ErrNotExist) {
		return "", false
	}
	return target, true
}

func readlinkat(dir int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dir, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// mkdir creates the directory hostPath in its directory resolved in the
// root.
func (r *hostRoot) mkdir(hostPath string, mode uint32) error {
	d, name, err := r.parent(hostPath)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Mkdirat(int(d.Fd()), name, mode); err != nil {
		return &os.PathError{Op: "mkdir", Path: hostPath, Err: err}
	}
	return nil
}

// remove unlinks the name hostPath (a symlink itself, not its target).
func (r *hostRoot) remove(hostPath string) error {
	return r.unlink(hostPath, 0)
}

// rmdir removes the empty directory hostPath.
func (r *hostRoot) rmdir(hostPath string) error {
	return r.unlink(hostPath, unix.AT_REMOVEDIR)
}

func (r *hostRoot) unlink(hostPath string, flags int) error {
	d, name, err := r.parent(hostPath)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Unlinkat(int(d.Fd()), name, flags); err != nil {
		return &os.PathError{Op: "remove", Path: hostPath, Err: err}
	}
	return nil
}

// rename moves the name from to the name to, each in its directory
// resolved in the root.
func (r *hostRoot) rename(from, to string) error {
	fd, fname, err := r.parent(from)
	if err != nil {
		return err
	}
	defer fd.Close()
	td, tname, err := r.parent(to)
	if err != nil {
		return err
	}
	defer td.Close()
	if err := unix.Renameat(int(fd.Fd()), fname, int(td.Fd()), tname); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// writable tells whether the existing directory hostPath, resolved in the
// root, can take new files: not on a read-only file system, not immutable.
func (r *hostRoot) writable(hostPath string) error {
	f, err := r.open(hostPath, unix.O_PATH)
	if err != nil {
		return err
	}
	defer f.Close()
	if r.plain {
		err = unix.Access(filepath.Clean("/"+hostPath), unix.W_OK)
	} else {
		err = unix.Faccessat2(int(f.Fd()), "", unix.W_OK, unix.AT_EMPTY_PATH)
	}
	if errors.Is(err, unix.ENOSYS) {
		// Before Linux 5.8: a read-only mount is what stops root.
		var st unix.Statfs_t
		if err = unix.Fstatfs(int(f.Fd()), &st); err == nil && st.Flags&unix.ST_RDONLY != 0 {
			err = unix.EROFS
		}
	}
	if err != nil {
		return &os.PathError{Op: "access", Path: hostPath, Err: err}
	}
	return nil
}

// writeAtomic replaces the name hostPath with data: a new file in the
// same directory (resolved in the root), renamed over the old name, so a
// running shim keeps its binary and containerd never reads half a config.
// An existing file keeps its mode and owner, so that a restored config is
// the operator's file again.
func (r *hostRoot) writeAtomic(hostPath string, data []byte, mode os.FileMode) error {
	uid, gid := -1, -1
	if st, err := r.stat(hostPath); err == nil {
		mode = st.Mode().Perm()
		if sys, ok := st.Sys().(*unix.Stat_t); ok {
			uid, gid = int(sys.Uid), int(sys.Gid)
		}
	}
	d, name, err := r.parent(hostPath)
	if err != nil {
		return err
	}
	defer d.Close()
	dir := int(d.Fd())
	tmp, f, err := createTemp(dir, "."+name+".nsiso-")
	if err != nil {
		return &os.PathError{Op: "create", Path: filepath.Join(filepath.Dir(hostPath), tmp), Err: err}
	}
	done := false
	defer func() {
		if !done {
			_ = unix.Unlinkat(dir, tmp, 0) // best effort: the write already failed
		}
	}()
	err = writeAll(f, data, mode, uid, gid)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := unix.Renameat(dir, tmp, dir, name); err != nil {
		return &os.LinkError{Op: "rename", Old: tmp, New: hostPath, Err: err}
	}
	done = true
	return nil
}

func writeAll(f *os.File, data []byte, mode os.FileMode, uid, gid int) error {
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if uid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return err
		}
	}
	return f.Sync()
}

// createTemp creates a new file named prefix and a random number in the
// directory dir, never through a symlink.
func createTemp(dir int, prefix string) (string, *os.File, error) {
	for range 100 {
		name := prefix + strconv.FormatUint(uint64(rand.Uint32()), 10)
		fd, err := unix.Openat(dir, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return name, nil, err
		}
		return name, os.NewFile(uintptr(fd), name), nil
	}
	return prefix, nil, unix.EEXIST
}

// socket returns a path that connects to the socket hostPath, resolved in
// the root, and a function to call once connected: /proc/self/fd of a
// handle on it, as no path under the root can be handed to connect(2)
// without its symlinks being followed from this process's root.
func (r *hostRoot) socket(hostPath string) (string, func(), error) {
	if r.plain {
		return filepath.Clean("/" + hostPath), func() {}, nil
	}
	f, err := r.open(hostPath, unix.O_PATH)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d", f.Fd()), func() { f.Close() }, nil
}

// display is hostPath as this process names it, for messages.
func (r *hostRoot) display(hostPath string) string {
	return filepath.Join(r.path, hostPath)
}
