package specmod

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "256Mi", want: 256 << 20},
		{in: "1Gi", want: 1 << 30},
		{in: "512m", want: 512 << 20},
		{in: "1g", want: 1 << 30},
		{in: "1.5G", want: 3 << 29},
		{in: "64MB", want: 64 << 20},
		{in: "4096", want: 4096},
		{in: "4096b", want: 4096},
		{in: " 2 Ki ", want: 2048},
		{in: "", wantErr: "empty size"},
		{in: "Mi", wantErr: "does not start with a number"},
		{in: "0", wantErr: "greater than zero"},
		{in: "0.5", wantErr: "not a whole number"},
		{in: "1.2.3", wantErr: "not a number"},
		{in: "-1", wantErr: "does not start with a number"},
		{in: "1Pi", wantErr: "unknown unit"},
		{in: "2000000Ti", wantErr: "too large"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseSize(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	for in, want := range map[int64]string{1 << 30: "1Gi", 3 << 29: "1536Mi", 4097: "4097", 64 << 10: "64Ki", 2 << 40: "2Ti"} {
		if got := FormatSize(in); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestParseTmpfsSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"65536k", 64 << 20, true}, {"64m", 64 << 20, true}, {"1g", 1 << 30, true}, {"4096", 4096, true},
		{"50%", 0, false}, {"", 0, false}, {"x", 0, false}, {"-1k", 0, false},
	} {
		got, ok := parseTmpfsSize(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseTmpfsSize(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
