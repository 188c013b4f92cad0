package store

import (
	"errors"
	"testing"

	"github.com/bangerdev/banger/api"
)

func TestMatchID(t *testing.T) {
	type rec struct{ name, id string }
	recs := []rec{{"a", "sha256:aaaaaa11"}, {"a2", "sha256:aaaaaa11"}, {"b", "sha256:aaaaaa22"}, {"c", "sha256:bbbbbb00"}}
	for _, tc := range []struct {
		q     string
		first string
		n     int
	}{
		{"bbbbbb", "c", 1},
		{"sha256:bbbbbb0", "c", 1},
		{"aaaaaa1", "a", 1}, // two names of one ID are one match
		{"aaaaaa", "a", 2},  // two IDs: ambiguous
		{"bbbbb", "", 0},    // too short to be an ID prefix
		{"debian", "", 0},   // not hex
		{"cccccc", "", 0},
	} {
		got, n := MatchID(recs, func(r rec) string { return r.id }, tc.q)
		if n != tc.n || got.name != tc.first {
			t.Errorf("MatchID(%q) = %q, %d; want %q, %d", tc.q, got.name, n, tc.first, tc.n)
		}
	}
}

func TestLookupFind(t *testing.T) {
	type rec struct{ name, id string }
	recs := []rec{{"alpine", "sha256:aaaaaa11"}, {"debian", "sha256:aaaaaa22"}, {"docker.io/library/ubuntu:latest", "sha256:bbbbbb33"}}
	l := Lookup[rec]{
		What: "image",
		ByName: func(n string) (rec, error) {
			for _, r := range recs {
				if r.name == n {
					return r, nil
				}
			}
			return rec{}, ErrNotFound
		},
		All: func() ([]rec, error) { return recs, nil },
		ID:  func(r rec) string { return r.id },
	}
	for _, tc := range []struct {
		q, spelling, want string
		err               error
	}{
		{q: "alpine", want: "alpine"},
		{q: "ubuntu", spelling: "docker.io/library/ubuntu:latest", want: "docker.io/library/ubuntu:latest"},
		{q: "bbbbbb", want: "docker.io/library/ubuntu:latest"},
		{q: "aaaaaa", err: api.ErrInvalidArgument}, // two images
		{q: "aaaaaa2", want: "debian"},
		{q: "", err: api.ErrInvalidArgument},
		{q: "nope"},
	} {
		var sp []string
		if tc.spelling != "" {
			sp = append(sp, tc.spelling)
		}
		r, found, err := l.Find(tc.q, sp...)
		if !errors.Is(err, tc.err) || (err == nil && found != (tc.want != "")) || r.name != tc.want {
			t.Errorf("Find(%q) = %q, %v, %v; want %q, %v", tc.q, r.name, found, err, tc.want, tc.err)
		}
	}
}
