// Package storetest opens stores for the tests of the services on them.
package storetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/bangerdev/banger/internal/store"
)

// Open opens a store in a new temporary directory, closed when the test
// ends.
func Open(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
