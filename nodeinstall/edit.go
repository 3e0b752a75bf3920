package nodeinstall

import (
	"bytes"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Insertion is text added to a file at a byte offset: all an edit of an
// operator's config ever is, so that taking it back is removing exactly
// these bytes.
type Insertion struct {
	Offset int    `json:"offset"`
	Text   string `json:"text"`
}

// Apply returns data with the insertion made.
func (in Insertion) Apply(data []byte) []byte {
	out := make([]byte, 0, len(data)+len(in.Text))
	out = append(out, data[:in.Offset]...)
	out = append(out, in.Text...)
	return append(out, data[in.Offset:]...)
}

// Revert removes the insertion from data; ok is false when data no longer
// holds the inserted text at its offset.
func (in Insertion) Revert(data []byte) ([]byte, bool) {
	end := in.Offset + len(in.Text)
	if in.Offset < 0 || end > len(data) || string(data[in.Offset:end]) != in.Text {
		return nil, false
	}
	out := make([]byte, 0, len(data)-len(in.Text))
	out = append(out, data[:in.Offset]...)
	return append(out, data[end:]...), true
}

var (
	// Top-level statements start at the beginning of a line; these find
	// the candidates, and every edit is checked by decoding it again.
	importsLine = regexp.MustCompile(`(?m)^[ \t]*imports[ \t]*=[ \t]*\[`)
	versionLine = regexp.MustCompile(`(?m)^[ \t]*version[ \t]*=[^\n]*(\n|$)`)
	tableLine   = regexp.MustCompile(`(?m)^[ \t]*\[`)
)

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// addImport returns the insertion that makes the config in data import
// hostPath first, touching nothing else: the path goes at the head of an
// existing top-level imports array, or a new imports line goes after the
// version line (else before the first table). The result is decoded again
// and must equal the original with the one import added; anything else is
// refused rather than written.
func addImport(data []byte, hostPath string) (Insertion, error) {
	var orig map[string]any
	if err := toml.Unmarshal(data, &orig); err != nil {
		return Insertion{}, err
	}
	var candidates []Insertion
	if _, ok := orig["imports"]; ok {
		head := topLevel(data)
		for _, m := range importsLine.FindAllIndex(head, -1) {
			candidates = append(candidates, Insertion{Offset: m[1], Text: tomlString(hostPath) + ", "})
		}
	} else {
		line := "imports = [" + tomlString(hostPath) + "]\n"
		head := topLevel(data)
		if m := versionLine.FindSubmatchIndex(head); m != nil {
			if m[2] == m[3] { // the version line ends the file without a newline
				candidates = append(candidates, Insertion{Offset: m[1], Text: "\n" + line})
			} else {
				candidates = append(candidates, Insertion{Offset: m[1], Text: line})
			}
		}
		candidates = append(candidates, Insertion{Offset: len(head), Text: line})
		if len(head) == len(data) && len(data) > 0 && data[len(data)-1] != '\n' {
			candidates = append(candidates, Insertion{Offset: len(data), Text: "\n" + line})
		}
	}
	for _, c := range candidates {
		if importAdded(orig, c.Apply(data), hostPath) {
			return c, nil
		}
	}
	return Insertion{}, fmt.Errorf("found no place to add imports = [%s] that keeps the rest of the file as it is; add it yourself", tomlString(hostPath))
}

// topLevel returns the part of data before the first table header, where
// top-level keys live.
func topLevel(data []byte) []byte {
	if loc := tableLine.FindIndex(data); loc != nil {
		return data[:loc[0]]
	}
	return data
}

// importAdded tells whether edited decodes to orig plus hostPath at the
// head of imports.
func importAdded(orig map[string]any, edited []byte, hostPath string) bool {
	var got map[string]any
	if err := toml.Unmarshal(edited, &got); err != nil {
		return false
	}
	want := make(map[string]any, len(orig)+1)
	for k, v := range orig {
		want[k] = v
	}
	imports := []any{hostPath}
	if old, ok := orig["imports"].([]any); ok {
		imports = append(imports, old...)
	}
	want["imports"] = imports
	return reflect.DeepEqual(got, want)
}

// hasImport tells whether the config imports hostPath by that exact entry.
func hasImport(f *configFile, hostPath string) bool {
	for _, imp := range f.Imports {
		if imp == hostPath {
			return true
		}
	}
	return false
}

// sameBytes is bytes.Equal, named for what the plan asks.
func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }
