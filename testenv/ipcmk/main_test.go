package main

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	cases := map[string]int64{
		"4096": 4096, "1K": 1024, "1k": 1024, "2KiB": 2048, "1KB": 1000,
		"3M": 3 << 20, "1MB": 1000000, "1G": 1 << 30, "1GiB": 1 << 30,
	}
	for in, want := range cases {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "K", "1X", "1KiBB", "-1", "1.5M", "99999999999E"} {
		if got, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want error", bad, got)
		}
	}
}

func TestParseArgs(t *testing.T) {
	ok := map[string]request{
		"-M 4096":              {shmSize: 4096, mode: 0o644},
		"-M4096":               {shmSize: 4096, mode: 0o644},
		"--shmem 1K":           {shmSize: 1024, mode: 0o644},
		"--shmem=1K -p 600":    {shmSize: 1024, mode: 0o600},
		"-Q --mode=0640":       {queue: true, mode: 0o640},
		"-S 3 -M 1 -Q":         {shmSize: 1, queue: true, nsems: 3, mode: 0o644},
		"--semaphore=2 -p0777": {nsems: 2, mode: 0o777},
		"-M 1M --touch":        {shmSize: 1 << 20, touch: true, mode: 0o644},
	}
	for in, want := range ok {
		got, err := parseArgs(strings.Fields(in))
		if err != nil || got == nil || *got != want {
			t.Errorf("parseArgs(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-M", "-M 0", "-M x", "-S 0", "-p 9 -Q", "-p 1000 -Q", "-Qx", "-X", "-p 600", "extra", "--touch", "-Q --touch", "--touch=1 -M 1"} {
		if got, err := parseArgs(strings.Fields(bad)); err == nil {
			t.Errorf("parseArgs(%q) = %+v, want error", bad, got)
		}
	}
	if got, err := parseArgs([]string{"--help"}); got != nil || err != nil {
		t.Errorf("--help: %+v, %v", got, err)
	}
}
