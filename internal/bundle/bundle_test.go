package bundle

import (
	"strings"
	"testing"
)

func TestCheckRelease(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"6.1.0-28-amd64", true},
		{"6.12.5+bpo-cloud_amd64", true},
		{"5.10.0", true},
		{"", false},
		{"-rc1", false},
		{".hidden", false},
		{"6.1.0 init=/bin/sh", false},
		{"6.1.0/../../etc", false},
		{"6.1\x1b[2J", false},
		{"6.1\u009b", false},
		{"--help", false},
		{strings.Repeat("1", MaxRelease), true},
		{strings.Repeat("1", MaxRelease+1), false},
	} {
		if err := CheckRelease(tc.v); (err == nil) != tc.ok {
			t.Errorf("CheckRelease(%q) = %v, want ok %v", tc.v, err, tc.ok)
		}
	}
}
