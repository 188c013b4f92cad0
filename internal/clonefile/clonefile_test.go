package clonefile

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCopy(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	const size = 256 << 20
	chunk := make([]byte, 64<<10)
	rand.Read(chunk)
	// Data at the start, in the middle and at the very end; holes between.
	for _, off := range []int64{0, 100 << 20, size - int64(len(chunk))} {
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	os.Chmod(src, 0o600)
	dst := filepath.Join(dir, "dst")
	if _, err := Copy(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("the copy differs from its source")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > 16<<20 {
		t.Errorf("the copy of a sparse %d-byte file takes %d bytes: its holes were filled", size, used)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(dst + ".partial"); !os.IsNotExist(err) {
		t.Errorf("a partial copy was left: %v", err)
	}
}

// TestInto: a copy into an unnamed file (O_TMPFILE) has the source's
// bytes and holes.
func TestInto(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, _ := os.Create(src)
	f.Truncate(64 << 20)
	chunk := make([]byte, 64<<10)
	rand.Read(chunk)
	f.WriteAt(chunk, 32<<20)
	f.Close()
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	out := os.NewFile(uintptr(fd), "tmp")
	defer out.Close()
	if _, err := Into(out, src); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(chunk))
	if _, err := out.ReadAt(got, 32<<20); err != nil || !bytes.Equal(got, chunk) {
		t.Fatalf("the copy's data: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size != 64<<20 || st.Blocks*512 > 16<<20 {
		t.Fatalf("the copy: size %d, %d bytes used, %v", st.Size, st.Blocks*512, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("an unnamed copy left names: %v", entries)
	}
}

func TestCopyMissing(t *testing.T) {
	dir := t.TempDir()
	if _, err := Copy(filepath.Join(dir, "nope"), filepath.Join(dir, "dst")); err == nil {
		t.Fatal("copying a missing file succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left %v", entries)
	}
}
