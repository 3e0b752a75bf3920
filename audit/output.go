package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces path with data so that a reader (node_exporter's
// textfile collector, a scanner) sees the old file or the new one, never a
// part: the data goes to a temporary file in the same directory, which is
// then renamed over path. The temporary name starts with a dot and ends in
// ".tmp", which the textfile collector does not read (it reads *.prom).
// The file is world-readable (0644): a metrics collector is rarely root.
func WriteFileAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// CreateTemp opens with O_EXCL, so a planted file or symlink of the
	// same name is never written through; rename replaces a symlink at
	// path itself, not its target.
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	// Without a sync a crash soon after the rename can leave an empty file
	// in place of both the old and the new one.
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	// The rename itself is durable once the directory is synced; a failure
	// here loses nothing a reader can see.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// checkOutputDir fails early, before containerd is asked anything, when the
// report could not be written where it was asked for.
func checkOutputDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return errors.New("is a directory")
	}
	return nil
}
