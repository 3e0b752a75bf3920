package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsiso/nsiso/testenv"
)

// Attacks on `nsiso install --root R` by whoever can write under R: a
// symlink under R must be resolved as the host at R resolves it (an
// absolute target starts at R, ".." stops at R), so that nothing outside R
// is read, written, renamed or removed. From the DaemonSet, R is the host
// at /host and "outside R" is the installer's own container. Each test runs
// the nsiso binary as the attacker would and compares a victim directory
// outside R, directory times included, before and after.

// treeState maps every entry under dir to its type, mode and content (the
// target for a symlink, which it does not follow) and, with mtimes, a
// directory's modification time, which changes when anything is created in
// it or removed from it, even for a moment.
func treeState(t *testing.T, dir string, mtimes bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "symlink " + target
		case d.IsDir():
			out[rel] = "dir " + info.Mode().String()
			if mtimes {
				out[rel] += fmt.Sprintf(" mtime %d", info.ModTime().UnixNano())
			}
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = info.Mode().String() + "\n" + string(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// victimDir is a directory outside the host root holding one file; the
// test fails if anything in it changes.
func victimDir(t *testing.T, file, content string) string {
	t.Helper()
	v := t.TempDir()
	writeFile(t, filepath.Join(v, file), content)
	return v
}

// attackRoot is a host root with the operator's containerd config.
func attackRoot(t *testing.T, config string) string {
	t.Helper()
	root := t.TempDir()
	if config != "" {
		writeFile(t, filepath.Join(root, "etc/containerd/config.toml"), config)
	}
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	return root
}

// symlinkTo makes the host path link under root point at target: as
// written (absolute) or as a relative path with more ".." than there are
// directories above it.
func symlinkTo(t *testing.T, root, link, target string, relative bool) {
	t.Helper()
	if relative {
		target = strings.Repeat("../", 40) + strings.TrimPrefix(target, "/")
	}
	p := filepath.Join(root, link)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func installArgs(t *testing.T, root string, extra ...string) []string {
	t.Helper()
	deps, err := testenv.FindDeps()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"install", "--root", root, "--containerd", deps.Containerd}, extra...)
}

// filesHolding lists the files under dir whose content holds s.
func filesHolding(t *testing.T, dir, s string) []string {
	t.Helper()
	var found []string
	for p, v := range treeState(t, dir, false) {
		if strings.Contains(v, s) && !strings.HasPrefix(v, "symlink ") {
			found = append(found, p)
		}
	}
	return found
}

// A directory install writes in is a symlink out of R, absolute or with
// ".." enough to climb out: the file lands where the host resolves the
// link, inside R, or, where that does not exist, install refuses and
// changes nothing. Uninstall then takes it away from the same place.
func TestSecurityInstallDirectorySymlinks(t *testing.T) {
	setup(t)
	for _, tc := range []struct {
		name, dir string
		file      string // what install puts in dir
		extra     []string
	}{
		{"the drop-in directory", "/etc/containerd/conf.d", "nsiso-cri.toml", nil},
		{"the shim's directory", "/usr/local/bin", "containerd-shim-nsiso-v1", nil},
		{"nsiso.toml's directory", "/etc/nsiso", "nsiso.toml", []string{"--nsiso-config", "/etc/nsiso/nsiso.toml"}},
		{"the install record's directory", "/var/lib/nsiso", "install.json", nil},
	} {
		for _, relative := range []bool{false, true} {
			for _, present := range []bool{true, false} {
				kind := map[bool]string{false: "absolute", true: "relative"}[relative]
				there := map[bool]string{false: "missing in R", true: "present in R"}[present]
				t.Run(tc.name+"/"+kind+"/"+there, func(t *testing.T) {
					victim := victimDir(t, "keep", "the victim's file\n")
					root := attackRoot(t, operatorV3)
					symlinkTo(t, root, tc.dir, victim, relative)
					if present {
						if err := os.MkdirAll(filepath.Join(root, victim), 0o755); err != nil {
							t.Fatal(err)
						}
					}
					outside, before := treeState(t, victim, true), treeState(t, root, false)
					out, code := runNsiso(t, installArgs(t, root, tc.extra...)...)
					sameFiles(t, "outside R after install", outside, treeState(t, victim, true))
					if !present {
						link := victim
						if relative {
							link = strings.Repeat("../", 40) + strings.TrimPrefix(victim, "/")
						}
						want := fmt.Sprintf("nsiso install: refusing to install: %s is a symlink to %q, which does not exist on the host (symlinks are resolved inside --root %s); nothing was changed", tc.dir, link, root)
						if code != 1 || !strings.Contains(out, want) {
							t.Fatalf("install: exit %d\n%s\nwant exit 1 and\n%s", code, out, want)
						}
						sameFiles(t, "R after a refused install", before, treeState(t, root, false))
						return
					}
					if code != 0 {
						t.Fatalf("install: exit %d\n%s", code, out)
					}
					if _, err := os.Stat(filepath.Join(root, victim, tc.file)); err != nil {
						t.Errorf("%s is not where the host resolves %s: %v\n%s", tc.file, tc.dir, err, out)
					}
					out, code = runNsiso(t, "uninstall", "--root", root)
					if code != 0 {
						t.Fatalf("uninstall: exit %d\n%s", code, out)
					}
					sameFiles(t, "outside R after uninstall", outside, treeState(t, victim, true))
					sameFiles(t, "R after uninstall", before, treeState(t, root, false))
				})
			}
		}
	}
}

// nsiso.toml and the shim are themselves symlinks to files outside R. The
// host at R resolves them to files that do not exist, so nsiso.toml is
// written (in R) and the shim counts as new: no byte of the outside files
// is read into R, kept as a "backup" or put back by uninstall.
func TestSecurityInstallFileSymlinks(t *testing.T) {
	setup(t)
	const secret = "VICTIM-SECRET-4f1c"
	victim := victimDir(t, "nsiso.toml", "# "+secret+"\ndisallow_sharing_host_ipc_namespace = false\n")
	writeFile(t, filepath.Join(victim, "shim"), "#!/bin/sh\n# "+secret+"\n")
	root := attackRoot(t, operatorV3)
	symlinkTo(t, root, "/etc/containerd/nsiso.toml", filepath.Join(victim, "nsiso.toml"), false)
	symlinkTo(t, root, "/usr/local/bin/containerd-shim-nsiso-v1", filepath.Join(victim, "shim"), false)
	outside := treeState(t, victim, true)

	out, code := runNsiso(t, installArgs(t, root)...)
	if code != 0 {
		t.Fatalf("install: exit %d\n%s", code, out)
	}
	sameFiles(t, "outside R after install", outside, treeState(t, victim, true))
	if f := filesHolding(t, root, secret); len(f) > 0 {
		t.Errorf("install copied a file from outside R into %v", f)
	}
	policy, err := os.ReadFile(filepath.Join(root, "etc/containerd/nsiso.toml"))
	if err != nil || !strings.Contains(string(policy), "disallow_sharing_host_ipc_namespace = true") {
		t.Errorf("the host's nsiso.toml is not nsiso's defaults (%v):\n%s", err, policy)
	}

	out, code = runNsiso(t, "uninstall", "--root", root)
	if code != 0 {
		t.Fatalf("uninstall: exit %d\n%s", code, out)
	}
	sameFiles(t, "outside R after uninstall", outside, treeState(t, victim, true))
	if f := filesHolding(t, root, secret); len(f) > 0 {
		t.Errorf("uninstall put a file from outside R into %v", f)
	}
}

// Paths that come from the host's containerd config: an imports glob
// whose directory is a symlink climbing out of R (the drop-in goes there),
// and an imported file behind a symlink to a file outside R that would
// decide install's answer.
func TestSecurityInstallImports(t *testing.T) {
	setup(t)
	t.Run("glob directory", func(t *testing.T) {
		victim := victimDir(t, "other.toml", "version = 3\n")
		root := attackRoot(t, "version = 3\nimports = [\"/etc/containerd/runtimes.d/*.toml\"]\n")
		symlinkTo(t, root, "/etc/containerd/runtimes.d", victim, true)
		writeFile(t, filepath.Join(root, victim, "r.toml"), "version = 3\n")
		outside, before := treeState(t, victim, true), treeState(t, root, false)
		out, code := runNsiso(t, installArgs(t, root)...)
		if code != 0 {
			t.Fatalf("install: exit %d\n%s", code, out)
		}
		sameFiles(t, "outside R after install", outside, treeState(t, victim, true))
		if !strings.Contains(out, "wrote /etc/containerd/runtimes.d/nsiso-cri.toml") {
			t.Errorf("install did not write the drop-in where the glob finds it:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(root, victim, "nsiso-cri.toml")); err != nil {
			t.Errorf("the drop-in is not where the host resolves the glob: %v", err)
		}
		out, code = runNsiso(t, "uninstall", "--root", root)
		if code != 0 {
			t.Fatalf("uninstall: exit %d\n%s", code, out)
		}
		sameFiles(t, "outside R after uninstall", outside, treeState(t, victim, true))
		sameFiles(t, "R after uninstall", before, treeState(t, root, false))
	})
	t.Run("imported file", func(t *testing.T) {
		// Outside R the import defines the handler, which would refuse
		// the install; the host's own file (in R) does not.
		victim := victimDir(t, "runtimes.toml", "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nsiso]\n  runtime_type = \"io.containerd.runc.v2\"\n")
		root := attackRoot(t, "version = 3\nimports = [\"/etc/containerd/extra/runtimes.toml\"]\n")
		symlinkTo(t, root, "/etc/containerd/extra", victim, false)
		writeFile(t, filepath.Join(root, victim, "runtimes.toml"), "version = 3\n")
		outside := treeState(t, victim, true)
		out, code := runNsiso(t, installArgs(t, root)...)
		if code != 0 {
			t.Fatalf("install read the import from outside R: exit %d\n%s", code, out)
		}
		sameFiles(t, "outside R after install", outside, treeState(t, victim, true))
	})
}

// Uninstall with symlinks out of R put in after install: a drop-in
// directory swapped for a link to a directory holding the same file, a
// record directory that links to a forged record, and a backup directory
// that links to an outside "backup".
func TestSecurityUninstallSymlinks(t *testing.T) {
	setup(t)
	t.Run("drop-in directory", func(t *testing.T) {
		root := attackRoot(t, operatorV3)
		out, code := runNsiso(t, installArgs(t, root)...)
		if code != 0 {
			t.Fatalf("install: exit %d\n%s", code, out)
		}
		confd := filepath.Join(root, "etc/containerd/conf.d")
		dropIn, err := os.ReadFile(filepath.Join(confd, "nsiso-cri.toml"))
		if err != nil {
			t.Fatal(err)
		}
		victim := victimDir(t, "nsiso-cri.toml", string(dropIn))
		if err := os.Rename(confd, confd+".moved"); err != nil {
			t.Fatal(err)
		}
		symlinkTo(t, root, "/etc/containerd/conf.d", victim, false)
		outside := treeState(t, victim, true)
		out, code = runNsiso(t, "uninstall", "--root", root)
		if code != 0 || strings.Contains(out, "removed /etc/containerd/conf.d/nsiso-cri.toml") {
			t.Errorf("uninstall: exit %d\n%s", code, out)
		}
		sameFiles(t, "outside R after uninstall", outside, treeState(t, victim, true))
		if cfg, _ := os.ReadFile(filepath.Join(root, "etc/containerd/config.toml")); string(cfg) != operatorV3 {
			t.Errorf("the config was not restored:\n%s", cfg)
		}
	})
	t.Run("forged record", func(t *testing.T) {
		root := attackRoot(t, operatorV3)
		sum := sha256.Sum256([]byte(operatorV3))
		victim := victimDir(t, "install.json", fmt.Sprintf(`{"format": 1, "handlers": ["nsiso"], "files": [{"path": "/etc/containerd/config.toml", "sha256": %q, "added": true}]}`+"\n", hex.EncodeToString(sum[:])))
		symlinkTo(t, root, "/var/lib/nsiso", victim, false)
		outside, before := treeState(t, victim, true), treeState(t, root, false)
		out, code := runNsiso(t, "uninstall", "--root", root)
		if code != 0 || !strings.Contains(out, "nothing to uninstall: no /var/lib/nsiso/install.json under "+root) {
			t.Errorf("uninstall with the record outside R: exit %d\n%s", code, out)
		}
		sameFiles(t, "outside R after uninstall", outside, treeState(t, victim, true))
		sameFiles(t, "R after uninstall", before, treeState(t, root, false))
	})
	t.Run("backup directory", func(t *testing.T) {
		root := attackRoot(t, operatorV3)
		writeFile(t, filepath.Join(root, "usr/local/bin/containerd-shim-nsiso-v1"), "#!/bin/sh\n# the node's old shim\n")
		out, code := runNsiso(t, installArgs(t, root)...)
		if code != 0 {
			t.Fatalf("install: exit %d\n%s", code, out)
		}
		const secret = "VICTIM-SECRET-9a0e"
		victim := victimDir(t, "containerd-shim-nsiso-v1", "#!/bin/sh\n# "+secret+"\n")
		backup := filepath.Join(root, "var/lib/nsiso/backup")
		if err := os.RemoveAll(backup); err != nil {
			t.Fatal(err)
		}
		symlinkTo(t, root, "/var/lib/nsiso/backup", victim, true)
		outside, before := treeState(t, victim, true), treeState(t, root, false)
		out, code = runNsiso(t, "uninstall", "--root", root)
		want := "nsiso uninstall: refusing to uninstall, nothing was changed: the backup /var/lib/nsiso/backup/containerd-shim-nsiso-v1 of /usr/local/bin/containerd-shim-nsiso-v1 is missing"
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("uninstall: exit %d\n%s\nwant exit 1 and\n%s", code, out, want)
		}
		sameFiles(t, "outside R after uninstall", outside, treeState(t, victim, true))
		sameFiles(t, "R after a refused uninstall", before, treeState(t, root, false))
		if f := filesHolding(t, root, secret); len(f) > 0 {
			t.Errorf("uninstall moved a file from outside R into %v", f)
		}
	})
}

// The host's /tmp, where the host's own containerd (run chrooted in R)
// reads the config under test, is a symlink out of R: the scratch files go
// where that containerd finds them, at the link's target inside R, and
// nothing is created outside, even for a moment.
func TestSecurityInstallValidationScratch(t *testing.T) {
	setup(t)
	root := hostRootWithContainerd(t, operatorV3)
	// Not under /tmp, which in R is the link itself.
	victim, err := os.MkdirTemp("/var/tmp", "nsiso-victim-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(victim) })
	if err := os.Chmod(victim, 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "tmp")); err != nil {
		t.Fatal(err)
	}
	symlinkTo(t, root, "/tmp", victim, false)
	if err := os.MkdirAll(filepath.Join(root, victim), 0o1777); err != nil {
		t.Fatal(err)
	}
	outside := treeState(t, victim, true)
	out, code := runNsiso(t, "install", "--root", root)
	if code != 0 || !strings.Contains(out, "checked the resulting config with /usr/bin/containerd config dump (in "+root+")") {
		t.Errorf("install: exit %d\n%s", code, out)
	}
	sameFiles(t, "outside R", outside, treeState(t, victim, true))
	if ents, _ := os.ReadDir(filepath.Join(root, victim)); len(ents) != 0 {
		t.Errorf("the check left files in the host's /tmp: %v", ents)
	}
}
