package main

import (
	"slices"
	"testing"
)

func TestParseFlags(t *testing.T) {
	for _, c := range []struct {
		name    string
		args    []string
		skip    []string
		wantErr bool
	}{
		{"all by default", nil, nil, false},
		{"only two", []string{"-only", "ctr, trace"}, []string{"startup", "lifecycle", "child", "cri", "node", "concurrency", "memory"}, false},
		{"only, empty entries ignored", []string{"-only", ",memory,"}, []string{"startup", "ctr", "trace", "lifecycle", "child", "cri", "node", "concurrency"}, false},
		{"unknown benchmark", []string{"-only", "ctr,bogus"}, nil, true},
		{"no such flag", []string{"-skip", "ctr"}, nil, true},
		{"too few pairs", []string{"-n", "0"}, nil, true},
		{"negative warm-up", []string{"-warmup", "-1"}, nil, true},
		{"no warm-up", []string{"-warmup", "0"}, nil, false},
		{"stray argument", []string{"ctr"}, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := parseFlags(append([]string{"-out", "/nonexistent/result.json"}, c.args...))
			if (err != nil) != c.wantErr {
				t.Fatalf("parseFlags(%q) error %v, want error %v", c.args, err, c.wantErr)
			}
			if err == nil && !slices.Equal(o.skip, c.skip) {
				t.Errorf("parseFlags(%q) skips %q, want %q", c.args, o.skip, c.skip)
			}
		})
	}
}
