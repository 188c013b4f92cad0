package store

import "testing"

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
