// Package objdir is the file half of a collection whose records live in
// the store: one directory per object, named by its ID, under one
// parent; staging beside them under names that start with "."; and a
// delete that sets an object aside inside its store transaction, so a
// kill at any point leaves record and files agreeing once Sweep has run
// at the next start. The kernel service (bundles) and the image service
// (root file systems) keep theirs this way.
package objdir

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// asidePrefix starts the name of an object a delete set aside.
const asidePrefix = ".deleting-"

// Sweep makes dir agree with the records after a daemon that died
// mid-request. what names the objects in the log ("kernel bundle").
//   - An object set aside by a delete whose record stayed (its
//     transaction never committed) comes back.
//   - Every other entry whose name starts with "." goes: staging, and
//     objects set aside by a delete that committed.
//   - A directory no record owns goes: stored, but its record never
//     written. With recorded nil (no store to ask) directories stay.
func Sweep(dir string, recorded map[string]bool, log *slog.Logger, what string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name, path := e.Name(), filepath.Join(dir, e.Name())
		if id, ok := strings.CutPrefix(name, asidePrefix); ok && recorded[id] {
			if _, err := os.Lstat(filepath.Join(dir, id)); errors.Is(err, fs.ErrNotExist) {
				if err := os.Rename(path, filepath.Join(dir, id)); err == nil {
					log.Info(what+" put back: its delete did not finish", "id", id)
					continue
				}
			}
		}
		if !strings.HasPrefix(name, ".") && (!e.IsDir() || recorded == nil || recorded[name]) {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, fmt.Errorf("removing the leftover %s: %w", path, err))
		} else if !strings.HasPrefix(name, ".") {
			log.Info(what+" removed: no record owns it", "id", name)
		}
	}
	return errors.Join(errs...)
}

// Aside is an object set aside by a delete.
type Aside struct {
	dir, name string
	moved     bool
}

// SetAside moves the object name of dir aside, for a delete inside its
// store transaction: Undo puts it back if the transaction fails, Remove
// removes it once it committed. An object already gone is no error (and
// Moved says so).
func SetAside(dir, name string) (*Aside, error) {
	a := &Aside{dir: dir, name: name}
	err := os.Rename(filepath.Join(dir, name), a.path())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return a, nil
	case err != nil:
		return nil, err
	}
	a.moved = true
	return a, nil
}

func (a *Aside) path() string { return filepath.Join(a.dir, asidePrefix+a.name) }

// Moved says whether the object was there to set aside.
func (a *Aside) Moved() bool { return a != nil && a.moved }

// Undo puts the object back.
func (a *Aside) Undo() error {
	if !a.Moved() {
		return nil
	}
	return os.Rename(a.path(), filepath.Join(a.dir, a.name))
}

// Remove removes the object for good; what fails to go is swept at the
// next start.
func (a *Aside) Remove() error {
	if !a.Moved() {
		return nil
	}
	return os.RemoveAll(a.path())
}
