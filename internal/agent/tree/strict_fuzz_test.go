package tree

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// FuzzExtractStrict feeds any bytes a guest might send as the tar stream
// of a pull to the host's strict extraction, against a fixed list of what
// the host asked for and a target that already holds files: no panic;
// nothing beside the target changes (a sentinel directory and file next
// to it); no staging is left; and when it succeeds, every path in the
// target is an entry the host asked for (of its type, a file with its
// hash) or was there before.
func FuzzExtractStrict(f *testing.F) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	want := map[string]proto.TreeEntry{
		"a.txt":    {Path: "a.txt", Type: "f", Mode: 0o644, Size: 5, SHA256: sum("hello")},
		"docs/b":   {Path: "docs/b", Type: "f", Mode: 0o600, Size: 3, SHA256: sum("bee")},
		"link":     {Path: "link", Type: "l", Mode: 0o777, Link: "a.txt"},
		"docs/sub": {Path: "docs/sub", Type: "d", Mode: 0o755},
	}
	stream := func(entries ...*tar.Header) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range entries {
			body := ""
			if h.Typeflag == tar.TypeReg {
				body, h.Size = h.Linkname, int64(len(h.Linkname))
				h.Linkname = ""
			}
			_ = tw.WriteHeader(h)
			_, _ = tw.Write([]byte(body))
		}
		_ = tw.Close()
		return b.Bytes()
	}
	// Seeds: what the host asked for, then hostile variants.
	f.Add(stream(
		&tar.Header{Name: "a.txt", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "hello"},
		&tar.Header{Name: "docs/b", Typeflag: tar.TypeReg, Mode: 0o600, Linkname: "bee"},
		&tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "a.txt"},
		&tar.Header{Name: "docs/sub/", Typeflag: tar.TypeDir, Mode: 0o755},
	))
	f.Add(stream(&tar.Header{Name: "../outside/pwned", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "x"}))
	f.Add(stream(&tar.Header{Name: "a.txt", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}))
	f.Add(stream(&tar.Header{Name: "docs", Typeflag: tar.TypeSymlink, Linkname: "../outside"},
		&tar.Header{Name: "docs/b", Typeflag: tar.TypeReg, Mode: 0o600, Linkname: "bee"}))
	f.Add(stream(&tar.Header{Name: ".git/config", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "[core]"}))
	f.Add(stream(&tar.Header{Name: "a.txt", Typeflag: tar.TypeReg, Mode: 0o4755, Linkname: "hello"},
		&tar.Header{Name: "a.txt", Typeflag: tar.TypeReg, Mode: 0o644, Linkname: "hello"}))
	f.Add([]byte("not a tar stream at all"))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		target, outside := filepath.Join(base, "target"), filepath.Join(base, "outside")
		for _, d := range []string{filepath.Join(target, "docs"), outside} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for p, body := range map[string]string{filepath.Join(target, "kept"): "host", filepath.Join(outside, "sentinel"): "untouched"} {
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		before := listing(t, target)
		_, err := Extract(bytes.NewReader(data), proto.PutTreeParams{Dir: target, UID: os.Getuid(), GID: os.Getgid()},
			Local{Want: want, MaxBytes: 1 << 20})
		if got := listing(t, outside); strings.Join(got, ",") != "sentinel" {
			t.Fatalf("beside the target: %v", got)
		}
		if b, _ := os.ReadFile(filepath.Join(outside, "sentinel")); string(b) != "untouched" {
			t.Fatalf("the sentinel changed: %q", b)
		}
		if entries, _ := os.ReadDir(base); len(entries) != 2 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Fatalf("left beside the target: %v (err %v)", names, err)
		}
		if err != nil {
			if got := listing(t, target); strings.Join(got, ",") != strings.Join(before, ",") {
				t.Fatalf("a refused stream changed the target: %v → %v (%v)", before, got, err)
			}
			return
		}
		for _, rel := range listing(t, target) {
			if rel == "kept" || rel == "docs" {
				continue
			}
			w, ok := want[rel]
			if !ok {
				t.Fatalf("extracted %q, which the host did not ask for", rel)
			}
			fi, lerr := os.Lstat(filepath.Join(target, rel))
			if lerr != nil {
				t.Fatal(lerr)
			}
			switch w.Type {
			case "f":
				b, _ := os.ReadFile(filepath.Join(target, rel))
				if !fi.Mode().IsRegular() || sum(string(b)) != w.SHA256 || fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
					t.Fatalf("%s: %v %q", rel, fi.Mode(), b)
				}
			case "l":
				if l, _ := os.Readlink(filepath.Join(target, rel)); fi.Mode()&os.ModeSymlink == 0 || l != w.Link {
					t.Fatalf("%s: %v -> %q", rel, fi.Mode(), l)
				}
			case "d":
				if !fi.IsDir() {
					t.Fatalf("%s: %v", rel, fi.Mode())
				}
			}
		}
	})
}

// listing is every path under dir, relative, sorted.
func listing(t *testing.T, dir string) []string {
	var out []string
	_ = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out
}
