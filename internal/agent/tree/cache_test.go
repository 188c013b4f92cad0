package tree

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// TestCache: an unchanged file's hash comes from the cache (a planted
// one shows it was not read again); a change of content, even one
// whose size and mtime were put back, is hashed again (its ctime moved);
// a file changed just before the scan is not kept (racy-clean); a file
// gone is forgotten; manifests match the uncached ones throughout.
func TestCache(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "alpha")
	write("b", "bravo")
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("d/c", "charlie")
	clock := time.Now().Add(time.Hour) // every file long unchanged
	c := &Cache{Now: func() time.Time { return clock }}
	manifest := func() map[string]proto.TreeEntry {
		t.Helper()
		got, err := c.Manifest(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := Manifest(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]proto.TreeEntry{}
		for _, e := range got {
			out[e.Path] = e
		}
		for _, e := range plain {
			if g := out[e.Path]; g.SHA256 != e.SHA256 && g.SHA256 != "planted" {
				t.Errorf("%s: cached %s, read %s", e.Path, g.SHA256, e.SHA256)
			}
		}
		return out
	}
	first := manifest()
	if len(first) != 4 || len(c.roots[dir]) != 3 {
		t.Fatalf("first manifest %v; cache %v", first, c.roots[dir])
	}
	plant := func(rel string) {
		st := c.roots[dir][rel]
		st.hash = "planted"
		c.roots[dir][rel] = st
	}
	plant("a")
	plant("d/c")
	if got := manifest(); got["a"].SHA256 != "planted" || got["d/c"].SHA256 != "planted" {
		t.Fatalf("unchanged files were read again: %v", got)
	}

	// Changed behind the cache's back: same size, mtime put back.
	info, err := os.Stat(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	write("a", "ALPHA")
	if err := os.Chtimes(filepath.Join(dir, "a"), info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	if got := manifest(); got["a"].SHA256 == "planted" || got["a"].SHA256 == first["a"].SHA256 {
		t.Fatalf("a file changed with its size and mtime kept: %s", got["a"].SHA256)
	}

	// Racy-clean: the scan begins within the window of a change.
	clock = time.Now()
	write("b", "BRAVO")
	if got := manifest(); got["b"].SHA256 == first["b"].SHA256 {
		t.Fatal("a changed file kept its old hash")
	}
	if _, kept := c.roots[dir]["b"]; kept {
		t.Error("a file changed just before the scan was cached")
	}

	if err := os.Remove(filepath.Join(dir, "d/c")); err != nil {
		t.Fatal(err)
	}
	manifest()
	if _, kept := c.roots[dir]["d/c"]; kept {
		t.Error("a removed file is still cached")
	}
}

// TestCacheBounds: past its trees, a cache forgets others to hold the
// newest, and counts what it holds.
func TestCacheBounds(t *testing.T) {
	c := &Cache{Now: func() time.Time { return time.Now().Add(time.Hour) }}
	for i := range cacheRoots + 3 {
		dir := t.TempDir()
		for _, n := range []string{"x", "y"} {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Manifest(dir, nil); err != nil {
			t.Fatal(err)
		}
		if _, ok := c.roots[dir]; !ok {
			t.Fatalf("tree %d was not kept", i)
		}
	}
	if len(c.roots) > cacheRoots || c.Len() != 2*len(c.roots) {
		t.Fatalf("%d trees, %d files held", len(c.roots), c.Len())
	}
}
