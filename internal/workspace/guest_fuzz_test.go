package workspace

import (
	"encoding/json"
	"errors"
	"path"
	"testing"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/tree"
	"github.com/bangerdev/banger/internal/termsafe"
)

// FuzzVetManifest hands vetManifest any listing a guest might send
// (decoded as its entries): no panic; a refusal is guest_refused or
// limit_exceeded; what it accepts is only clean relative paths of plain
// text, no .git at any depth, each once, of a known type, files of a
// real hash within the cap, none below a non-directory.
func FuzzVetManifest(f *testing.F) {
	const hash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	seed := func(entries ...proto.TreeEntry) {
		b, _ := json.Marshal(entries)
		f.Add(b)
	}
	seed(proto.TreeEntry{Path: "a.txt", Type: "f", Mode: 0o644, Size: 5, SHA256: hash},
		proto.TreeEntry{Path: "docs", Type: "d", Mode: 0o755},
		proto.TreeEntry{Path: "docs/link", Type: "l", Mode: 0o777, Link: "../a.txt"})
	seed(proto.TreeEntry{Path: "../escape", Type: "f", SHA256: hash})
	seed(proto.TreeEntry{Path: "sub/.GIT/config", Type: "f", SHA256: hash})
	seed(proto.TreeEntry{Path: "f", Type: "f", SHA256: hash}, proto.TreeEntry{Path: "f/below", Type: "f", SHA256: hash})
	seed(proto.TreeEntry{Path: "esc\x1b[2J", Type: "f", SHA256: hash})
	seed(proto.TreeEntry{Path: "big", Type: "f", Size: 1 << 40, SHA256: hash})
	const maxBytes = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		var entries []proto.TreeEntry
		if json.Unmarshal(data, &entries) != nil {
			return
		}
		out, err := vetManifest(entries, maxBytes)
		if err != nil {
			if !errors.Is(err, api.ErrGuestRefused) && !errors.Is(err, api.ErrLimitExceeded) {
				t.Fatalf("a refusal of another kind: %v", err)
			}
			return
		}
		for p, e := range out {
			if p != e.Path || path.Clean(p) != p || tree.IsGitPath(p) || termsafe.HasControl(p) {
				t.Fatalf("accepted path %q (%+v)", p, e)
			}
			if _, err := tree.CleanRel(p); err != nil {
				t.Fatalf("accepted path %q: %v", p, err)
			}
			switch e.Type {
			case "f":
				if e.Size < 0 || e.Size > maxBytes || !isSHA256(e.SHA256) {
					t.Fatalf("accepted file %+v", e)
				}
			case "l":
				if e.Link == "" {
					t.Fatalf("accepted symlink %+v", e)
				}
			default:
				t.Fatalf("accepted type %q", e.Type)
			}
			for d := path.Dir(p); d != "."; d = path.Dir(d) {
				if _, leaf := out[d]; leaf {
					t.Fatalf("accepted %q below the non-directory %q", p, d)
				}
			}
		}
	})
}
