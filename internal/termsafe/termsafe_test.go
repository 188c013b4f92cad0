package termsafe

import (
	"bytes"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nginx", "nginx"},
		{"héllo wörld", "héllo wörld"},
		{"a\x1b]0;pwned\x07b", `a\x1b]0;pwned\x07b`},
		{"\x1b[2J\x1b[Hcleared", `\x1b[2J\x1b[Hcleared`},
		{"c1\u009b31m", `c1\u009b31m`},
		{"tab\there\nline", `tab\x09here\x0aline`},
		{"bad \xff utf8", `bad \xff utf8`},
		{"del\x7f", `del\x7f`},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
	if got := Text("one\n\ttwo\x1b[31m\n"); got != "one\n\ttwo\\x1b[31m\n" {
		t.Errorf("Text = %q", got)
	}
}

// TestWriterSplitsRunes: a character cut between two writes comes out
// whole, not as two escaped halves.
func TestWriterSplitsRunes(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	in := []byte("ö\x1b[31mé")
	for _, b := range in {
		if _, err := w.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	if out.String() != `ö\x1b[31mé` {
		t.Fatalf("got %q", out.String())
	}
}

// FuzzString: nothing escaped holds a control character, and clean text
// is left alone.
func FuzzString(f *testing.F) {
	f.Add("a\x1b[31mb")
	f.Add("\xff\xfe")
	f.Add("plain")
	f.Fuzz(func(t *testing.T, s string) {
		for _, got := range []string{String(s), Text(s)} {
			if !utf8.ValidString(got) {
				t.Fatalf("%q escaped to invalid UTF-8 %q", s, got)
			}
			for _, r := range got {
				if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
					t.Fatalf("%q escaped to %q, still holding %U", s, got, r)
				}
			}
		}
		if strings.ContainsAny(String(s), "\n\t") {
			t.Fatalf("String(%q) kept a newline or tab", s)
		}
	})
}

func TestJSON(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", `"plain"`},
		{"csi\u009b2Jx", `"csi\u009b2Jx"`},
		{"é and ¥ and \u0080\u009f\u00a0", `"é and ¥ and \u0080\u009f` + "\u00a0" + `"`},
		{"\x1b[31m", `"\u001b[31m"`},
		{"del\x7f", `"del\u007f"`},
	} {
		b, err := json.Marshal(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		got := JSON(b)
		if string(got) != tc.want {
			t.Errorf("JSON(%q) = %s, want %s", tc.in, got, tc.want)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != tc.in {
			t.Errorf("%s reads back as %q, %v", got, back, err)
		}
		if HasControl(string(got)) {
			t.Errorf("%q still holds a control character", got)
		}
	}
}

func FuzzJSON(f *testing.F) {
	f.Add("a\u009bb")
	f.Add("\xc2")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := json.Marshal(map[string]string{s: s})
		if err != nil {
			return
		}
		got := JSON(b)
		if HasControl(string(got)) {
			t.Fatalf("%q holds a control character", got)
		}
		var back map[string]string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q does not read back: %v", got, err)
		}
		var want map[string]string
		_ = json.Unmarshal(b, &want)
		if !maps.Equal(back, want) {
			t.Fatalf("%q reads back as %v, want %v", got, back, want)
		}
	})
}
