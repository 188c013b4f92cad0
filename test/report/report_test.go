package report

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSplice(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"replaces between the markers",
			"head\n<!-- x:begin (make reliability writes this part) -->\nold\n<!-- x:end -->\ntail\n",
			"head\n<!-- x:begin (make reliability writes this part) -->\nnew\n<!-- x:end -->\ntail\n"},
		{"leaves another campaign's part",
			"<!-- y:begin (make reliability writes this part) -->\nold\n<!-- y:end -->\n",
			"new"},
		{"no file yet", "", "new"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "doc.md")
			if tc.doc != "" {
				if err := os.WriteFile(f, []byte(tc.doc), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := Splice(f, "x", "new"); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(f); string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
