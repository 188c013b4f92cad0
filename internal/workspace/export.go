package workspace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/tree"
	"github.com/bangerdev/banger/internal/diskspace"
)

// Export is a binary git patch of the guest's work tree (committed and
// uncommitted changes alike) against the workspace's base commit, or
// p.BaseCommit. The guest is only read; the host repository gets nothing
// written either: git works on a copy of the guest's tree, staged in the
// VM's state directory, with a throwaway index and object directory
// borrowing the host's objects. The copy is hostile content: its blobs
// are hashed without filters and diffed without external drivers or
// textconv, so no attribute the guest wrote picks a program to run.
func (s *Service) Export(ctx context.Context, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error) {
	st, stateDir, err := s.loadState(ctx, p.Name)
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
	if err := s.hostTree(ctx, st.Host, "workspace export, which runs git in"); err != nil {
		return api.WorkspaceExportResult{}, err
	}
	gitDir := filepath.Join(st.Host, ".git")
	if _, err := os.Stat(gitDir); err != nil {
		return api.WorkspaceExportResult{}, fmt.Errorf("%w: %s is not the top of a git repository any more: %v", api.ErrInvalidArgument, st.Host, err)
	}
	g := hostGit{top: st.Host}
	if err := g.trusted(); err != nil {
		return api.WorkspaceExportResult{}, fmt.Errorf("%w: %w", api.ErrInvalidArgument, err)
	}
	a, err := s.cfg.VMs.Agent(ctx, p.Name)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	guest, err := s.guestTree(ctx, a, st.Guest)
	if err != nil {
		return api.WorkspaceExportResult{}, fmt.Errorf("vm %s: %w", p.Name, err)
	}
	paths := slices.Sorted(maps.Keys(guest))
	want, n, err := s.wanted(guest, paths)
	if err == nil {
		err = diskspace.Need(stateDir, 2*n) // the copy, and git's loose objects of it
	}
	if err != nil {
		return api.WorkspaceExportResult{}, fmt.Errorf("exporting from vm %s: %w", p.Name, err)
	}
	tmp, err := os.MkdirTemp(stateDir, "export-")
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	defer os.RemoveAll(tmp)
	work := filepath.Join(tmp, "tree")
	pr, pw := io.Pipe()
	go func() {
		_, err := a.GetTree(ctx, st.Guest, paths, pw)
		pw.CloseWithError(err)
	}()
	if _, err := tree.Extract(pr, proto.PutTreeParams{Dir: work, UID: os.Getuid(), GID: os.Getgid()}, tree.Local{Want: want, MaxBytes: s.cfg.MaxBytes}); err != nil {
		pr.CloseWithError(err)
		return api.WorkspaceExportResult{}, fmt.Errorf("copying the guest's workspace: %w", guestFault(err))
	}
	objects := filepath.Join(tmp, "objects")
	if err := os.MkdirAll(objects, 0o755); err != nil {
		return api.WorkspaceExportResult{}, err
	}
	env := []string{"GIT_DIR=" + gitDir, "GIT_WORK_TREE=" + work, "GIT_INDEX_FILE=" + filepath.Join(tmp, "index"),
		"GIT_OBJECT_DIRECTORY=" + objects, "GIT_ALTERNATE_OBJECT_DIRECTORIES=" + filepath.Join(gitDir, "objects")}
	run := func(env []string, stdin string, args ...string) (string, error) {
		return g.input(ctx, work, env, stdin, args...)
	}
	if _, err := run(env, "", "read-tree", base); err != nil {
		return api.WorkspaceExportResult{}, fmt.Errorf("%w: base commit %s: %v", api.ErrInvalidArgument, base, err)
	}
	take, err := exported(run, env, guest)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	// The guest's side as an index of its own, made by hand: `git add`
	// would run the clean filters the copy's .gitattributes name.
	index, err := blobIndex(run, env, tmp, work, guest, take)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	env = append(env, "GIT_INDEX_FILE="+index)
	patch, err := run(env, "", "diff", "--cached", "--binary", "--full-index", "--no-ext-diff", "--no-textconv", base)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	names, err := run(env, "", "diff", "--cached", "--name-only", "-z", "--no-ext-diff", base)
	if err != nil {
		return api.WorkspaceExportResult{}, err
	}
	files := 0
	for _, n := range strings.Split(names, "\x00") {
		if n != "" {
			files++
		}
	}
	sum := sha256.Sum256([]byte(patch))
	return api.WorkspaceExportResult{Base: base, Patch: patch, Files: files, SHA256: hex.EncodeToString(sum[:])}, nil
}

type gitRun func(env []string, stdin string, args ...string) (string, error)

// exported is the guest files the patch holds, as `git add -A` would
// take them: those the base tracks, and untracked ones git does not
// ignore.
func exported(run gitRun, env []string, guest files) ([]string, error) {
	var take []string
	for _, args := range [][]string{{"ls-files", "-z", "--cached"}, {"ls-files", "-z", "--others", "--exclude-standard"}} {
		out, err := run(env, "", args...)
		if err != nil {
			return nil, err
		}
		for _, f := range strings.Split(out, "\x00") {
			if _, ok := guest[f]; ok && f != "" {
				take = append(take, f)
			}
		}
	}
	slices.Sort(take)
	return slices.Compact(take), nil
}

// blobIndex writes the blobs of take (symlinks as their targets, from
// the manifest, never followed) and an index of them, and returns the
// index's path.
func blobIndex(run gitRun, env []string, tmp, work string, guest files, take []string) (string, error) {
	links := filepath.Join(tmp, "links")
	if err := os.MkdirAll(links, 0o700); err != nil {
		return "", err
	}
	var list strings.Builder
	for i, f := range take {
		src := filepath.Join(work, filepath.FromSlash(f))
		if e := guest[f]; e.Type == "l" {
			src = filepath.Join(links, strconv.Itoa(i))
			if err := os.WriteFile(src, []byte(e.Link), 0o600); err != nil {
				return "", err
			}
		}
		list.WriteString(src + "\n")
	}
	ids, err := run(env, list.String(), "hash-object", "-w", "--no-filters", "--stdin-paths")
	if err != nil {
		return "", err
	}
	sums := strings.Fields(ids)
	if len(sums) != len(take) {
		return "", fmt.Errorf("git hash-object gave %d ids for %d files", len(sums), len(take))
	}
	var info strings.Builder
	for i, f := range take {
		mode := "100644"
		switch e := guest[f]; {
		case e.Type == "l":
			mode = "120000"
		case e.Mode&0o111 != 0:
			mode = "100755"
		}
		fmt.Fprintf(&info, "%s %s\t%s\x00", mode, sums[i], f)
	}
	index := filepath.Join(tmp, "index.guest")
	if _, err := run(append(slices.Clone(env), "GIT_INDEX_FILE="+index), info.String(), "update-index", "-z", "--index-info"); err != nil {
		return "", err
	}
	return index, nil
}
