// Package termsafe escapes text from a guest before it reaches a
// terminal: a process name, a path or a console line can carry escape
// sequences that move the cursor, rewrite the title, or worse.
package termsafe

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// String is s with every control character (C0, DEL, C1) and every
// invalid UTF-8 byte written as a Go escape (\x1b, \u009b).
func String(s string) string { return escape(s, false) }

// Text is String for multi-line text: newlines and tabs stay.
func Text(s string) string { return escape(s, true) }

// IsControl says whether r would drive a terminal: C0, DEL or C1.
func IsControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// HasControl says whether s holds a control character or invalid UTF-8.
func HasControl(s string) bool { return !utf8.ValidString(s) || strings.ContainsFunc(s, IsControl) }

func escape(s string, lines bool) string {
	kept := func(r rune) bool { return lines && (r == '\n' || r == '\t') }
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return IsControl(r) && !kept(r) }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case IsControl(r) && !kept(r) && r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case IsControl(r) && !kept(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Writer escapes what it is given as Text before passing it on. A
// multi-byte character split across two writes is held until it is
// whole.
type Writer struct {
	w    io.Writer
	hold []byte
}

// NewWriter writes escaped text to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

func (t *Writer) Write(p []byte) (int, error) {
	buf := append(t.hold, p...)
	t.hold = nil
	// An incomplete rune at the end waits for the next write.
	if cut := partialTail(buf); cut > 0 {
		t.hold = append([]byte(nil), buf[len(buf)-cut:]...)
		buf = buf[:len(buf)-cut]
	}
	if _, err := io.WriteString(t.w, Text(string(buf))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// partialTail is how many bytes at the end of b start a rune that is
// not complete yet (0 if none).
func partialTail(b []byte) int {
	for n := 1; n <= 3 && n <= len(b); n++ {
		c := b[len(b)-n]
		if c&0xc0 == 0x80 {
			continue // a continuation byte: look further back
		}
		if c >= 0xc0 && !utf8.FullRune(b[len(b)-n:]) {
			return n
		}
		return 0
	}
	return 0
}

// JSON is encoding/json's output with DEL and the C1 controls (U+0080
// to U+009F) escaped as \u00XX too: json escapes the rest of C0 but
// writes these as they are, and a terminal that shows `--json` takes
// U+009B for CSI. In valid JSON those characters can only be inside
// strings, where the escape means the same character.
func JSON(b []byte) []byte {
	next := func(b []byte) int {
		return bytes.IndexFunc(b, func(r rune) bool { return r == 0x7f || r >= 0x80 && r < 0xa0 })
	}
	i := next(b)
	if i < 0 {
		return b
	}
	var out bytes.Buffer
	for i >= 0 {
		r, n := utf8.DecodeRune(b[i:])
		out.Write(b[:i])
		fmt.Fprintf(&out, `\u%04x`, r)
		b = b[i+n:]
		i = next(b)
	}
	out.Write(b)
	return out.Bytes()
}
