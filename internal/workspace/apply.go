package workspace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"strings"

	"github.com/bangerdev/banger/api"
)

// Apply brings a patch that Export made, and that someone reviewed, into
// the workspace's host tree: only when its sha256 is the one given, so
// that what lands is exactly what was reviewed; only paths inside the
// tree, none in .git and no .gitattributes or .gitmodules (they would
// choose programs git runs); all of it or none (git apply checks every
// hunk before it writes). Git runs as Export's does: no system or global
// config, hooks, fsmonitor or attributes file.
func (s *Service) Apply(ctx context.Context, p api.WorkspaceApplyParams) (api.WorkspaceApplyResult, error) {
	sum := sha256.Sum256([]byte(p.Patch))
	if got := hex.EncodeToString(sum[:]); got != p.SHA256 {
		return api.WorkspaceApplyResult{}, fmt.Errorf("%w: the patch's sha256 is %s, not %q: apply only what was reviewed", api.ErrInvalidArgument, got, p.SHA256)
	}
	if strings.TrimSpace(p.Patch) == "" {
		return api.WorkspaceApplyResult{}, fmt.Errorf("%w: the patch is empty: nothing changed in the guest", api.ErrInvalidArgument)
	}
	st, _, err := s.loadState(ctx, p.Name)
	if err != nil {
		return api.WorkspaceApplyResult{}, err
	}
	if err := s.hostTree(ctx, st.Host, "workspace apply, which writes in"); err != nil {
		return api.WorkspaceApplyResult{}, err
	}
	g := hostGit{top: st.Host}
	if err := g.trusted(); err != nil {
		return api.WorkspaceApplyResult{}, fmt.Errorf("%w: %w", api.ErrInvalidArgument, err)
	}
	numstat, err := g.input(ctx, st.Host, nil, p.Patch, "apply", "--numstat", "-z", "-")
	if err != nil {
		return api.WorkspaceApplyResult{}, fmt.Errorf("%w: reading the patch: %v", api.ErrInvalidArgument, err)
	}
	files, err := patchPaths(numstat)
	if err != nil {
		return api.WorkspaceApplyResult{}, err
	}
	if _, err := g.input(ctx, st.Host, nil, p.Patch, "apply", "--check", "-"); err != nil {
		return api.WorkspaceApplyResult{}, fmt.Errorf("%w: the patch does not apply to %s (changed since?): %v", api.ErrInUse, st.Host, err)
	}
	if _, err := g.input(ctx, st.Host, nil, p.Patch, "apply", "-"); err != nil {
		return api.WorkspaceApplyResult{}, fmt.Errorf("applying to %s: %w", st.Host, err)
	}
	s.cfg.Log.Info("workspace patch applied", "vm", p.Name, "dir", st.Host, "files", len(files), "sha256", p.SHA256)
	return api.WorkspaceApplyResult{Name: p.Name, Dir: st.Host, Files: files}, nil
}

// patchPaths are the paths `git apply --numstat -z` names, each checked:
// relative, clean, outside .git (in any case), not .gitattributes or
// .gitmodules.
func patchPaths(numstat string) ([]string, error) {
	var paths []string
	fields := strings.Split(numstat, "\x00")
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if f == "" {
			continue
		}
		parts := strings.SplitN(f, "\t", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("%w: git's reading of the patch: %q", api.ErrInvalidArgument, f)
		}
		if parts[2] != "" {
			paths = append(paths, parts[2])
			continue
		}
		// A rename: its old and new paths follow.
		if i+2 >= len(fields) {
			return nil, fmt.Errorf("%w: git's reading of a rename in the patch", api.ErrInvalidArgument)
		}
		paths = append(paths, fields[i+1], fields[i+2])
		i += 2
	}
	for _, p := range paths {
		if err := patchPath(p); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

func patchPath(p string) error {
	if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("%w: the patch names %q, outside the tree", api.ErrGuestRefused, p)
	}
	for _, seg := range strings.Split(p, "/") {
		if strings.EqualFold(seg, ".git") {
			return fmt.Errorf("%w: the patch writes %q, in .git", api.ErrGuestRefused, p)
		}
	}
	if base := path.Base(p); strings.EqualFold(base, ".gitattributes") || strings.EqualFold(base, ".gitmodules") {
		return fmt.Errorf("%w: the patch changes %q, which chooses programs git runs; bring it over by hand if it is meant", api.ErrGuestRefused, p)
	}
	return nil
}
