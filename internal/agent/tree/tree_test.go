package tree

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/agent/proto"
)

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
		if _, err := Extract(tc.r, proto.PutTreeParams{Dir: tc.dir, UID: os.Getuid(), GID: os.Getgid()}, Local{}); err == nil {
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

// TestEntryInNeverFollows: hashing the host's side reads nothing below a
// symlink or a file, however the path was named.
func TestEntryInNeverFollows(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	for p, body := range map[string]string{filepath.Join(outside, "secret"): "s", filepath.Join(root, "d", "f"): "ok", filepath.Join(root, "file"): "x"} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(root, "l")); err != nil {
		t.Fatal(err)
	}
	checked := map[string]bool{}
	for _, rel := range []string{"l/secret", "file/x", "missing/f"} {
		if e, err := EntryIn(root, rel, checked); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("EntryIn(%s) = %+v, %v; want not found", rel, e, err)
		}
	}
	if e, err := EntryIn(root, "d/f", checked); err != nil || e.Type != "f" || e.Size != 2 {
		t.Errorf("EntryIn(d/f) = %+v, %v", e, err)
	}
	if _, err := EntryIn(root, "../x", checked); err == nil {
		t.Error("EntryIn took ../x")
	}
}
