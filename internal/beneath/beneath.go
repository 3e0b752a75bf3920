// Package beneath opens files for a process that runs as root on the host
// and must not be steered by what others wrote: a path is resolved beneath
// a root directory without following symlinks (openat2 with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS, or an
// equivalent component walk where openat2 is missing), a file to be read
// must be a regular file, and every read is bounded.
//
// It is the only way the shim reaches files that another container's
// lifecycle wrote (runc's state.json, a parent's config.json and /dev/shm)
// and the operator's config file, so that a spec or an annotation can never
// make it read /dev/zero, wait on a FIFO, or follow a tenant's symlink.
package beneath

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrTooLarge is returned when a file holds more than the caller's limit.
var ErrTooLarge = errors.New("file is larger than allowed")

// ErrNotRegular is returned when a file to be read is not a regular file
// (a FIFO, a device, a directory, a socket).
var ErrNotRegular = errors.New("not a regular file")

// noOpenat2 is set once openat2 proved missing (kernels before 5.6), so the
// walk is used from then on without asking again.
var noOpenat2 atomic.Bool

// Open opens rel beneath the directory root with flags (O_NOFOLLOW and
// O_CLOEXEC are always added). rel must be relative and free of "..";
// neither it nor any of its parents may be a symlink, and resolution never
// leaves root.
func Open(root, rel string, flags int) (*os.File, error) {
	if err := checkRel(rel); err != nil {
		return nil, err
	}
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dir)
	fd, err := openat2(dir, rel, flags)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(root, rel), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, rel)), nil
}

func openat2(dir int, rel string, flags int) (int, error) {
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	if !noOpenat2.Load() {
		fd, err := unix.Openat2(dir, rel, &unix.OpenHow{
			Flags:   uint64(flags),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if !errors.Is(err, unix.ENOSYS) {
			return fd, err
		}
		noOpenat2.Store(true)
	}
	return walk(dir, rel, flags)
}

// walk resolves rel one component at a time with O_NOFOLLOW, which is what
// openat2's RESOLVE_NO_SYMLINKS does for a path that checkRel admitted.
func walk(dir int, rel string, flags int) (int, error) {
	parts := strings.Split(rel, "/")
	cur := dir
	for i, p := range parts {
		last := i == len(parts)-1
		f := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if last {
			f = flags
		}
		fd, err := unix.Openat(cur, p, f, 0)
		if errors.Is(err, unix.ENOTDIR) && isSymlink(cur, p) {
			// O_DIRECTORY reports a symlinked directory as ENOTDIR;
			// say what openat2 says.
			err = unix.ELOOP
		}
		if cur != dir {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		if last && flags&unix.O_PATH != 0 {
			// O_PATH|O_NOFOLLOW opens a symlink itself instead of failing.
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT == unix.S_IFLNK {
				unix.Close(fd)
				return -1, unix.ELOOP
			}
		}
		cur = fd
	}
	return cur, nil
}

func isSymlink(dir int, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
}

func checkRel(rel string) error {
	if rel == "" || filepath.IsAbs(rel) {
		return fmt.Errorf("beneath: %q is not a relative path", rel)
	}
	for _, p := range strings.Split(rel, "/") {
		if p == "" || p == "." || p == ".." {
			return fmt.Errorf("beneath: %q is not a plain relative path", rel)
		}
	}
	return nil
}

// ReadFile reads the regular file rel beneath root, at most max bytes.
func ReadFile(root, rel string, max int64) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer; the type
	// check below then refuses it.
	f, err := Open(root, rel, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readRegular(f, max)
}

// ReadRegular reads the regular file at path (symlinks followed: an
// operator's own config may be managed through one), at most max bytes.
func ReadRegular(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readRegular(f, max)
}

func readRegular(f *os.File, max int64) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (%s)", f.Name(), ErrNotRegular, fileType(st.Mode()))
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s: %w (%d bytes, limit %d)", f.Name(), ErrTooLarge, st.Size(), max)
	}
	// The size can change after the stat (or lie, on procfs-like files):
	// read one byte past the limit to tell.
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: %w (limit %d)", f.Name(), ErrTooLarge, max)
	}
	return data, nil
}

func fileType(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeSymlink != 0:
		return "a symlink"
	}
	return "mode " + m.String()
}

// FDPath names an open file for syscalls that take a path (mount(2)):
// the /proc/self/fd magic link refers to exactly the file that was opened,
// whatever happens to its name afterwards.
func FDPath(f *os.File) string {
	return fmt.Sprintf("/proc/self/fd/%d", f.Fd())
}
