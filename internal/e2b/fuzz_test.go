package e2b

import (
	"net/http"
	"path"
	"strings"
	"testing"
)

// FuzzRequestNames: what a request names (its Host, its Basic user, a
// path) is parsed into a sandbox and port in range, a valid user, and an
// absolute clean path without NUL, or refused.
func FuzzRequestNames(f *testing.F) {
	f.Add("49983-iabc.localhost:3000", "Basic dXNlcjo=", "a/../../b")
	f.Add("8080-i1-2.localhost", "Basic LXJvb3Q6", "~/x")
	f.Add("99999-x.localhost", "Basic !!", "/a\x00b")
	s := &Service{o: Options{Domain: "localhost"}}
	f.Fuzz(func(t *testing.T, host, auth, p string) {
		r := &http.Request{Host: host, Header: http.Header{"Authorization": {auth}}}
		if id, port, ok := s.sandboxOf(r); ok && (port < 1 || port > 65535 || id == "") {
			t.Fatalf("host %q: sandbox %q port %d", host, id, port)
		}
		user, err := userOf(r.Header)
		if err == nil && user != "" && !validUser(user) {
			t.Fatalf("auth %q: user %q", auth, user)
		}
		if err != nil {
			user = ""
		}
		if g, err := guestPath(p, user); err == nil {
			if !path.IsAbs(g) || path.Clean(g) != g || strings.ContainsRune(g, 0) || len(g) > maxPath+64 {
				t.Fatalf("path %q: %q", p, g)
			}
		}
	})
}
