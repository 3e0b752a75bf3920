package beneath

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tree lays out the files an attacker could leave where the shim looks:
// symlinks out of the root and to devices, a FIFO, a huge file.
func tree(t *testing.T) (root, outside string) {
	t.Helper()
	root, outside = t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(outside, "secret")
	must(os.WriteFile(secret, []byte("root:$6$hash"), 0o600))
	must(os.MkdirAll(filepath.Join(root, "ns", "ok"), 0o700))
	must(os.WriteFile(filepath.Join(root, "ns", "ok", "state.json"), []byte(`{"init_process_pid":1}`), 0o600))
	must(os.MkdirAll(filepath.Join(root, "ns", "evil"), 0o700))
	must(os.Symlink(secret, filepath.Join(root, "ns", "evil", "state.json")))
	must(os.Symlink("/dev/zero", filepath.Join(root, "ns", "evil", "zero.json")))
	must(os.Symlink("../ok/state.json", filepath.Join(root, "ns", "evil", "relative.json")))
	must(os.Symlink(outside, filepath.Join(root, "ns", "linkdir")))
	must(unix.Mkfifo(filepath.Join(root, "ns", "evil", "fifo.json"), 0o600))
	big, err := os.Create(filepath.Join(root, "ns", "big.json"))
	must(err)
	must(big.Truncate(64 << 20))
	big.Close()
	return root, outside
}

func TestReadFile(t *testing.T) {
	for _, walkOnly := range []bool{false, true} {
		name := "openat2"
		if walkOnly {
			name = "walk"
		}
		t.Run(name, func(t *testing.T) {
			noOpenat2.Store(walkOnly)
			defer noOpenat2.Store(false)
			root, _ := tree(t)
			for _, tc := range []struct {
				rel     string
				wantErr string // a substring; "" for success
			}{
				{"ns/ok/state.json", ""},
				{"ns/evil/state.json", "too many levels of symbolic links"},
				{"ns/evil/zero.json", "too many levels of symbolic links"},
				{"ns/evil/relative.json", "too many levels of symbolic links"},
				{"ns/linkdir/secret", "too many levels of symbolic links"},
				{"ns/evil/fifo.json", "not a regular file (a FIFO)"},
				{"ns/big.json", "file is larger than allowed"},
				{"ns", "not a regular file (a directory)"},
				{"ns/../ns/ok/state.json", "not a plain relative path"},
				{"/etc/passwd", "not a relative path"},
				{"ns/missing", "no such file or directory"},
			} {
				done := make(chan struct{})
				var data []byte
				var err error
				go func() { data, err = ReadFile(root, tc.rel, 1<<20); close(done) }()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatalf("ReadFile(%s) hangs", tc.rel)
				}
				if tc.wantErr == "" {
					if err != nil || string(data) != `{"init_process_pid":1}` {
						t.Errorf("ReadFile(%s) = %q, %v", tc.rel, data, err)
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("ReadFile(%s): got %v, want an error containing %q", tc.rel, err, tc.wantErr)
				}
				if strings.Contains(string(data), "root:") || (err != nil && strings.Contains(err.Error(), "root:")) {
					t.Errorf("ReadFile(%s) leaked the file behind the symlink", tc.rel)
				}
			}
		})
	}
}

func TestOpenPathRefusesSymlinks(t *testing.T) {
	root, _ := tree(t)
	for _, walkOnly := range []bool{false, true} {
		noOpenat2.Store(walkOnly)
		f, err := Open(root, "ns/linkdir", unix.O_PATH|unix.O_DIRECTORY)
		if err == nil {
			f.Close()
			t.Errorf("walk=%v: opened a symlinked directory", walkOnly)
		}
		f, err = Open(root, "ns/ok", unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			t.Errorf("walk=%v: %v", walkOnly, err)
		} else {
			f.Close()
		}
	}
	noOpenat2.Store(false)
}

func TestReadRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want error
	}{
		{"/dev/zero", ErrNotRegular},
		{fifo, ErrNotRegular},
		{dir, ErrNotRegular},
	} {
		if _, err := ReadRegular(tc.path, 1<<20); !errors.Is(err, tc.want) {
			t.Errorf("ReadRegular(%s) = %v, want %v", tc.path, err, tc.want)
		}
	}
	p := filepath.Join(dir, "ok.toml")
	if err := os.WriteFile(p, []byte("x = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if data, err := ReadRegular(p, 6); err != nil || string(data) != "x = 1\n" {
		t.Errorf("ReadRegular = %q, %v", data, err)
	}
	if _, err := ReadRegular(p, 5); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the limit: %v", err)
	}
}
