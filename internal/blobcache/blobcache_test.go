package blobcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func TestPutVerifiesAndLeavesNothingOnFailure(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "oci"))
	ctx := context.Background()
	blob := []byte("layer bytes")
	d := digestOf(blob)
	for _, tc := range []struct {
		name   string
		digest string
		size   int64
		data   []byte
		err    error
	}{
		{"wrong bytes", d, int64(len(blob)), []byte("other bytes"), ErrDigestMismatch},
		{"truncated", d, int64(len(blob)), blob[:4], ErrSizeMismatch},
		{"too long", d, 4, blob, ErrSizeMismatch},
		{"hostile digest", "sha256:../../../etc/passwd", 1, blob, ErrBadDigest},
		{"other algorithm", "md5:abc", 1, blob, ErrBadDigest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Put(ctx, tc.digest, tc.size, bytes.NewReader(tc.data), nil)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Put = %v, want %v", err, tc.err)
			}
			entries, _ := os.ReadDir(c.blobDir())
			if len(entries) != 0 {
				t.Fatalf("left behind: %v", entries)
			}
		})
	}
	var seen int64
	if err := c.Put(ctx, d, int64(len(blob)), bytes.NewReader(blob), func(n int64) { seen = n }); err != nil {
		t.Fatal(err)
	}
	if seen != int64(len(blob)) || !c.Has(d, int64(len(blob))) || c.Has(d, 3) {
		t.Fatalf("after Put: progress %d, Has %v", seen, c.Has(d, int64(len(blob))))
	}
	p, _ := c.Path(d)
	if !strings.HasSuffix(p, "/oci/blobs/sha256/"+strings.TrimPrefix(d, "sha256:")) {
		t.Fatalf("path %s", p)
	}
	// Corruption on disk is caught when read.
	if err := os.WriteFile(p, []byte("layer bytez"), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := c.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("reading a corrupted blob = %v", err)
	}
}

func TestPrune(t *testing.T) {
	parent := t.TempDir()
	c := New(filepath.Join(parent, "oci"))
	ctx := context.Background()

	// A cache that was never created is zero, not an error.
	res, err := c.Prune(false)
	if err != nil || res != (PruneResult{}) {
		t.Fatalf("prune of a missing cache = %+v, %v", res, err)
	}

	for _, s := range []string{"one", "two", "three"} {
		if err := c.Put(ctx, digestOf([]byte(s)), -1, strings.NewReader(s), nil); err != nil {
			t.Fatal(err)
		}
	}
	res, err = c.Prune(true)
	if err != nil || res.Blobs != 3 || res.Bytes != 11 {
		t.Fatalf("dry run = %+v, %v", res, err)
	}
	if !c.Has(digestOf([]byte("one")), 3) {
		t.Fatal("dry run removed a blob")
	}
	res, err = c.Prune(false)
	if err != nil || res.Blobs != 3 || res.Bytes != 11 {
		t.Fatalf("prune = %+v, %v", res, err)
	}
	if fi, err := os.Stat(c.Dir()); err != nil || !fi.IsDir() {
		t.Fatalf("cache dir not recreated: %v", err)
	}
	if b, n, _ := c.Usage(); b != 0 || n != 0 {
		t.Fatalf("after prune: %d bytes, %d blobs", b, n)
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 1 {
		t.Fatalf("prune left %v beside the cache", entries)
	}
}

func TestSweep(t *testing.T) {
	parent := t.TempDir()
	c := New(filepath.Join(parent, "oci"))
	os.MkdirAll(c.blobDir(), 0o700)
	os.WriteFile(filepath.Join(c.blobDir(), ".partial-123"), []byte("x"), 0o600)
	os.MkdirAll(filepath.Join(parent, ".oci.pruning-9", "old"), 0o700)
	if err := c.Sweep(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(parent)
	blobs, _ := os.ReadDir(c.blobDir())
	if len(entries) != 1 || len(blobs) != 0 {
		t.Fatalf("after sweep: %v %v", entries, blobs)
	}
}
