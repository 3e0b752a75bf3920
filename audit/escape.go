package audit

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Names, labels, annotations and runtime names come from whoever created a
// container: any containerd client can put a newline, a terminal escape or
// a bidi override in them. Every format writes them so that they can
// neither start a line nor reach a terminal as a control character.

// Quote is how the text report and stderr print a value from a containerd
// client: unchanged when it is made only of ASCII letters, digits and
// '.', '_', '-', ':' and '/' (every ordinary containerd ID, namespace,
// runtime and Kubernetes name), else in Go's double-quoted ASCII form
// (strconv.QuoteToASCII), in which control characters, every non-ASCII
// character and bytes that are not UTF-8 are escapes.
func Quote(s string) string {
	if plain(s, true) {
		return s
	}
	return strconv.QuoteToASCII(s)
}

// quoteName is Quote for one part of "<pod namespace>/<pod name>", where a
// '/' would make the parts ambiguous.
func quoteName(s string) string {
	if plain(s, false) {
		return s
	}
	return strconv.QuoteToASCII(s)
}

func plain(s string, slash bool) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == '-', c == ':':
		case c == '/' && slash:
		default:
			return false
		}
	}
	return true
}

// cleanLine makes a message safe for one line of stderr: every character
// outside printable ASCII, and every byte that is not UTF-8, becomes its
// Go escape. Messages are built with Quote; this catches what a library's
// error may echo.
func cleanLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return escapeRunes(s, func(r rune) bool { return r >= 0x20 && r <= 0x7e })
		}
	}
	return s
}

// visible writes the characters that are not printable (controls,
// separators other than the space, invisible format characters such as
// bidi overrides) and the bytes that are not UTF-8 as Go escapes, and
// keeps everything else, backslashes included: what a metric label shows.
func visible(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return escapeRunes(s, unicode.IsPrint)
		}
	}
	return s
}

// escapeRunes keeps the runes keep accepts and writes the others, and
// bytes that are not UTF-8, as Go escapes (\n, \x1b, \u202e, \xff).
func escapeRunes(s string, keep func(rune) bool) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case keep(r):
			b.WriteString(s[:n])
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		s = s[n:]
	}
	return b.String()
}

// jsonSafe rewrites encoding/json's output so that no character a
// terminal acts on or that hides text is left raw: encoding/json escapes
// C0 controls and U+2028/U+2029 but writes DEL, C1 controls and bidi
// overrides as they are. Outside strings JSON has only ASCII, so each such
// character is inside a string, where \uXXXX stands for the same
// character: the document decodes to the same values.
func jsonSafe(data []byte) []byte {
	var b []byte // nil until the first escape
	last := 0
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == 0x7f || r >= utf8.RuneSelf && (n == 1 || !unicode.IsPrint(r)) {
			if b == nil {
				b = make([]byte, 0, len(data)+16)
			}
			b = append(b, data[last:i]...)
			if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
				b = fmt.Appendf(b, `\u%04x\u%04x`, r1, r2)
			} else {
				// One UTF-16 unit; a byte that is not UTF-8 (which
				// encoding/json never writes) is U+FFFD, as it would be.
				b = fmt.Appendf(b, `\u%04x`, r)
			}
			last = i + n
		}
		i += n
	}
	if b == nil {
		return data
	}
	return append(b, data[last:]...)
}
