package store

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bangerdev/banger/api"
)

// MatchID finds the record whose ID starts with q, an ID prefix of at
// least 6 hex digits ("sha256:" optional), as `image show 5d74b5` takes
// one. It returns the first match and how many distinct IDs matched:
// several records of one ID (names of one image) are one match, and a q
// that is no ID prefix matches nothing.
func MatchID[T any](recs []T, id func(T) string, q string) (T, int) {
	var first T
	prefix := strings.TrimPrefix(q, "sha256:")
	if len(prefix) < 6 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return first, 0
	}
	ids := map[string]bool{}
	for _, r := range recs {
		if strings.HasPrefix(strings.TrimPrefix(id(r), "sha256:"), prefix) {
			if len(ids) == 0 {
				first = r
			}
			ids[id(r)] = true
		}
	}
	return first, len(ids)
}

// FindByID is the one record of recs that q, an ID prefix, names
// (MatchID): found false when none does, and an api.ErrInvalidArgument
// error when several do, saying how many of what ("images").
func FindByID[T any](recs []T, id func(T) string, q, what string) (rec T, found bool, err error) {
	match, n := MatchID(recs, id, q)
	switch {
	case n == 1:
		return match, true, nil
	case n > 1:
		err = fmt.Errorf("%w: %q matches %d %s; give more of the ID or a name", api.ErrInvalidArgument, q, n, what)
	}
	return rec, false, err
}

// Lookup finds the record of one kind that a user named: by name (each
// spelling in turn, as typed first), then by a unique ID prefix. Image and
// kernel lookups share it so that both take the same forms and say the
// same things when nothing or several match.
type Lookup[T any] struct {
	What   string                       // "image", in errors
	ByName func(name string) (T, error) // ErrNotFound when none has it
	All    func() ([]T, error)
	ID     func(T) string
}

// Find is the record q names; found is false, with no error, when none
// does. An empty q is an api.ErrInvalidArgument error.
func (l Lookup[T]) Find(q string, spellings ...string) (rec T, found bool, err error) {
	if q == "" {
		return rec, false, fmt.Errorf("%w: a %s name is required (see `banger %s list`)", api.ErrInvalidArgument, l.What, l.What)
	}
	for _, n := range append([]string{q}, spellings...) {
		if rec, err = l.ByName(n); err == nil || !errors.Is(err, ErrNotFound) {
			return rec, err == nil, err
		}
	}
	all, err := l.All()
	if err != nil {
		return rec, false, err
	}
	return FindByID(all, l.ID, q, l.What+"s")
}
