package objdir

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestSweep: staging goes, an object set aside whose record stayed comes
// back, one whose record went goes, a directory no record owns goes,
// files and recorded directories stay; without records, directories stay.
func TestSweep(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"kept", "orphan", ".build-1", ".deleting-back", ".deleting-gone"} {
		if err := os.MkdirAll(filepath.Join(dir, d, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "a-file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Sweep(dir, map[string]bool{"kept": true, "back": true}, slog.New(slog.DiscardHandler), "thing"); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"a-file", "back", "kept"}) {
		t.Fatalf("after the sweep: %v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "back", "x")); err != nil {
		t.Fatalf("put back without its contents: %v", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "unknown"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Sweep(dir, nil, slog.New(slog.DiscardHandler), "thing"); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); !slices.Contains(got, "unknown") {
		t.Fatalf("without records a directory went: %v", got)
	}
}

// TestSetAside: undone, the object is back; removed, it is gone; an
// object not there is no error and nothing to undo.
func TestSetAside(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "obj"), 0o700); err != nil {
		t.Fatal(err)
	}
	a, err := SetAside(dir, "obj")
	if err != nil || !a.Moved() || !slices.Equal(names(t, dir), []string{".deleting-obj"}) {
		t.Fatalf("SetAside = %v, %v: %v", a, err, names(t, dir))
	}
	if err := a.Undo(); err != nil || !slices.Equal(names(t, dir), []string{"obj"}) {
		t.Fatalf("Undo = %v: %v", err, names(t, dir))
	}
	a, _ = SetAside(dir, "obj")
	if err := a.Remove(); err != nil || len(names(t, dir)) != 0 {
		t.Fatalf("Remove = %v: %v", err, names(t, dir))
	}
	a, err = SetAside(dir, "missing")
	if err != nil || a.Moved() || a.Undo() != nil || a.Remove() != nil {
		t.Fatalf("a missing object: %v, %v", a, err)
	}
	var none *Aside
	if none.Undo() != nil || none.Remove() != nil {
		t.Fatal("a nil Aside")
	}
}

func names(t *testing.T, dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
