package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
)

const hexSum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestParseSums(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     []string // versions, nil for an error
	}{
		{"two", hexSum + "  banger-1.0.0-linux-amd64.tar.gz\n" + hexSum + " *banger-1.1.0-rc.1-linux-amd64.tar.gz\n", []string{"1.0.0", "1.1.0-rc.1"}},
		{"blank lines", "\n" + hexSum + "  banger-2.0.0-linux-amd64.tar.gz\n\n", []string{"2.0.0"}},
		{"empty", "", nil},
		{"another file", hexSum + "  evil.sh\n", nil},
		{"a path", hexSum + "  ../banger-1.0.0-linux-amd64.tar.gz\n", nil},
		{"a version that climbs", hexSum + "  banger-../../x-linux-amd64.tar.gz\n", nil},
		{"a version with escapes", hexSum + "  banger-1.0.0-\x1b[2J-linux-amd64.tar.gz\n", nil},
		{"a short sum", "abc  banger-1.0.0-linux-amd64.tar.gz\n", nil},
		{"upper-case hex", strings.ToUpper(hexSum) + "  banger-1.0.0-linux-amd64.tar.gz\n", nil},
		{"twice", hexSum + "  banger-1.0.0-linux-amd64.tar.gz\n" + hexSum + "  banger-1.0.0-linux-amd64.tar.gz\n", nil},
		{"too big", strings.Repeat("x", MaxSums+1), nil},
	} {
		ix, err := ParseSums([]byte(c.in))
		if c.want == nil {
			if err == nil {
				t.Errorf("%s: parsed %v", c.name, ix)
			}
			continue
		}
		if err != nil || !slices.Equal(ix.Versions(), c.want) {
			t.Errorf("%s: %v, %v", c.name, ix.Versions(), err)
		}
	}
	ix, _ := ParseSums([]byte(hexSum + "  banger-1.10.0-linux-amd64.tar.gz\n" + hexSum + "  banger-1.9.0-linux-amd64.tar.gz\n" +
		hexSum + "  banger-1.10.0-rc.1-linux-amd64.tar.gz\n"))
	if l := ix.Latest(); l.Version != "1.10.0" {
		t.Errorf("latest %s", l.Version)
	}
	back, err := ParseSums(ix.Bytes())
	if err != nil || !slices.Equal(back.Versions(), []string{"1.9.0", "1.10.0-rc.1", "1.10.0"}) {
		t.Errorf("written and read back: %v, %v", back.Versions(), err)
	}
}

func binaries(t *testing.T, content string) string {
	dir := t.TempDir()
	for _, name := range Binaries {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content+" "+name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A published directory is a source: signed, served over HTTP on
// loopback, checked; another key's signature and a changed tarball are
// refused.
func TestPublish(t *testing.T) {
	pub, key, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _, _ := minisign.GenerateKey(rand.Reader)
	out := t.TempDir()
	for _, v := range []string{"1.0.0", "1.1.0", "1.1.0"} { // the second 1.1.0 replaces the first
		if err := Publish(binaries(t, v), out, v, key, DefaultValidity); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(out)))
	defer srv.Close()
	ctx := context.Background()
	for _, from := range []string{out, srv.URL, srv.URL + "/", filepath.Join(out, TarballName("1.1.0"))} {
		src, err := OpenSource(from)
		if err != nil {
			t.Fatal(err)
		}
		ix, meta, err := src.Index(ctx, pub)
		if err != nil || !slices.Equal(ix.Versions(), []string{"1.0.0", "1.1.0"}) {
			t.Fatalf("%s: index %v, %v", from, ix.Versions(), err)
		}
		if time.Since(meta.Issued) > time.Minute || meta.Expires.Sub(meta.Issued) != DefaultValidity {
			t.Fatalf("%s: the signature vouches for %+v", from, meta)
		}
		tarball, err := src.Tarball(ctx, ix.Latest())
		if err != nil {
			t.Fatalf("%s: %v", from, err)
		}
		dir := t.TempDir()
		if err := Unpack(tarball, dir); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "bangerd")); string(b) != "1.1.0 bangerd" {
			t.Fatalf("unpacked bangerd %q", b)
		}
		if _, _, err := src.Index(ctx, otherPub); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("%s: another key's index = %v", from, err)
		}
	}
	tarball := filepath.Join(out, TarballName("1.0.0"))
	b, _ := os.ReadFile(tarball)
	b[100] ^= 0xff
	os.WriteFile(tarball, b, 0o644)
	src, _ := OpenSource(srv.URL)
	ix, _, _ := src.Index(ctx, pub)
	e, _ := ix.Find("1.0.0")
	if _, err := src.Tarball(ctx, e); !errors.Is(err, ErrBadChecksum) {
		t.Fatalf("a changed tarball = %v", err)
	}
	// A source that sends without end is cut at the bound.
	endless := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("0"), 64<<10)
		for range (MaxSums / len(chunk)) + 2 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer endless.Close()
	src, _ = OpenSource(endless.URL)
	if _, _, err := src.Index(ctx, pub); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("an endless index = %v", err)
	}
	if _, err := OpenSource(filepath.Join(out, "nothing-here")); err == nil || !strings.Contains(err.Error(), "update_url") {
		t.Fatalf("a source that is not there = %v", err)
	}
}

func tarball(t testing.TB, entries ...[3]string) []byte { // name, type, content
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e[0], Mode: 0o755, Size: int64(len(e[2])), Typeflag: tar.TypeReg}
		switch e[1] {
		case "dir":
			h.Typeflag, h.Size = tar.TypeDir, 0
		case "symlink":
			h.Typeflag, h.Size, h.Linkname = tar.TypeSymlink, 0, e[2]
		case "hardlink":
			h.Typeflag, h.Size, h.Linkname = tar.TypeLink, 0, e[2]
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e[2]))
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestUnpack(t *testing.T) {
	good := [][3]string{{"banger-1.0.0", "dir", ""}, {"banger-1.0.0/banger", "", "a"}, {"banger-1.0.0/bangerd", "", "b"}, {"banger-1.0.0/banger-agent", "", "c"}}
	for _, c := range []struct {
		name    string
		entries [][3]string
		say     string
	}{
		{"good", good, ""},
		{"flat", [][3]string{{"banger", "", "a"}, {"bangerd", "", "b"}, {"banger-agent", "", "c"}}, ""},
		{"one missing", good[:3], "it has no banger-agent"},
		{"another file", append(slices.Clone(good), [3]string{"banger-1.0.0/install.sh", "", "rm -rf /"}), "is none of"},
		{"climbing", [][3]string{{"../../bin/banger", "", "a"}}, "not NAME or DIR/NAME"},
		{"absolute", [][3]string{{"/usr/bin/banger", "", "a"}}, "not NAME or DIR/NAME"},
		{"deep", [][3]string{{"a/b/banger", "", "a"}}, "not NAME or DIR/NAME"},
		{"a symlink", [][3]string{{"banger", "symlink", "/etc/shadow"}}, "not a regular file"},
		{"a hard link", [][3]string{{"banger", "hardlink", "/etc/shadow"}}, "not a regular file"},
		{"a directory named as a binary", [][3]string{{"banger", "dir", ""}}, "not a regular file"},
		{"twice", append(slices.Clone(good), [3]string{"banger", "", "x"}), "banger twice"},
	} {
		dir := t.TempDir()
		err := Unpack(tarball(t, c.entries...), dir)
		left, _ := os.ReadDir(dir)
		if c.say == "" {
			if err != nil || len(left) != 3 {
				t.Errorf("%s: %v, %d files", c.name, err, len(left))
			}
			continue
		}
		if !errors.Is(err, ErrBadTarball) || !strings.Contains(err.Error(), c.say) {
			t.Errorf("%s: %v; want %q", c.name, err, c.say)
		}
		if len(left) != 0 {
			t.Errorf("%s: %d files left", c.name, len(left))
		}
	}
	if err := Unpack([]byte("not gzip"), t.TempDir()); !errors.Is(err, ErrBadTarball) {
		t.Errorf("not gzip: %v", err)
	}
}

func FuzzParseSums(f *testing.F) {
	f.Add([]byte(hexSum + "  banger-1.0.0-linux-amd64.tar.gz\n"))
	f.Add([]byte(hexSum + " *banger-1.0.0-rc.1-linux-amd64.tar.gz\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := ParseSums(b)
		if err != nil {
			return
		}
		for _, e := range ix {
			if !ValidVersion(e.Version) || e.File != TarballName(e.Version) || strings.ContainsAny(e.File, "/\x00") {
				t.Fatalf("entry %+v", e)
			}
		}
		if _, err := ParseSums(ix.Bytes()); err != nil {
			t.Fatalf("written back: %v", err)
		}
	})
}

func FuzzUnpack(f *testing.F) {
	f.Add(tarball(f, [3]string{"banger", "", "a"}, [3]string{"bangerd", "", "b"}, [3]string{"banger-agent", "", "c"}))
	f.Add(tarball(f, [3]string{"../banger", "symlink", "/x"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "out")
		os.Mkdir(dir, 0o755)
		err := Unpack(b, dir)
		left, _ := os.ReadDir(dir)
		if err != nil && len(left) != 0 || err == nil && len(left) != len(Binaries) {
			t.Fatalf("%v with %d files", err, len(left))
		}
		for _, e := range left {
			if !slices.Contains(Binaries, e.Name()) || !e.Type().IsRegular() {
				t.Fatalf("wrote %s (%v)", e.Name(), e.Type())
			}
		}
		if others, _ := os.ReadDir(parent); len(others) != 1 {
			t.Fatalf("wrote beside the directory: %d entries", len(others))
		}
	})
}

// TestIndexMeta: the signature vouches for the index's issue time and
// expiry; an expired index, one issued before the newest already seen,
// one whose times were changed (the signature breaks) and one signed
// without them are each refused, naming why.
func TestIndexMeta(t *testing.T) {
	pub, key, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sums := []byte(fmt.Sprintf("%064x  %s\n", 1, TarballName("1.0.0")))
	issued := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	sig := Sign(key, sums, issued, 30*24*time.Hour)
	m, err := Verify(pub, sums, sig)
	if err != nil || !m.Issued.Equal(issued) || !m.Expires.Equal(issued.Add(30*24*time.Hour)) {
		t.Fatalf("Verify = %+v, %v", m, err)
	}
	if err := m.Check(issued.Add(time.Hour), time.Time{}); err != nil {
		t.Fatalf("a fresh index: %v", err)
	}
	if err := m.Check(issued.Add(31*24*time.Hour), time.Time{}); !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "expired at 2026-12-31") {
		t.Fatalf("an expired index: %v", err)
	}
	if err := m.Check(issued.Add(time.Hour), issued.Add(time.Minute)); !errors.Is(err, ErrStale) || !strings.Contains(err.Error(), "holding updates back") {
		t.Fatalf("an index older than the mark: %v", err)
	}
	// The times are inside the signature: changed, it no longer verifies.
	forged := bytes.Replace(sig, []byte("expires=2026-12-31"), []byte("expires=2099-12-31"), 1)
	if bytes.Equal(forged, sig) {
		t.Fatal("the signature does not carry the expiry")
	}
	if _, err := Verify(pub, sums, forged); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("a signature whose expiry was changed: %v", err)
	}
	// Signed the old way, without times: refused with the fix.
	old := minisign.SignWithComments(key, sums, "banger release index", "")
	if _, err := Verify(pub, sums, old); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "-resign") {
		t.Fatalf("an index signed without times: %v", err)
	}
	// Resign gives a published index a new issue time.
	out := t.TempDir()
	if err := Publish(binaries(t, "1.0.0"), out, "1.0.0", key, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := Resign(out, key, 48*time.Hour); err != nil {
		t.Fatal(err)
	}
	src, _ := OpenSource(out)
	if _, m, err := src.Index(context.Background(), pub); err != nil || m.Expires.Sub(m.Issued) != 48*time.Hour {
		t.Fatalf("after Resign: %+v, %v", m, err)
	}
}

// TestFetchDeadlines: a source that accepts and never answers, one that
// answers its headers and then drips, and one that never accepts each
// end within their deadline, naming it.
func TestFetchDeadlines(t *testing.T) {
	d := Deadlines{Connect: time.Second, Header: time.Second, Index: 2 * time.Second, Tarball: 2 * time.Second}
	hang := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang }))
	defer silent.Close()
	drip := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		for {
			if _, err := w.Write([]byte("0")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-time.After(100 * time.Millisecond):
			case <-r.Context().Done():
				return
			case <-hang:
				return
			}
		}
	}))
	defer drip.Close()
	defer close(hang) // first of the three: the servers' Close waits for their handlers
	for _, tc := range []struct{ name, url, want string }{
		{"no headers", silent.URL, "timeout awaiting response headers"},
		{"a drip", drip.URL, "not done within 2s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := OpenSourceWith(tc.url, d)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, _, err = src.Index(context.Background(), Key{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Index = %v, want an error naming %q", err, tc.want)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("took %s", took)
			}
		})
	}
}
