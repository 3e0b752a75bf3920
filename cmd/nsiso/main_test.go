//go:build linux

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		status         int
		stdout, stderr string
	}{
		{nil, 2, "", "Usage: nsiso <command>"},
		{[]string{"help"}, 0, "Usage: nsiso <command>", ""},
		{[]string{"help", "audit"}, 0, "Usage: nsiso audit [flags]", ""},
		{[]string{"audit", "--help"}, 0, "Usage: nsiso audit [flags]", ""},
		{[]string{"version"}, 0, "nsiso ", ""},
		{[]string{"inspect"}, 2, "", `nsiso: unknown command "inspect"`},
	} {
		var out, errb bytes.Buffer
		status := run(context.Background(), tc.args, &out, &errb)
		if status != tc.status || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) ||
			tc.stdout == "" && out.Len() > 0 || tc.stderr == "" && errb.Len() > 0 {
			t.Errorf("run(%q) = %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, status, out.String(), errb.String(), tc.status, tc.stdout, tc.stderr)
		}
	}
}
