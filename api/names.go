package api

import "strings"

// ValidName says whether n is a name banger gives things that end up in
// VM records and logs (MCP servers, E2B keys and templates, and so a
// VM's creator): 1 to 63 of [a-z0-9._-], starting with a letter or digit.
func ValidName(n string) bool {
	if n == "" || len(n) > 63 || strings.IndexAny(n[:1], "._-") == 0 {
		return false
	}
	return strings.Trim(n, "abcdefghijklmnopqrstuvwxyz0123456789._-") == ""
}
