package procfs

import (
	"os"
	"testing"
)

func TestStatusField(t *testing.T) {
	const status = "Name:\tsleep\nState:\tS (sleeping)\nNSpid:\t42\t7\nVmHWM:\t    1234 kB\nVmRSS:\t     980 kB\nRssFile:\t 12 kB\n"
	for _, tc := range []struct {
		key, want string
		ok        bool
	}{
		{"Name", "sleep", true},
		{"State", "S (sleeping)", true},
		{"NSpid", "42\t7", true},
		{"VmHWM", "1234 kB", true},
		{"VmRSS", "980 kB", true},
		{"Rss", "", false}, // a prefix of RssFile is not that key
		{"VmSwap", "", false},
		{"", "", false},
	} {
		got, ok := StatusField(status, tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("StatusField(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestReadKBSelf(t *testing.T) {
	pid := os.Getpid()
	for _, tc := range []struct {
		file, key string
		wantErr   bool
	}{
		{"status", "VmRSS", false},
		{"status", "VmHWM", false},
		{"smaps_rollup", "Pss", false},
		{"status", "Name", true},   // not a size
		{"status", "NoSuch", true}, // absent
		{"nosuchfile", "VmRSS", true},
	} {
		kb, err := ReadKB(pid, tc.file, tc.key)
		if (err != nil) != tc.wantErr || (!tc.wantErr && kb <= 0) {
			t.Errorf("ReadKB(self, %s, %s) = %d, %v; want error %v", tc.file, tc.key, kb, err, tc.wantErr)
		}
	}
}
