// Package report writes the reliability campaign's figures into
// docs/RELIABILITY.md: each campaign owns a part between two markers and
// replaces only that part, so the prose around it stays as written.
package report

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Splice replaces the part of file between name's markers with text. A
// file without the markers is written whole with text, so a report
// aimed at a scratch file still lands somewhere readable.
func Splice(file, name, text string) error {
	begin, end := "<!-- "+name+":begin (make reliability writes this part) -->", "<!-- "+name+":end -->"
	b, err := os.ReadFile(file)
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if err != nil || i < 0 || j < i {
		return os.WriteFile(file, []byte(text), 0o644)
	}
	doc = doc[:i+len(begin)] + "\n" + text + "\n" + doc[j:]
	return os.WriteFile(file, []byte(doc), 0o644)
}

// Context says when and on what a campaign ran: the date, the commit
// (and whether the tree differed from it) and the cores, followed by
// what the caller adds (the accelerator, say).
func Context(extra string) string {
	commit := "unknown commit"
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = "commit " + strings.TrimSpace(string(out))
		// The report itself is written as the campaign goes: its own
		// changes are not the tree's.
		if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/RELIABILITY.md").Output(); err == nil && len(out) > 0 {
			commit += " with local changes"
		}
	}
	s := fmt.Sprintf("Run at %s on %s, %d cores", time.Now().UTC().Format("2006-01-02"), commit, runtime.NumCPU())
	if extra != "" {
		s += ", " + extra
	}
	return s
}
