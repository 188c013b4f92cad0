package sshkey

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestKeyPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etc/banger/key")
	a, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreate(path)
	if err != nil || !bytes.Equal(a.PublicKey().Marshal(), b.PublicKey().Marshal()) {
		t.Fatalf("second load gave another key (%v)", err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("host key mode %v", fi.Mode())
	}
	os.WriteFile(path, []byte("garbage"), 0o600)
	if c, err := LoadOrCreate(path); err != nil || bytes.Equal(c.PublicKey().Marshal(), a.PublicKey().Marshal()) {
		t.Fatalf("a damaged key was not replaced: %v", err)
	}
}
