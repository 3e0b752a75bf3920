package procfs

import (
	"os"
	"testing"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       Stat
		wantErr    bool
	}{
		{name: "plain", text: "42 (sleep) S 7 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10",
			want: Stat{State: "S", PPID: 7, StartTime: 12345}},
		{name: "command with spaces and parens", text: "42 (a) b) (c) Z 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 99 1000 10",
			want: Stat{State: "Z", PPID: 1, StartTime: 99}},
		{name: "truncated", text: "42 (sleep) S 7 42", wantErr: true},
		{name: "no command", text: "42 sleep S", wantErr: true},
		{name: "bad starttime", text: "42 (sleep) S 7 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 x 1000 10", wantErr: true},
	} {
		got, err := ParseStat(tc.text)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestReadStatSelf(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil || st.StartTime == 0 || st.PPID != os.Getppid() {
		t.Fatalf("ReadStat(self) = %+v, %v (ppid %d)", st, err, os.Getppid())
	}
	if _, err := ReadStat(1 << 30); err == nil {
		t.Fatal("want an error for a pid that cannot exist")
	}
}
