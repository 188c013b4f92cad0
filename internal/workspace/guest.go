package workspace

import (
	"fmt"
	"path"
	"strings"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/tree"
	"github.com/bangerdev/banger/internal/termsafe"
	"github.com/bangerdev/banger/internal/units"
)

// A guest's manifest is a proposal: vetManifest takes from it only
// entries the host can use safely, and refuses a manifest no honest
// agent would send.

// maxPath bounds a path or a symlink target from the guest (PATH_MAX).
const maxPath = 4096

// vetManifest checks every entry of a guest's manifest and returns its
// files (directories dropped), leaving out .git paths: the guest's own
// repositories, nested ones included, never come to the host.
func vetManifest(entries []proto.TreeEntry, maxBytes int64) (files, error) {
	out := files{}
	dirs := map[string]bool{}
	for _, e := range entries {
		if err := vetEntry(e, maxBytes); err != nil {
			return nil, err
		}
		if tree.IsGitPath(e.Path) {
			continue
		}
		if _, dup := out[e.Path]; dup || dirs[e.Path] {
			return nil, fmt.Errorf("%w: the manifest names %q twice", api.ErrGuestRefused, short(e.Path))
		}
		if e.Type == "d" {
			dirs[e.Path] = true
			continue
		}
		out[e.Path] = e
	}
	// A file cannot have entries below it: a manifest that says so would
	// have the host write through whatever it made of the file.
	for p := range out {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, leaf := out[d]; leaf {
				return nil, fmt.Errorf("%w: the manifest has %q below the non-directory %q", api.ErrGuestRefused, short(p), short(d))
			}
		}
	}
	return out, nil
}

func vetEntry(e proto.TreeEntry, maxBytes int64) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: manifest entry %q: %s", api.ErrGuestRefused, short(e.Path), why)
	}
	if len(e.Path) > maxPath {
		return bad("path too long")
	}
	if _, err := tree.CleanRel(e.Path); err != nil || path.Clean(e.Path) != e.Path {
		return bad("not a clean relative path")
	}
	if termsafe.HasControl(e.Path) {
		return bad("control characters in the path")
	}
	if e.Mode > 0o7777 {
		return bad(fmt.Sprintf("mode %o", e.Mode))
	}
	switch e.Type {
	case "d":
	case "f":
		if e.Size < 0 {
			return bad(fmt.Sprintf("size %d", e.Size))
		}
		if e.Size > maxBytes {
			return fmt.Errorf("%w: %q is %s, over workspace.max_bytes (%s); raise it in the config, or remove the file in the guest",
				api.ErrLimitExceeded, short(e.Path), units.FormatSize(e.Size), units.FormatSize(maxBytes))
		}
		if !isSHA256(e.SHA256) {
			return bad("not a sha256")
		}
	case "l":
		if e.Link == "" || len(e.Link) > maxPath || strings.ContainsRune(e.Link, 0) {
			return bad("not a symlink target")
		}
	default:
		return bad(fmt.Sprintf("type %q", e.Type))
	}
	return nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// short cuts a guest string for an error message, where %q escapes its
// control characters: a name cannot drive the user's terminal.
func short(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
