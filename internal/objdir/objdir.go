// Package objdir is banger's one crash-safe store for content: one
// directory per object, named by its ID, under one parent; an object is
// made in a staging directory beside them (a name that starts with ".")
// and renamed whole into place (Stage, Store); a delete sets it aside
// first (Delete, inside the store transaction of an object with a
// record; Remove for one without), so a kill at any point leaves records
// and files agreeing once Sweep has run at the next start. Image root
// file systems, kernel bundles and VM templates are kept this way, each
// step a crash point of the reliability campaign.
package objdir

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/crashpoint"
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

// stagingPrefix starts the name of an object being made.
const stagingPrefix = ".staging-"

// Staging is an object being made, in a directory beside the stored
// ones.
type Staging struct {
	dir, path   string
	verb, thing string // its crash points: "VERB:THING built", "VERB:THING stored"
}

// Stage makes a staging directory in dir for an object (hint names it
// for a reader; Staged finds it), whose crash points are verb's, about
// thing ("rootfs", "bundle", "template"). Discard removes what Store did
// not move into place.
func Stage(dir, hint, verb, thing string) (*Staging, error) {
	path, err := os.MkdirTemp(dir, stagingPrefix+hint+"-")
	if err != nil {
		return nil, err
	}
	return &Staging{dir: dir, path: path, verb: verb, thing: thing}, nil
}

// Path is the staging directory.
func (s *Staging) Path() string { return s.path }

// Store renames the staging directory whole to id. An object already
// stored as id stays as it is (the same content, made concurrently or
// before): stored says whether this one was.
func (s *Staging) Store(id string) (stored bool, err error) {
	crashpoint.At(s.verb, s.thing+" built")
	final := filepath.Join(s.dir, id)
	if _, err := os.Lstat(final); err == nil {
		return false, nil
	}
	if err := os.Rename(s.path, final); err != nil {
		if _, serr := os.Lstat(final); serr == nil {
			return false, nil
		}
		return false, err
	}
	crashpoint.At(s.verb, s.thing+" stored")
	return true, nil
}

// Discard removes the staging directory, if Store has not moved it.
func (s *Staging) Discard() { _ = os.RemoveAll(s.path) }

// Staged lists the staging directories of dir, by path, with the hint
// each was staged with: what a daemon that died mid-make left (Sweep
// removes them; a caller may first end what they name, a template's VMM).
func Staged(dir string) map[string]string {
	found, _ := filepath.Glob(filepath.Join(dir, stagingPrefix+"*"))
	staged := map[string]string{}
	for _, path := range found {
		rest := strings.TrimPrefix(filepath.Base(path), stagingPrefix)
		if i := strings.LastIndex(rest, "-"); i >= 0 {
			staged[path] = rest[:i]
		}
	}
	return staged
}

// Remove deletes the object id of dir that has no record: set aside,
// then removed, so that a kill midway leaves no half of it under its
// name (Sweep removes the rest). An object not there is no error.
func Remove(dir, id, verb string) error {
	a, err := setAside(dir, id)
	if err != nil {
		return err
	}
	crashpoint.At(verb, "set aside")
	return a.Remove()
}

// Delete deletes an object that has records: update is the store
// transaction that deletes them, and calls setAside with the object's id
// when the last one goes. The object is put back if update fails, and
// removed for good once it committed; a kill in between is Sweep's to
// mend. The crash points are verb's, "THING set aside" inside the
// transaction and "record deleted" after it.
func Delete(dir, verb, thing string, log *slog.Logger, update func(setAside func(id string) error) error) error {
	var aside *Aside
	err := update(func(id string) error {
		a, err := setAside(dir, id)
		if err != nil {
			return err
		}
		aside = a
		crashpoint.At(verb, thing+" set aside")
		return nil
	})
	if err != nil {
		if uerr := aside.Undo(); uerr != nil {
			log.Warn("putting a "+thing+" back", "id", aside.name, "err", uerr)
		}
		return err
	}
	crashpoint.At(verb, "record deleted")
	if err := aside.Remove(); err != nil {
		log.Warn("removing a deleted "+thing, "id", aside.name, "err", err)
	}
	return nil
}

// Aside is an object set aside by a delete.
type Aside struct {
	dir, name string
	moved     bool
}

// setAside moves the object name of dir aside, for a delete inside its
// store transaction: Undo puts it back if the transaction fails, Remove
// removes it once it committed. An object already gone is no error (and
// Moved says so).
func setAside(dir, name string) (*Aside, error) {
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
