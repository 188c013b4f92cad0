package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/release"
)

// TestRelease: a key made by -genkey signs a release whose index the
// public half verifies; a bad version or no key is refused.
func TestRelease(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "release.key")
	if err := run([]string{"-genkey", key}); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	for _, name := range release.Binaries {
		os.WriteFile(filepath.Join(bin, name), []byte(name), 0o755)
	}
	out := filepath.Join(dir, "dist")
	for _, v := range []string{"1.0.0", "1.0.1"} {
		if err := run([]string{"-version", v, "-key", key, "-bin", bin, "-out", out}); err != nil {
			t.Fatal(err)
		}
	}
	pubText, _ := os.ReadFile(key + ".pub")
	pub, err := release.ParseKey(string(pubText))
	if err != nil {
		t.Fatal(err)
	}
	src, _ := release.OpenSource(out)
	ix, meta, err := src.Index(context.Background(), pub)
	if err != nil || !slices.Equal(ix.Versions(), []string{"1.0.0", "1.0.1"}) || meta.Expires.Sub(meta.Issued) != release.DefaultValidity {
		t.Fatalf("index %v %+v, %v", ix.Versions(), meta, err)
	}
	// -resign with -valid-for: the same index, a new expiry.
	if err := run([]string{"-resign", "-key", key, "-out", out, "-valid-for", "240h"}); err != nil {
		t.Fatal(err)
	}
	if _, meta, err := src.Index(context.Background(), pub); err != nil || meta.Expires.Sub(meta.Issued) != 240*time.Hour {
		t.Fatalf("after -resign: %+v, %v", meta, err)
	}
	if info, _ := os.Stat(key); info.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v", info.Mode())
	}
	for _, bad := range [][]string{{"-version", "v1", "-key", key}, {"-version", "1.0.2"}} {
		if err := run(bad); err == nil || !strings.Contains(err.Error(), "make release") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
