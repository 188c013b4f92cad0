package workspace

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/tree"
)

// Export is a binary git patch of the guest's work tree (committed and
// uncommitted changes alike) against the workspace's base commit, or
// p.BaseCommit. The guest is only read; the host repository gets nothing
// written either: git works on a copy of the guest's tree with a
// throwaway index and object directory borrowing the host's objects.
func (s *Service) Export(ctx context.Context, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error) {
	st, _, err := s.loadState(ctx, p.Name)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	base := p.BaseCommit
	if base == "" {
		base = st.Base
	}
	if base == "" {
		return api.WorkspaceExportResult{}, fmt.Errorf("%w: the workspace of vm %s was not made from a git commit; pass --base-commit", api.ErrInvalidArgument, p.Name)
	}
	gitDir := filepath.Join(st.Host, ".git")
	if _, err := os.Stat(gitDir); err != nil {
		return api.WorkspaceExportResult{}, fmt.Errorf("%w: %s is not the top of a git repository any more: %v", api.ErrInvalidArgument, st.Host, err)
	}
	a, err := s.cfg.Agent(ctx, p.Name)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	guest, err := guestTree(ctx, a, st.Guest)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	tmp, err := os.MkdirTemp("", "banger-export-")
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	defer os.RemoveAll(tmp)
	work := filepath.Join(tmp, "tree")
	paths := make([]string, 0, len(guest))
	expect := map[string]string{}
	for path, e := range guest {
		paths = append(paths, path)
		if e.Type == "f" {
			expect[path] = e.SHA256
		}
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := a.GetTree(ctx, st.Guest, paths, pw)
		pw.CloseWithError(err)
	}()
	if _, err := tree.Extract(pr, proto.PutTreeParams{Dir: work, UID: os.Getuid(), GID: os.Getgid(), Entries: len(paths)}, tree.Local{Expect: expect}); err != nil {
		pr.CloseWithError(err)
		return api.WorkspaceExportResult{}, fmt.Errorf("copying the guest's workspace: %w", err)
	}
	objects := filepath.Join(tmp, "objects")
	if err := os.MkdirAll(objects, 0o755); err != nil {
		return api.WorkspaceExportResult{}, err
	}
	env := append(os.Environ(), "GIT_DIR="+gitDir, "GIT_WORK_TREE="+work, "GIT_INDEX_FILE="+filepath.Join(tmp, "index"),
		"GIT_OBJECT_DIRECTORY="+objects, "GIT_ALTERNATE_OBJECT_DIRECTORIES="+filepath.Join(gitDir, "objects"))
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Env, cmd.Dir = env, work
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return string(out), nil
	}
	if _, err := run("read-tree", base); err != nil {
		return api.WorkspaceExportResult{}, fmt.Errorf("%w: base commit %s: %v", api.ErrInvalidArgument, base, err)
	}
	if _, err := run("add", "-A", "."); err != nil {
		return api.WorkspaceExportResult{}, err
	}
	patch, err := run("diff", "--cached", "--binary", "--full-index", base)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	names, err := run("diff", "--cached", "--name-only", "-z", base)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	files := 0
	for _, n := range strings.Split(names, "\x00") {
		if n != "" {
			files++
		}
	}
	return api.WorkspaceExportResult{Base: base, Patch: patch, Files: files}, nil
}
