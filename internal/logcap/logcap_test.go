package logcap

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFloodStaysWithinTheCap: an appending writer floods the log while
// it is rotated; on disk there is never more than the cap (plus what
// one write added since the last sweep), the newest lines are kept.
func TestFloodStaysWithinTheCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const capBytes = 64 << 10
	line := strings.Repeat("x", 99) + "\n"
	for i := range 10000 {
		if _, err := w.WriteString(line); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			if _, err := Rotate(path, capBytes); err != nil {
				t.Fatal(err)
			}
			if n := size(t, path) + size(t, path+Older); n > capBytes+50*100 {
				t.Fatalf("%d bytes on disk; cap %d", n, capBytes)
			}
		}
	}
	if _, err := w.WriteString("the last line\n"); err != nil {
		t.Fatal(err)
	}
	got, _, err := Tail(path, 2)
	if err != nil || string(got) != line+"the last line\n" {
		t.Fatalf("tail = %q, %v", got, err)
	}
	var all bytes.Buffer
	if _, err := Stream(path, func(b []byte) error { all.Write(b); return nil }); err != nil {
		t.Fatal(err)
	}
	if all.Len() > capBytes+50*100 || !strings.HasSuffix(all.String(), "the last line\n") {
		t.Fatalf("stream of %d bytes, ending %q", all.Len(), all.String()[max(0, all.Len()-20):])
	}
	// No hole: the writer's next bytes went to the new end.
	if b, _ := os.ReadFile(path); bytes.IndexByte(b, 0) >= 0 {
		t.Fatal("the live file has a hole: the writer did not append")
	}
}

func size(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestTailAcrossHalves(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	_ = os.WriteFile(path+Older, []byte("a\nb\nc\n"), 0o644)
	_ = os.WriteFile(path, []byte("d\ne"), 0o644)
	for n, want := range map[int]string{1: "e", 2: "d\ne", 4: "b\nc\nd\ne", 10: "a\nb\nc\nd\ne"} {
		if got, _, err := Tail(path, n); err != nil || string(got) != want {
			t.Errorf("Tail(%d) = %q, %v; want %q", n, got, err, want)
		}
	}
}

// TestWriterThatDoesNotAppend: a writer that keeps its offset (an older
// VMM's console) makes a hole after a cut; the next rotation sees it and
// stops, rather than copying holes every sweep.
func TestWriterThatDoesNotAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	chunk := []byte(strings.Repeat("y", 4096))
	for range 32 {
		_, _ = w.Write(chunk)
	}
	if cut, err := Rotate(path, 64<<10); !cut || err != nil {
		t.Fatalf("first cut = %v, %v", cut, err)
	}
	for range 32 {
		_, _ = w.Write(chunk) // at its old offset: a hole before
	}
	if _, err := Rotate(path, 64<<10); !errors.Is(err, ErrNotAppending) {
		t.Fatalf("second cut = %v; want ErrNotAppending", err)
	}
}
