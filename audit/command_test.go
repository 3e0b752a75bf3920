package audit

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// None of these reach a containerd, so none needs root.
func TestMainWithoutDaemon(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "containerd.sock")
	for _, tc := range []struct {
		name   string
		args   []string
		status int
		stdout string // substring; empty: no output
		stderr string
	}{
		{"help", []string{"--help"}, ExitCompliant, "Usage: nsiso audit [flags]", ""},
		{"short help", []string{"-h"}, ExitCompliant, "-namespace namespace", ""},
		{"unknown flag", []string{"--ipc"}, ExitError, "", "nsiso audit: flag provided but not defined: -ipc"},
		{"stray argument", []string{"default"}, ExitError, "", `nsiso audit: unexpected argument "default"`},
		// The operator's own arguments are echoed safely too.
		{"stray argument with an escape", []string{"\x1b[2J"}, ExitError, "", `nsiso audit: unexpected argument "\x1b[2J"`},
		{"unknown flag with an escape", []string{"--\x1b]0;x\x07"}, ExitError, "", `nsiso audit: flag provided but not defined: -\x1b]0;x\a`},
		{"bad format", []string{"--format", "yaml"}, ExitError, "", `nsiso audit: --format "yaml": want text, json or prometheus`},
		{"output into a missing directory", []string{"--output", filepath.Join(missing, "x", "audit.prom")}, ExitError, "",
			"nsiso audit: --output " + filepath.Join(missing, "x", "audit.prom") + ": stat " + filepath.Join(missing, "x") + ": no such file or directory"},
		{"output is a directory", []string{"--output", filepath.Dir(missing)}, ExitError, "", "nsiso audit: --output " + filepath.Dir(missing) + ": is a directory"},
		{"bad timeout", []string{"--timeout", "0s"}, ExitError, "", "nsiso audit: --timeout 0s: want a positive duration"},
		{"no daemon", []string{"--address", missing}, ExitError, "",
			"nsiso audit: connect to containerd at " + missing + ": dial unix " + missing + ": connect: no such file or directory"},
		// Monitoring must see a failed audit.
		{"no daemon, metrics", []string{"--address", missing, "--format", "prometheus"}, ExitError, "\nnsiso_audit_success 0\n",
			"nsiso audit: connect to containerd at " + missing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			status := Main(context.Background(), tc.args, &out, &errb)
			if status != tc.status {
				t.Errorf("status %d, want %d (stderr %q)", status, tc.status, errb.String())
			}
			if tc.stdout == "" && out.Len() > 0 || !strings.Contains(out.String(), tc.stdout) {
				t.Errorf("stdout %q, want %q", out.String(), tc.stdout)
			}
			if tc.stderr == "" && errb.Len() > 0 || !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stderr %q, want %q", errb.String(), tc.stderr)
			}
			if strings.ContainsAny(errb.String(), "\x1b\x07") {
				t.Errorf("stderr holds a terminal control: %q", errb.String())
			}
		})
	}
}
