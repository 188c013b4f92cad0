// Package roottest gates tests that need root: without it they skip,
// unless BANGER_ROOT_TESTS=1 (set by `make test`) says they must run,
// and then missing root fails them.
package roottest

import (
	"os"
	"testing"
)

// Require stops a test that needs root for why ("it loop-mounts the
// image") when it runs without.
func Require(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("BANGER_ROOT_TESTS") == "1" {
		t.Fatalf("this test needs root (%s) and BANGER_ROOT_TESTS=1 requires it to run", why)
	}
	t.Skipf("needs root (%s); `make test` runs it as root", why)
}
