package tree

import (
	"archive/tar"
	"bytes"
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

// TestCacheLearnsFromExtract: a put into an empty directory teaches the
// cache each file's hash (a planted one shows the listing after did not
// read it again); files written within the racy window before the put
// ended are not learned; a file changed after the put is read again.
func TestCacheLearnsFromExtract(t *testing.T) {
	put := func(c *Cache, dir string, files map[string]string) {
		t.Helper()
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for name, body := range files {
			if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
				t.Fatal(err)
			}
			tw.Write([]byte(body))
		}
		tw.Close()
		if _, err := Extract(&buf, proto.PutTreeParams{Dir: dir, UID: os.Getuid(), GID: os.Getgid()}, Local{Cache: c}); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{"a": "alpha", "sub/b": "bravo"}

	// Learned: the clock says the put is long over.
	dir := filepath.Join(t.TempDir(), "ws")
	clock := time.Now().Add(time.Hour)
	c := &Cache{Now: func() time.Time { return clock }}
	put(c, dir, files)
	if c.Len() != 2 {
		t.Fatalf("the cache learned %d files from a put of 2", c.Len())
	}
	for rel := range files {
		st := c.roots[dir][rel]
		st.hash = "planted"
		c.roots[dir][rel] = st
	}
	got, err := c.Manifest(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range got {
		if e.Type == "file" && e.SHA256 != "planted" {
			t.Fatalf("%s was read again after the put: %+v", e.Path, e)
		}
	}
	// Changed after the put: read again.
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("ALPHA"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, _ = c.Manifest(dir, nil)
	for _, e := range got {
		if e.Path == "a" && e.SHA256 == "planted" {
			t.Fatal("a file changed after the put kept its learned hash")
		}
	}

	// Racy: the put just ended, nothing is learned.
	dir = filepath.Join(t.TempDir(), "ws")
	c = &Cache{}
	put(c, dir, files)
	if c.Len() != 0 {
		t.Fatalf("a put that just ended taught %d hashes", c.Len())
	}

}
