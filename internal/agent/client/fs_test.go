package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/server"
	"github.com/bangerdev/banger/internal/roottest"
)

// TestFS runs every fs operation against the real guest server on a
// directory of this host.
func TestFS(t *testing.T) {
	c := pair(t, &server.Server{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := t.TempDir()
	for name, body := range map[string]string{
		"src/main.go":      "package main\n\nfunc main() { panic(\"TODO\") }\n",
		"src/util/util.go": "package util\n// TODO: more\n",
		"README.md":        "TODO list\n",
		"bin/blob":         "TODO\x00binary",
		".git/config":      "TODO in git\n",
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	fsOp := func(p proto.FSParams) proto.FSResult {
		t.Helper()
		r, err := c.FS(ctx, p)
		if err != nil {
			t.Fatalf("%+v: %v", p, err)
		}
		return r
	}
	paths := func(r proto.FSResult) string {
		var ps []string
		for _, e := range r.Entries {
			ps = append(ps, strings.TrimPrefix(e.Path, root))
		}
		for _, m := range r.Matches {
			ps = append(ps, strings.TrimPrefix(m.Path, root)+":"+string(rune('0'+m.Line)))
		}
		return strings.Join(ps, " ")
	}
	if got := paths(fsOp(proto.FSParams{Op: proto.FSList, Path: root})); got != "/.git /README.md /bin /link /src" {
		t.Errorf("list depth 1 = %s", got)
	}
	r := fsOp(proto.FSParams{Op: proto.FSList, Path: root, Depth: 3, Max: 4})
	if len(r.Entries) != 4 || !r.Truncated {
		t.Errorf("list max 4 = %s, truncated %v", paths(r), r.Truncated)
	}
	if e := fsOp(proto.FSParams{Op: proto.FSStat, Path: root + "/link"}).Entries[0]; e.Type != "l" || e.Link != "/etc/shadow" {
		t.Errorf("stat of a symlink = %+v", e)
	}
	if got := paths(fsOp(proto.FSParams{Op: proto.FSGlob, Path: root + "/**/*.go"})); got != "/src/main.go /src/util/util.go" {
		t.Errorf("glob **/*.go = %s", got)
	}
	if got := paths(fsOp(proto.FSParams{Op: proto.FSGlob, Path: root + "/src/*.go"})); got != "/src/main.go" {
		t.Errorf("glob src/*.go = %s", got)
	}
	// Search: text files only, .git left out, include filters names.
	if got := paths(fsOp(proto.FSParams{Op: proto.FSSearch, Path: root, Pattern: "TODO"})); got != "/README.md:1 /src/main.go:3 /src/util/util.go:2" {
		t.Errorf("search TODO = %s", got)
	}
	if got := paths(fsOp(proto.FSParams{Op: proto.FSSearch, Path: root, Pattern: "TODO", Include: "*.go", Max: 1})); got != "/src/main.go:3" {
		t.Errorf("search *.go max 1 = %s", got)
	}
	if _, err := c.FS(ctx, proto.FSParams{Op: proto.FSSearch, Path: root, Pattern: "("}); err == nil {
		t.Error("a bad regular expression was taken")
	}
	fsOp(proto.FSParams{Op: proto.FSMkdir, Path: root + "/a/b/c"})
	fsOp(proto.FSParams{Op: proto.FSMove, Path: root + "/README.md", To: root + "/a/b/c/README.md"})
	if _, err := os.Stat(root + "/a/b/c/README.md"); err != nil {
		t.Errorf("move: %v", err)
	}
	if _, err := c.FS(ctx, proto.FSParams{Op: proto.FSRemove, Path: root + "/a"}); err == nil {
		t.Error("a non-empty directory was removed without recursive")
	}
	fsOp(proto.FSParams{Op: proto.FSRemove, Path: root + "/a", Recursive: true})
	if _, err := os.Stat(root + "/a"); !os.IsNotExist(err) {
		t.Errorf("remove -r left %v", err)
	}
	if _, err := c.FS(ctx, proto.FSParams{Op: proto.FSStat, Path: "relative"}); err == nil {
		t.Error("a relative path was taken")
	}

	// Reads by range; writes with parents and a mode.
	var b bytes.Buffer
	fr, err := c.ReadFileRange(ctx, proto.FileParams{Path: root + "/src/main.go", Offset: 13, Limit: 5}, &b)
	if err != nil || b.String() != "\nfunc" || fr.Total != 44 || fr.Size != 5 {
		t.Errorf("read range = %q, %+v, %v", b.String(), fr, err)
	}
	if _, err := c.WriteFileWith(ctx, proto.FileParams{Path: root + "/new/dir/f.sh", Mode: 0o755, Parents: true}, strings.NewReader("#!/bin/sh\n")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(root + "/new/dir/f.sh"); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("written with parents: %v, %v", fi, err)
	}
}

// TestCheckFS: what a hostile guest might answer, refused.
func TestCheckFS(t *testing.T) {
	list := proto.FSParams{Op: proto.FSList, Path: "/work", Max: 2}
	ok := proto.FSEntry{Path: "/work/a", Type: "f", Mode: 0o644}
	for _, tc := range []struct {
		name string
		p    proto.FSParams
		r    proto.FSResult
	}{
		{"more entries than asked", list, proto.FSResult{Entries: []proto.FSEntry{ok, ok, ok}}},
		{"a path outside", list, proto.FSResult{Entries: []proto.FSEntry{{Path: "/etc/shadow", Type: "f"}}}},
		{"a relative path", list, proto.FSResult{Entries: []proto.FSEntry{{Path: "work/a", Type: "f"}}}},
		{"a path with ..", list, proto.FSResult{Entries: []proto.FSEntry{{Path: "/work/../etc", Type: "f"}}}},
		{"a sibling by prefix", list, proto.FSResult{Entries: []proto.FSEntry{{Path: "/workshop/x", Type: "f"}}}},
		{"an unknown type", list, proto.FSResult{Entries: []proto.FSEntry{{Path: "/work/a", Type: "x"}}}},
		{"a negative size", list, proto.FSResult{Entries: []proto.FSEntry{{Path: "/work/a", Type: "f", Size: -1}}}},
		{"a huge path", list, proto.FSResult{Entries: []proto.FSEntry{{Path: "/work/" + strings.Repeat("a", 5000), Type: "f"}}}},
		{"matches in a listing", list, proto.FSResult{Matches: []proto.FSMatch{{Path: "/work/a", Line: 1}}}},
		{"two entries for a stat", proto.FSParams{Op: proto.FSStat, Path: "/work/a"}, proto.FSResult{Entries: []proto.FSEntry{ok, ok}}},
		{"a long line", proto.FSParams{Op: proto.FSSearch, Path: "/work"}, proto.FSResult{Matches: []proto.FSMatch{{Path: "/work/a", Line: 1, Text: strings.Repeat("x", 3000)}}}},
		{"line 0", proto.FSParams{Op: proto.FSSearch, Path: "/work"}, proto.FSResult{Matches: []proto.FSMatch{{Path: "/work/a", Line: 0}}}},
		{"an answer to a mkdir", proto.FSParams{Op: proto.FSMkdir, Path: "/work"}, proto.FSResult{Entries: []proto.FSEntry{ok}}},
		{"an owner with a newline", list, proto.FSResult{Entries: []proto.FSEntry{{Path: "/work/a", Type: "f", Owner: "root\nx"}}}},
		{"a group of 40 bytes", list, proto.FSResult{Entries: []proto.FSEntry{{Path: "/work/a", Type: "f", Group: strings.Repeat("g", 40)}}}},
		{"an owner like an option", list, proto.FSResult{Entries: []proto.FSEntry{{Path: "/work/a", Type: "f", Owner: "-root"}}}},
	} {
		if err := client.CheckFS(tc.p, tc.r); !errors.Is(err, proto.ErrFrame) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if err := client.CheckFS(list, proto.FSResult{Entries: []proto.FSEntry{ok}}); err != nil {
		t.Errorf("a good answer: %v", err)
	}
}

// FuzzCheckFS: whatever JSON a guest answers, CheckFS does not panic, and
// what it accepts keeps its bounds.
func FuzzCheckFS(f *testing.F) {
	f.Add("list", "/work", 2, []byte(`{"entries":[{"path":"/work/a","type":"f","mode":420}]}`))
	f.Add("search", "/", 0, []byte(`{"matches":[{"path":"/a","line":3,"text":"x"}]}`))
	f.Add("stat", "/a", 0, []byte(`{"entries":[{"path":"/a","type":"l","link":"/etc"}]}`))
	f.Fuzz(func(t *testing.T, op, p string, max int, answer []byte) {
		var r proto.FSResult
		if json.Unmarshal(answer, &r) != nil {
			return
		}
		q := proto.FSParams{Op: op, Path: p, Max: max}
		if client.CheckFS(q, r) != nil {
			return
		}
		if len(r.Entries) > client.MaxFSEntries || len(r.Matches) > client.MaxFSEntries {
			t.Fatalf("accepted %d entries, %d matches", len(r.Entries), len(r.Matches))
		}
		for _, e := range r.Entries {
			if !strings.HasPrefix(e.Path, "/") || strings.Contains(e.Path, "/../") || e.Size < 0 {
				t.Fatalf("accepted entry %+v", e)
			}
		}
	})
}

// TestOwner: what write_file and mkdir make for a named user is that
// user's (the file and each directory made, not one that was there); an
// unknown user makes nothing.
func TestOwner(t *testing.T) {
	roottest.Require(t, "it gives files to another user")
	c := pair(t, &server.Server{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := t.TempDir()
	owner := func(p string) uint32 {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Uid
	}
	const nobody = 65534 // Debian's nobody, in this host's /etc/passwd
	f := filepath.Join(root, "a", "b", "f.txt")
	if _, err := c.WriteFileWith(ctx, proto.FileParams{Path: f, Parents: true, Owner: "nobody"}, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f, filepath.Dir(f), filepath.Join(root, "a")} {
		if u := owner(p); u != nobody {
			t.Errorf("%s is uid %d's, want nobody's", p, u)
		}
	}
	if u := owner(root); u != 0 {
		t.Errorf("the directory that was there became uid %d's", u)
	}
	d := filepath.Join(root, "c", "d")
	if _, err := c.FS(ctx, proto.FSParams{Op: proto.FSMkdir, Path: d, Owner: "nobody"}); err != nil {
		t.Fatal(err)
	}
	// Entries name their owner and group by the passwd and group files.
	st, err := c.FS(ctx, proto.FSParams{Op: proto.FSStat, Path: d})
	if err != nil || st.Entries[0].Owner != "nobody" || st.Entries[0].Group != "nogroup" {
		t.Fatalf("stat of nobody's directory: %+v, %v", st, err)
	}
	ls, err := c.FS(ctx, proto.FSParams{Op: proto.FSList, Path: root, Depth: 1})
	if err != nil || len(ls.Entries) == 0 || ls.Entries[0].Owner == "" {
		t.Fatalf("list: %+v, %v", ls, err)
	}
	if u := owner(d); u != nobody {
		t.Errorf("mkdir's %s is uid %d's", d, u)
	}
	g := filepath.Join(root, "e", "g.txt")
	if _, err := c.WriteFileWith(ctx, proto.FileParams{Path: g, Parents: true, Owner: "no-such-user"}, strings.NewReader("x")); err == nil {
		t.Error("a write for an unknown user succeeded")
	}
	if _, err := os.Lstat(filepath.Dir(g)); err == nil {
		t.Error("a write for an unknown user made its parent")
	}
}
