package shim

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

func TestParseConfigTOMLSubset(t *testing.T) {
	str := func(s string) *string { return &s }
	boolean := func(b bool) *bool { return &b }
	for _, tc := range []struct {
		name    string
		doc     string
		want    Config
		wantErr string
	}{
		{name: "comments, blank lines, indentation and CRLF",
			doc:  "# nsiso\r\n\r\n  binary_name = \"crun\"   # the runtime\r\n\troot='/run/x'\r\n",
			want: Config{BinaryName: str("crun"), Root: str("/run/x")}},
		{name: "quoted keys", doc: "\"binary_name\" = \"a\"\n'root' = \"/b\"\n", want: Config{BinaryName: str("a"), Root: str("/b")}},
		{name: "basic string escapes", doc: `binary_name = "a\"b\\c\tdé\u00e9\U0001F600"`, want: Config{BinaryName: str("a\"b\\c\tdéé😀")}},
		{name: "literal strings keep backslashes", doc: `root = '/a\b'`, want: Config{Root: str(`/a\b`)}},
		{name: "booleans", doc: "systemd_cgroup = true\ndisallow_sharing_host_ipc_namespace = false#x\n", want: Config{SystemdCgroup: true, DisallowSharingHostIPCNamespace: boolean(false)}},
		{name: "what containerd's CRI hands over as ConfigBody", doc: "ConfigPath = ''\nTypeUrl = \"a'b\"\ndefault_container_shm_size = '192Mi'\nsystemd_cgroup = true\n",
			want: Config{TypeURL: "a'b", DefaultContainerShmSize: "192Mi", SystemdCgroup: true}},
		{name: "no final newline", doc: "root = '/r'", want: Config{Root: str("/r")}},

		{name: "set twice", doc: "root = '/a'\n\nroot = '/b'\n", wantErr: `line 3: key "root" is set twice (first on line 1)`},
		{name: "dotted key", doc: "root.x = '/a'\n", wantErr: `line 1: unknown key "root.x"`},
		{name: "array of tables", doc: "[[plugins]]\n", wantErr: `line 1: unknown key "plugins"`},
		{name: "table named like a key", doc: "[root]\n", wantErr: `line 1: unknown key "root"`},
		{name: "unclosed table", doc: "[root\n", wantErr: `line 1, column 6: the table header has no closing ]`},
		{name: "multi-line string", doc: "root = \"\"\"/a\"\"\"\n", wantErr: `line 1, column 8: a multi-line string; nsiso.toml takes strings on one line`},
		{name: "unclosed string", doc: "root = \"/a\n", wantErr: `line 1, column 11: the string has no closing "`},
		{name: "bad escape", doc: `root = "/a\q"`, wantErr: `line 1, column 11: unknown escape \q`},
		{name: "surrogate", doc: `root = "\ud800"`, wantErr: `line 1, column 9: \ud800 is not a Unicode scalar value`},
		{name: "short unicode escape", doc: `root = "\u12"`, wantErr: `line 1, column 9: \u needs 4 hex digits`},
		{name: "control character in a string", doc: "root = \"/a\x01\"\n", wantErr: `line 1, column 11: control character "\x01" in a string`},
		{name: "control character in a comment", doc: "# a\x7f\n", wantErr: `line 1, column 4: control character "\x7f" in a comment`},
		{name: "a lone CR", doc: "root = '/a'\rsystemd_cgroup = true\n", wantErr: `line 1, column 12: unexpected "\r" after the value`},
		{name: "text after the value", doc: "systemd_cgroup = true false\n", wantErr: `line 1, column 23: unexpected "f" after the value`},
		{name: "no equals", doc: "systemd_cgroup true\n", wantErr: `line 1, column 16: expected = after the key "systemd_cgroup"`},
		{name: "no value", doc: "systemd_cgroup =  # none\n", wantErr: `line 1: systemd_cgroup = # none: want true or false`},
		{name: "bool-like word", doc: "systemd_cgroup = trueish\n", wantErr: `line 1: systemd_cgroup = trueish: want true or false`},
		{name: "not UTF-8", doc: "root = '/a\xff'\n", wantErr: `line 1, column 11: not UTF-8`},
		{name: "keys are case-sensitive", doc: "Binary_Name = 'x'\n", wantErr: `line 1: unknown key "Binary_Name"`},
		{name: "an escape in an unknown quoted key (go-toml v2.2.4 panics on it)", doc: `"\b"=""`, wantErr: `line 1: unknown key "\b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := decodeConfig([]byte(tc.doc))
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("got  %v\nwant %s…", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*c, tc.want) {
				t.Fatalf("got %+v\nwant %+v", *c, tc.want)
			}
		})
	}
}

// decodeWithGoTOML decodes doc the way ParseConfig did before it had a
// parser of its own: go-toml, strictly, into Config. go-toml v2.2.4 panics
// on some documents (an unknown quoted key with an escape in it); that
// counts as refusing them.
func decodeWithGoTOML(doc []byte) (_ *Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("go-toml panicked: %v", r)
		}
	}()
	var c Config
	d := toml.NewDecoder(bytes.NewReader(doc))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return nil, err
	}
	return &c, nil
}

// FuzzConfigMatchesGoTOML holds nsiso's parser to a general TOML decoder:
// whatever it accepts, go-toml accepts and decodes to the same Config, and
// whatever go-toml refuses, it refuses. (It may refuse more: multi-line
// strings, keys in other letter cases.)
func FuzzConfigMatchesGoTOML(f *testing.F) {
	for _, s := range []string{
		"binary_name = \"runc\"\nroot = '/run/containerd/runc'\nsystemd_cgroup = false\n",
		"disallow_sharing_host_ipc_namespace = true # CIS 5.16\ndisallow_sharing_host_pid_namespace = false\n",
		"default_container_shm_size = \"256Mi\"\r\nmax_container_shm_size = \"8Gi\"\r\n",
		"\"root\" = \"/a\\u00e9\\\"b\"\n",
		"ConfigPath = ''\nTypeUrl = \"x\"\n",
		"[plugins]\nx = 1\n",
		"root = \"\"\"a\"\"\"\n",
		"root = 'a' 'b'\n",
		"root.x = 1\n",
		"  \t# only a comment\n\n",
		"root = \"\\U0001F600\"",
		"systemd_cgroup=true#",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		ours, err := decodeConfig(doc)
		theirs, terr := decodeWithGoTOML(doc)
		if err != nil {
			return
		}
		if terr != nil {
			t.Fatalf("accepted what go-toml refuses (%v):\n%q", terr, doc)
		}
		if !reflect.DeepEqual(ours, theirs) {
			t.Fatalf("decoded differently from go-toml:\n%q\nours   %+v\ntheirs %+v", doc, ours, theirs)
		}
	})
}
