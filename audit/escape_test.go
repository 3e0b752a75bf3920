package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// hostile holds what a containerd client can put in a label, an
// annotation or a runtime name.
var hostile = []string{
	"web\nk8s.io/forged: IpcMode=private",
	"cr\rreturn",
	"\x1b]0;pwned\x07",
	"\x1b[2J",
	"tab\there",
	"del\x7f",
	"c1\u0085nel\u009bcsi",
	"ls\u2028ps\u2029",
	"bidi\u202a\u202b\u202c\u202d\u202eisolate\u2066\u2067\u2068\u2069",
	"lrm\u200ezwsp\u200bbom\ufeff",
	"tag\U000e0041",
	"bad\xffbyte\xc3",
	`quote"back\slash`,
	"space here",
	"(sandbox)",
	"ünïcode",
}

// unsafeFor is the first character in s that a terminal acts on or that
// hides text, other than the line feed; "" when there is none.
func unsafeFor(s string) string {
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return "invalid byte"
			}
		case r == '\n':
		case r < 0x20 || r == 0x7f || 0x80 <= r && r < 0xa0 || r == 0x2028 || r == 0x2029 || unicode.Is(unicode.Cf, r):
			return string(r)
		}
	}
	return ""
}

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"web-0", "web-0"},
		{"io.containerd.runc.v2", "io.containerd.runc.v2"},
		{"container:k8s.io/0f57", "container:k8s.io/0f57"},
		{"/usr/bin/runtime", "/usr/bin/runtime"},
		{"web\nforged", `"web\nforged"`},
		{"\x1b[2J", `"\x1b[2J"`},
		{"space here", `"space here"`},
		{"(sandbox)", `"(sandbox)"`},
		{"ünïcode", `"\u00fcn\u00efcode"`},
		{"bad\xff", `"bad\xff"`},
		{"rlo\u202e", `"rlo\u202e"`},
		{`q"b\`, `"q\"b\\"`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	// Inside a pod's "<namespace>/<name>", a '/' is quoted.
	if got := quoteName("a/b"); got != `"a/b"` {
		t.Errorf(`quoteName("a/b") = %s`, got)
	}
	for _, s := range hostile {
		q := Quote(s)
		if strings.ContainsAny(q, "\n ") && !strings.HasPrefix(q, `"`) || unsafeFor(q) != "" || strings.Contains(q, "\n") {
			t.Errorf("Quote(%q) = %q is not one plain line", s, q)
		}
		for _, c := range []byte(q) {
			if c < 0x20 || c > 0x7e {
				t.Errorf("Quote(%q) = %q holds byte %#x", s, q, c)
			}
		}
	}
}

func TestCleanLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`connect to containerd at /run/x.sock: dial unix: "quoted"`, `connect to containerd at /run/x.sock: dial unix: "quoted"`},
		{"a\nb", `a\nb`},
		{"\x1b]0;pwned\x07", `\x1b]0;pwned\a`},
		{"ü\u202e\xff", `\u00fc\u202e\xff`},
	} {
		if got := cleanLine(tc.in); got != tc.want {
			t.Errorf("cleanLine(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestVisible(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"team-x", "team-x"},
		{"ünïcode and spaces", "ünïcode and spaces"},
		{`back\slash "q"`, `back\slash "q"`},
		{"a\nb\tc", `a\nb\tc`},
		{"\x1b[2J\x7f", `\x1b[2J\x7f`},
		{"\u0085\u2028\u202e\u00a0", `\u0085\u2028\u202e\u00a0`},
		{"bad\xff", `bad\xff`},
		{"real \ufffd stays", "real \ufffd stays"},
	} {
		if got := visible(tc.in); got != tc.want {
			t.Errorf("visible(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, s := range hostile {
		if v := visible(s); unsafeFor(v) != "" || strings.Contains(v, "\n") {
			t.Errorf("visible(%q) = %q", s, v)
		}
	}
}

// The JSON report holds no raw control or invisible character, and still
// decodes to exactly the strings (U+FFFD for a byte that is not UTF-8).
func TestJSONSafe(t *testing.T) {
	var recs []Record
	for i, s := range hostile {
		recs = append(recs, Record{Namespace: "n", ID: string(rune('a' + i)), Runtime: s, ClaimedPodName: s, ClaimedContainerName: s})
	}
	var b bytes.Buffer
	if err := WriteJSON(&b, recs); err != nil {
		t.Fatal(err)
	}
	if c := unsafeFor(b.String()); c != "" {
		t.Errorf("JSON holds %q:\n%s", c, b.String())
	}
	var got []Record
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("JSON does not decode: %v\n%s", err, b.String())
	}
	for i, s := range hostile {
		want := strings.ToValidUTF8(s, "\ufffd")
		if i >= len(got) || got[i].Runtime != want || got[i].ClaimedPodName != want || got[i].ClaimedContainerName != want {
			t.Errorf("record %d decodes to %+v, want %q", i, got[i], want)
		}
	}
	// Ordinary output is left as encoding/json wrote it.
	plain := []byte("[\n  {\n    \"a\": \"ünïcode\"\n  }\n]")
	if got := jsonSafe(plain); !bytes.Equal(got, plain) {
		t.Errorf("jsonSafe changed %s to %s", plain, got)
	}
}

// No format writes a hostile name so that it reaches a terminal: the text
// report is one line per record, stderr one line per finding, the metrics
// parse.
func TestHostileNamesInEveryFormat(t *testing.T) {
	var recs []Record
	for i, s := range hostile {
		recs = append(recs, Record{Namespace: "evil", ID: string(rune('a' + i)), IPCMode: ModeHost, PIDMode: ModePrivate, ShmSource: ShmHost,
			Runtime: s, Source: SourceKernel, ClaimedPodNamespace: s, ClaimedPodName: s, ClaimedContainerName: s})
	}
	var text bytes.Buffer
	if err := WriteText(&text, recs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(text.String(), "\n"), "\n")
	if len(lines) != len(recs) {
		t.Errorf("%d records make %d lines:\n%s", len(recs), len(lines), text.String())
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, "evil/"+recs[i].ID+": ") || unsafeFor(l) != "" {
			t.Errorf("line %d: %q", i, l)
		}
	}
	for _, f := range Findings(recs, true) {
		if s := f.String(); strings.Contains(s, "\n") || unsafeFor(s) != "" {
			t.Errorf("finding %q", s)
		}
	}
	for _, r := range recs {
		if s := NotCounted(r); strings.Contains(s, "\n") || unsafeFor(s) != "" {
			t.Errorf("note %q", s)
		}
	}
	var prom bytes.Buffer
	if err := WritePrometheus(&prom, Outcome{Records: recs, Findings: Findings(recs, true), End: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	if c := unsafeFor(prom.String()); c != "" {
		t.Errorf("metrics hold %q", c)
	}
	mfs := parse(t, prom.String())
	if n := len(mfs["nsiso_audit_host_ipc_sharing"].GetMetric()); n != len(recs) {
		t.Errorf("%d host IPC series, want %d", n, len(recs))
	}
}
