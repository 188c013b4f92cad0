package objdir

import (
	"errors"
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
	a, err := setAside(dir, "obj")
	if err != nil || !a.Moved() || !slices.Equal(names(t, dir), []string{".deleting-obj"}) {
		t.Fatalf("SetAside = %v, %v: %v", a, err, names(t, dir))
	}
	if err := a.Undo(); err != nil || !slices.Equal(names(t, dir), []string{"obj"}) {
		t.Fatalf("Undo = %v: %v", err, names(t, dir))
	}
	a, _ = setAside(dir, "obj")
	if err := a.Remove(); err != nil || len(names(t, dir)) != 0 {
		t.Fatalf("Remove = %v: %v", err, names(t, dir))
	}
	a, err = setAside(dir, "missing")
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

// TestStage: a staged object appears whole under its ID or not at all;
// a second of the same ID leaves the first as it was; Discard removes
// what was not stored; Staged finds staging left behind, with its hint;
// Remove leaves nothing under the ID, and an absent object is no error.
func TestStage(t *testing.T) {
	dir := t.TempDir()
	stage := func(content string) *Staging {
		s, err := Stage(dir, "hint", "verb", "thing")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.Path(), "f"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := stage("one")
	if got := Staged(dir); len(got) != 1 || got[first.Path()] != "hint" {
		t.Fatalf("Staged = %v", got)
	}
	if stored, err := first.Store("obj"); err != nil || !stored {
		t.Fatalf("Store = %v, %v", stored, err)
	}
	second := stage("two")
	if stored, err := second.Store("obj"); err != nil || stored {
		t.Fatalf("a second Store = %v, %v", stored, err)
	}
	second.Discard()
	first.Discard()
	if b, err := os.ReadFile(filepath.Join(dir, "obj", "f")); err != nil || string(b) != "one" {
		t.Fatalf("stored object: %q, %v", b, err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"obj"}) {
		t.Fatalf("left: %v", got)
	}
	if err := Remove(dir, "obj", "verb"); err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir, "obj", "verb"); err != nil {
		t.Fatalf("removing an absent object: %v", err)
	}
	if got := names(t, dir); len(got) != 0 {
		t.Fatalf("left: %v", got)
	}
}

// TestDelete: an object set aside in a transaction that fails comes back
// whole; one whose transaction committed is gone, and nothing is left
// aside.
func TestDelete(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"kept", "gone"} {
		if err := os.MkdirAll(filepath.Join(dir, d, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	failed := errors.New("commit failed")
	err := Delete(dir, "test.delete", "thing", slog.New(slog.DiscardHandler), func(setAside func(string) error) error {
		if err := setAside("kept"); err != nil {
			return err
		}
		return failed
	})
	if !errors.Is(err, failed) {
		t.Fatalf("Delete = %v, want the transaction's error", err)
	}
	if err := Delete(dir, "test.delete", "thing", slog.New(slog.DiscardHandler), func(setAside func(string) error) error {
		return setAside("gone")
	}); err != nil {
		t.Fatal(err)
	}
	if err := Delete(dir, "test.delete", "thing", slog.New(slog.DiscardHandler), func(setAside func(string) error) error {
		return setAside("never-there")
	}); err != nil {
		t.Fatalf("deleting an object already gone: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"kept"}) {
		t.Errorf("left %v, want [kept]", names)
	}
	if _, err := os.Stat(filepath.Join(dir, "kept", "x")); err != nil {
		t.Errorf("the object put back lost its content: %v", err)
	}
}
