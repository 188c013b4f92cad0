package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/agent/proto"
)

func tarOf(t *testing.T, files map[string]string, extra ...*tar.Header) ([]byte, map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	sums := map[string]string{}
	for _, name := range []string{"a.txt", "dir/b.sh", "dir/sub/c"} {
		body, ok := files[name]
		if !ok {
			continue
		}
		mode := int64(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		sum := sha256.Sum256([]byte(body))
		sums[name] = hex.EncodeToString(sum[:])
		want := sums[name]
		if bad, ok := files["!"+name]; ok { // the sender's claim, for a damaged transfer
			want = bad
		}
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: tar.TypeReg,
			PAXRecords: map[string]string{proto.PAXSHA256: want}, Format: tar.FormatPAX})
		_, _ = tw.Write([]byte(body))
	}
	for _, h := range extra {
		_ = tw.WriteHeader(h)
	}
	tw.Close()
	return buf.Bytes(), sums
}

func TestTreeRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ws")
	c := pair(t, &Server{})
	ctx := context.Background()
	files := map[string]string{"a.txt": "alpha\n", "dir/b.sh": "#!/bin/sh\necho hi\n", "dir/sub/c": "c"}
	data, sums := tarOf(t, files, &tar.Header{Name: "link", Linkname: "a.txt", Typeflag: tar.TypeSymlink})
	r, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir, UID: os.Getuid(), GID: os.Getgid(), Entries: 4}, bytes.NewReader(data))
	if err != nil || r.Files != 3 {
		t.Fatalf("PutTree = %+v, %v", r, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "dir/b.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("b.sh: %v %v", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "link")); err != nil || l != "a.txt" {
		t.Fatalf("link: %q %v", l, err)
	}
	m, err := c.Manifest(ctx, proto.ManifestParams{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range m {
		got[e.Path] = e.Type + " " + e.SHA256 + e.Link
	}
	if got["a.txt"] != "f "+sums["a.txt"] || got["link"] != "l a.txt" || got["dir/sub"] != "d " {
		t.Fatalf("manifest = %v", got)
	}
	var out bytes.Buffer
	if _, err := c.GetTree(ctx, dir, []string{"a.txt", "dir/b.sh", "link"}, &out); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&out)
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if strings.Join(names, ",") != "a.txt,dir/b.sh,link" {
		t.Fatalf("GetTree entries = %v", names)
	}

	// A damaged file, a path out of the tree, a stream cut short: each
	// fails and changes nothing.
	before, _ := os.ReadFile(filepath.Join(dir, "a.txt"))
	bad, _ := tarOf(t, map[string]string{"a.txt": "changed", "!a.txt": sums["a.txt"]})
	if _, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir, Entries: 1}, bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a damaged file: %v", err)
	}
	// The same, claimed in WriteTree's closing global header.
	var claimedBad bytes.Buffer
	if _, err := WriteTree(&claimedBad, TreeSpec{Dir: dir, Paths: []string{"a.txt"}, Hashes: map[string]string{"a.txt": strings.Repeat("0", 64)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir + "2", Entries: 1}, &claimedBad); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a file whose closing hash is wrong: %v", err)
	}
	escape, _ := tarOf(t, nil, &tar.Header{Name: "../evil", Typeflag: tar.TypeReg})
	if _, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir}, bytes.NewReader(escape)); err == nil {
		t.Fatal("a path out of the tree was taken")
	}
	short, _ := tarOf(t, map[string]string{"a.txt": "changed"})
	if _, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir, Entries: 2}, bytes.NewReader(short)); err == nil || !strings.Contains(err.Error(), "cut off") {
		t.Fatalf("a cut tree: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "a.txt")); !bytes.Equal(before, after) {
		t.Fatalf("a failed put changed a.txt to %q", after)
	}
	if stale, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), ".banger-stage-*")); len(stale) != 0 {
		t.Fatalf("staging left: %v", stale)
	}
	// A PAXDelete header removes, after the new entries land.
	hdr, err := DeleteHeader([]string{"dir/sub/c"})
	if err != nil {
		t.Fatal(err)
	}
	empty, _ := tarOf(t, nil)
	if _, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir}, bytes.NewReader(append(hdr, empty...))); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dir/sub/c")); !os.IsNotExist(err) {
		t.Fatalf("deleted file: %v", err)
	}
	if _, err := DeleteHeader([]string{"../etc/passwd"}); err == nil {
		t.Fatal("a delete out of the tree was taken")
	}
}

// FuzzCleanRel: whatever a peer names, an accepted path stays inside.
func FuzzCleanRel(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "/etc/passwd", "a/../../b", "a//b", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rel, err := CleanRel(p)
		if err != nil {
			return
		}
		joined := filepath.Join("/root/ws", rel)
		if !strings.HasPrefix(joined, "/root/ws/") {
			t.Fatalf("%q escapes to %q", p, joined)
		}
	})
}

// TestExtractRefusesSymlinkTraversal: a stream (from a guest, on a pull)
// cannot write or delete through a symlink, its own or one already in
// the target tree.
func TestExtractRefusesSymlinkTraversal(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.MkdirAll(filepath.Join(outside, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	stream := func(headers ...*tar.Header) *bytes.Reader {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range headers {
			_ = tw.WriteHeader(h)
			if h.Size > 0 {
				_, _ = tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
			}
		}
		tw.Close()
		return bytes.NewReader(b.Bytes())
	}
	file := func(name string) *tar.Header {
		return &tar.Header{Name: name, Size: 1, Mode: 0o644, Typeflag: tar.TypeReg}
	}
	link := &tar.Header{Name: "a", Linkname: outside, Typeflag: tar.TypeSymlink}
	existing := filepath.Join(base, "existing")
	if err := os.MkdirAll(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(existing, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(existing, "keep"), nil, 0o644); err != nil { // not empty: entries rename one by one
		t.Fatal(err)
	}
	del, _ := DeleteHeader([]string{"a/victim"})
	for _, tc := range []struct {
		name string
		dir  string
		r    io.Reader
	}{
		{"its own symlink, then a file below", filepath.Join(base, "t1"), stream(link, file("a/victim"))},
		{"its own symlink, then a dir below", filepath.Join(base, "t2"), stream(link, &tar.Header{Name: "a/sub/", Mode: 0o755, Typeflag: tar.TypeDir}, file("a/sub/x"))},
		{"a symlink already in the tree", existing, stream(file("a/victim"))},
		{"a symlink already in the tree, deeper", existing, stream(file("a/sub/new"))},
		{"a delete through a symlink", existing, io.MultiReader(bytes.NewReader(del), stream())},
	} {
		if _, err := ExtractTree(tc.r, proto.PutTreeParams{Dir: tc.dir, UID: os.Getuid(), GID: os.Getgid()}, Local{}); err == nil {
			t.Errorf("%s: taken", tc.name)
		}
		if b, err := os.ReadFile(filepath.Join(outside, "victim")); err != nil || string(b) != "keep" {
			t.Fatalf("%s: the file outside became %q, %v", tc.name, b, err)
		}
		if entries, _ := os.ReadDir(filepath.Join(outside, "sub")); len(entries) != 0 {
			t.Fatalf("%s: wrote %v outside", tc.name, entries)
		}
	}
}
