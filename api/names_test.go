package api

import (
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for n, want := range map[string]bool{
		"ci": true, "a.b_c-1": true, "0": true, strings.Repeat("a", 63): true,
		"": false, strings.Repeat("a", 64): false, "-x": false, ".x": false, "_x": false,
		"A": false, "a b": false, "a/b": false, "a:b": false, "é": false,
	} {
		if got := ValidName(n); got != want {
			t.Errorf("ValidName(%q) = %v", n, got)
		}
	}
}
