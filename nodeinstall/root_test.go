package nodeinstall

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// withResolvers runs f with openat2 and with the walk used where openat2
// is missing.
func withResolvers(t *testing.T, f func(t *testing.T)) {
	for _, fallback := range []bool{false, true} {
		name := map[bool]string{false: "openat2", true: "walk"}[fallback]
		t.Run(name, func(t *testing.T) {
			prev := noOpenat2.Load()
			noOpenat2.Store(fallback)
			t.Cleanup(func() { noOpenat2.Store(prev) })
			f(t)
		})
	}
}

func mustWrite(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustLink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// A host root whose symlinks point out of it, absolutely and with "..":
// each operation acts where the host at the root resolves the path, and
// the directory outside is never touched.
func TestHostRootStaysInside(t *testing.T) {
	withResolvers(t, func(t *testing.T) {
		outside := t.TempDir()
		mustWrite(t, filepath.Join(outside, "etc/secret"), "outside\n")
		root := t.TempDir()
		mustWrite(t, filepath.Join(root, outside, "etc/secret"), "inside\n")
		mustLink(t, outside+"/etc", filepath.Join(root, "etc/abs"))
		mustLink(t, strings.Repeat("../", 30)+strings.TrimPrefix(outside, "/")+"/etc", filepath.Join(root, "etc/rel"))
		mustLink(t, outside+"/etc/secret", filepath.Join(root, "etc/file"))
		mustLink(t, outside+"/nowhere", filepath.Join(root, "etc/dangling"))
		before := snapshot(t, outside)

		r, err := openRoot(root)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for _, p := range []string{"/etc/abs/secret", "/etc/rel/secret", "/etc/file", "/../../etc/abs/../abs/secret"} {
			if data, err := r.readFile(p, 100); err != nil || string(data) != "inside\n" {
				t.Errorf("readFile(%s) = %q, %v; want the file inside the root", p, data, err)
			}
		}
		if _, err := r.readFile("/etc/abs/secret", 3); err == nil || !strings.Contains(err.Error(), "/etc/abs/secret is larger than 3 bytes") {
			t.Errorf("a file over the limit: %v", err)
		}
		if _, err := r.readFile("/etc/abs", 100); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("a directory read as a file: %v", err)
		}
		if !r.holds("/etc/rel/secret", []byte("inside\n")) || r.holds("/etc/rel/secret", []byte("inside")) {
			t.Error("holds")
		}
		if got, err := r.glob("/etc/abs/s*"); err != nil || !reflect.DeepEqual(got, []string{"/etc/abs/secret"}) {
			t.Errorf("glob = %v, %v", got, err)
		}
		if got, _ := r.glob("/etc/*/secret"); !reflect.DeepEqual(got, []string{"/etc/abs/secret", "/etc/rel/secret"}) {
			t.Errorf("glob through two links = %v", got)
		}
		if _, err := r.glob("/etc/[x"); err == nil {
			t.Error("a bad pattern globbed")
		}
		if target, ok := r.danglingLink("/etc/dangling"); !ok || target != outside+"/nowhere" {
			t.Errorf("danglingLink = %q, %v", target, ok)
		}
		if _, ok := r.danglingLink("/etc/abs"); ok {
			t.Error("a link that resolves in the root called dangling")
		}
		if _, err := r.stat("/etc/dangling"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat of a link to what the root lacks: %v", err)
		}

		// Writes through the links land inside.
		if err := r.writeAtomic("/etc/abs/new", []byte("new\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		if data, err := os.ReadFile(filepath.Join(root, outside, "etc/new")); err != nil || string(data) != "new\n" {
			t.Errorf("written through the link: %q, %v", data, err)
		}
		if err := r.mkdir("/etc/rel/d", 0o755); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(filepath.Join(root, outside, "etc/d")); err != nil || !st.IsDir() {
			t.Errorf("mkdir through the link: %v", err)
		}
		if err := r.rename("/etc/abs/new", "/etc/rel/d/moved"); err != nil {
			t.Fatal(err)
		}
		if err := r.writable("/etc/rel/d"); err != nil {
			t.Errorf("writable: %v", err)
		}
		// The final name is not followed: the link goes, not its target.
		if err := r.writeAtomic("/etc/file", []byte("replaced\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Lstat(filepath.Join(root, "etc/file")); err != nil || !st.Mode().IsRegular() {
			t.Errorf("the link was not replaced: %v", err)
		}
		if err := r.remove("/etc/dangling"); err != nil {
			t.Fatal(err)
		}
		if err := r.rmdir("/etc/abs"); !errors.Is(err, unix.ENOTDIR) {
			t.Errorf("rmdir of a link to a directory: %v", err)
		}
		if d := diffSnapshots(before, snapshot(t, outside)); len(d) > 0 {
			t.Errorf("outside the root changed: %v", d)
		}
		if ents, _ := os.ReadDir(filepath.Join(root, outside, "etc/d")); len(ents) != 1 || ents[0].Name() != "moved" {
			t.Errorf("inside: %v", ents)
		}
	})
}

// At "/" paths resolve exactly as a plain open resolves them: an absolute
// symlink leads where it says.
func TestHostRootSlashIsPlain(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "a/f"), "x\n")
	mustLink(t, filepath.Join(dir, "a"), filepath.Join(dir, "b/link"))
	r, err := openRoot("/")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.plain {
		t.Fatal("/ is not plain")
	}
	if data, err := r.readFile(filepath.Join(dir, "b/link/f"), 10); err != nil || string(data) != "x\n" {
		t.Errorf("readFile = %q, %v", data, err)
	}
	p, done, err := r.socket("/run/containerd/containerd.sock")
	if err != nil || p != "/run/containerd/containerd.sock" {
		t.Errorf("socket = %q, %v", p, err)
	}
	done()
}
