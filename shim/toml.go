package shim

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nsiso/nsiso/specmod"
)

// nsiso.toml is flat: every key is at the top level and holds a string or
// a boolean. This file reads exactly that subset of TOML 1.0, strictly,
// instead of linking a general TOML decoder into a binary that containerd
// starts three times per container (a decoder is about 300 KB of the shim
// and of every shim's resident memory). Whatever it accepts, a conforming
// TOML decoder reads the same way; the fuzz tests hold it to go-toml.
// Anything else (tables, arrays, numbers, multi-line strings) is an error
// that names the line.

// tomlKind is the kind of a value.
type tomlKind int

const (
	tomlString tomlKind = iota
	tomlBool
	// tomlOther is any other TOML value; it is never decoded, since no key
	// of nsiso.toml holds one.
	tomlOther
	// tomlTable is a [table] or [[array of tables]] header.
	tomlTable
)

// tomlEntry is one key = value line.
type tomlEntry struct {
	line int
	key  string
	// raw is the value as written, up to the end of the line.
	raw  string
	kind tomlKind
	str  string
	b    bool
}

// tomlSyntaxError names the line and column of a syntax error and shows
// the line.
func tomlSyntaxError(line, col int, text, format string, args ...any) error {
	return fmt.Errorf("line %d, column %d: %s (in %q)", line, col, fmt.Sprintf(format, args...), specmod.Truncate(strings.TrimSpace(text)))
}

// parseFlatTOML splits a flat TOML document into its entries, in order. A
// table header is reported as an entry of kind tomlTable keyed by the
// table's name, for the caller to refuse.
func parseFlatTOML(data []byte) ([]tomlEntry, error) {
	var out []tomlEntry
	seen := map[string]int{}
	doc := string(data)
	for n := 1; doc != ""; n++ {
		text, rest, newline := strings.Cut(doc, "\n")
		doc = rest
		if newline {
			// CRLF; a CR anywhere else is a control character.
			text = strings.TrimSuffix(text, "\r")
		}
		if !utf8.ValidString(text) {
			i := 0
			for i < len(text) {
				r, size := utf8.DecodeRuneInString(text[i:])
				if r == utf8.RuneError && size <= 1 {
					break
				}
				i += size
			}
			return nil, fmt.Errorf("line %d, column %d: not UTF-8", n, i+1)
		}
		e, ok, err := parseTOMLLine(n, text)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if first, dup := seen[e.key]; dup {
			return nil, fmt.Errorf("line %d: key %q is set twice (first on line %d)", n, specmod.Truncate(e.key), first)
		}
		seen[e.key] = n
		out = append(out, e)
	}
	return out, nil
}

func isTOMLSpace(c byte) bool { return c == ' ' || c == '\t' }

// isTOMLControl tells whether c may not appear in a comment or a string
// (TOML allows tab, and a newline only between lines).
func isTOMLControl(c byte) bool { return c < 0x20 && c != '\t' || c == 0x7f }

func isBareKeyChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// parseTOMLLine reads one line; ok is false for a blank or comment line.
func parseTOMLLine(n int, text string) (tomlEntry, bool, error) {
	i := 0
	for i < len(text) && isTOMLSpace(text[i]) {
		i++
	}
	if i == len(text) {
		return tomlEntry{}, false, nil
	}
	if text[i] == '#' {
		return tomlEntry{}, false, checkComment(n, text, i)
	}
	if text[i] == '[' {
		return tableHeader(n, text, i)
	}
	key, i, err := parseTOMLKey(n, text, i)
	if err != nil {
		return tomlEntry{}, false, err
	}
	if i < len(text) && !isTOMLSpace(text[i]) && text[i] != '=' {
		r, _ := utf8.DecodeRuneInString(text[i:])
		return tomlEntry{}, false, tomlSyntaxError(n, i+1, text, `%q cannot be part of a bare key: use letters, digits, "_" and "-", or quote the key`, r)
	}
	for i < len(text) && isTOMLSpace(text[i]) {
		i++
	}
	if i == len(text) || text[i] != '=' {
		return tomlEntry{}, false, tomlSyntaxError(n, i+1, text, "expected = after the key %q", key)
	}
	i++
	for i < len(text) && isTOMLSpace(text[i]) {
		i++
	}
	e := tomlEntry{line: n, key: key, raw: strings.TrimSpace(text[i:])}
	if i == len(text) {
		return tomlEntry{}, false, tomlSyntaxError(n, i+1, text, "no value for the key %q", key)
	}
	switch {
	case strings.HasPrefix(text[i:], `"""`), strings.HasPrefix(text[i:], `'''`):
		return tomlEntry{}, false, tomlSyntaxError(n, i+1, text, "a multi-line string; nsiso.toml takes strings on one line")
	case text[i] == '"' || text[i] == '\'':
		e.kind = tomlString
		if e.str, i, err = parseTOMLString(n, text, i); err != nil {
			return tomlEntry{}, false, err
		}
	case strings.HasPrefix(text[i:], "true") && endOfValue(text, i+4):
		e.kind, e.b, i = tomlBool, true, i+4
	case strings.HasPrefix(text[i:], "false") && endOfValue(text, i+5):
		e.kind, e.b, i = tomlBool, false, i+5
	default:
		// Not a value nsiso.toml has: the caller refuses the key,
		// whatever the value is.
		e.kind = tomlOther
		return e, true, nil
	}
	for i < len(text) && isTOMLSpace(text[i]) {
		i++
	}
	if i < len(text) {
		if text[i] != '#' {
			return tomlEntry{}, false, tomlSyntaxError(n, i+1, text, "unexpected %q after the value", text[i:i+1])
		}
		if err := checkComment(n, text, i); err != nil {
			return tomlEntry{}, false, err
		}
	}
	return e, true, nil
}

// endOfValue tells whether a bare value ends at i.
func endOfValue(text string, i int) bool {
	return i == len(text) || isTOMLSpace(text[i]) || text[i] == '#'
}

func checkComment(n int, text string, at int) error {
	for i := at; i < len(text); i++ {
		if isTOMLControl(text[i]) {
			return tomlSyntaxError(n, i+1, text, "control character %q in a comment", text[i:i+1])
		}
	}
	return nil
}

// parseTOMLKey reads a key: bare or quoted parts joined by dots. A dotted
// key names a table's key, which nsiso.toml has none of, so it comes back
// joined for the caller to refuse as unknown.
func parseTOMLKey(n int, text string, i int) (string, int, error) {
	var parts []string
	for {
		var part string
		switch {
		case i < len(text) && (text[i] == '"' || text[i] == '\''):
			if strings.HasPrefix(text[i:], `"""`) || strings.HasPrefix(text[i:], `'''`) {
				return "", 0, tomlSyntaxError(n, i+1, text, "a key cannot be a multi-line string")
			}
			var err error
			if part, i, err = parseTOMLString(n, text, i); err != nil {
				return "", 0, err
			}
		default:
			j := i
			for j < len(text) && isBareKeyChar(text[j]) {
				j++
			}
			if j == i {
				return "", 0, tomlSyntaxError(n, i+1, text, `a key is letters, digits, "_" and "-", or a quoted string`)
			}
			part, i = text[i:j], j
		}
		parts = append(parts, part)
		j := i
		for j < len(text) && isTOMLSpace(text[j]) {
			j++
		}
		if j == len(text) || text[j] != '.' {
			return strings.Join(parts, "."), i, nil
		}
		i = j + 1
		for i < len(text) && isTOMLSpace(text[i]) {
			i++
		}
	}
}

// parseTOMLString reads a one-line basic ("...") or literal ('...')
// string starting at i and returns its value and the index after it.
func parseTOMLString(n int, text string, i int) (string, int, error) {
	quote := text[i]
	var b strings.Builder
	for j := i + 1; j < len(text); j++ {
		c := text[j]
		switch {
		case c == quote:
			return b.String(), j + 1, nil
		case isTOMLControl(c):
			return "", 0, tomlSyntaxError(n, j+1, text, "control character %q in a string", text[j:j+1])
		case c == '\\' && quote == '"':
			r, size, err := tomlEscape(text[j:])
			if err != nil {
				return "", 0, tomlSyntaxError(n, j+1, text, "%v", err)
			}
			b.WriteRune(r)
			j += size - 1
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, tomlSyntaxError(n, len(text)+1, text, "the string has no closing %c", quote)
}

// tomlEscape decodes the escape sequence at the start of s (which begins
// with a backslash) and returns the rune and the sequence's length.
func tomlEscape(s string) (rune, int, error) {
	if len(s) < 2 {
		return 0, 0, fmt.Errorf("a backslash at the end of the line")
	}
	switch s[1] {
	case 'b':
		return '\b', 2, nil
	case 't':
		return '\t', 2, nil
	case 'n':
		return '\n', 2, nil
	case 'f':
		return '\f', 2, nil
	case 'r':
		return '\r', 2, nil
	case '"':
		return '"', 2, nil
	case '\\':
		return '\\', 2, nil
	case 'u', 'U':
		digits := 4
		if s[1] == 'U' {
			digits = 8
		}
		if len(s) < 2+digits {
			return 0, 0, fmt.Errorf("\\%c needs %d hex digits", s[1], digits)
		}
		for _, c := range []byte(s[2 : 2+digits]) {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return 0, 0, fmt.Errorf("\\%c needs %d hex digits", s[1], digits)
			}
		}
		v, _ := strconv.ParseUint(s[2:2+digits], 16, 32)
		if v > utf8.MaxRune || v >= 0xD800 && v <= 0xDFFF {
			return 0, 0, fmt.Errorf("%s is not a Unicode scalar value", s[:2+digits])
		}
		return rune(v), 2 + digits, nil
	}
	return 0, 0, fmt.Errorf("unknown escape \\%s", s[1:2])
}

// tableHeader reads a [table] or [[array]] header as an entry keyed by its
// name; nsiso.toml has no tables.
func tableHeader(n int, text string, i int) (tomlEntry, bool, error) {
	open := 1
	if strings.HasPrefix(text[i:], "[[") {
		open = 2
	}
	j := i + open
	for j < len(text) && isTOMLSpace(text[j]) {
		j++
	}
	key, j, err := parseTOMLKey(n, text, j)
	if err != nil {
		return tomlEntry{}, false, err
	}
	for j < len(text) && isTOMLSpace(text[j]) {
		j++
	}
	if !strings.HasPrefix(text[j:], strings.Repeat("]", open)) {
		return tomlEntry{}, false, tomlSyntaxError(n, j+1, text, "the table header has no closing %s", strings.Repeat("]", open))
	}
	return tomlEntry{line: n, key: key, raw: strings.TrimSpace(text[i:]), kind: tomlTable}, true, nil
}
