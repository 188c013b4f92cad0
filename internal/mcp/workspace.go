package mcp

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/api"
)

// The way back: a host project goes into a sandbox (workspace_sync_in,
// only from under the server's roots), its changes come out as a diff
// with a hash (workspace_diff), and only that very diff, named by its
// hash, is written into the host tree (workspace_accept).
const (
	maxDiffText = 256 << 10 // of a diff shown; the hash covers all of it
	keptDiffs   = 8         // diffs a server keeps for accept
)

// SyncIn are workspace_sync_in's arguments.
type SyncIn struct {
	Name string `json:"name" jsonschema:"the sandbox's name"`
	Path string `json:"path" jsonschema:"the host project's directory, under one of the server's roots (banger mcp --root)"`
}

// SyncOut is workspace_sync_in's result.
type SyncOut struct {
	Dir   string `json:"dir" jsonschema:"where it is in the sandbox"`
	Files int    `json:"files,omitempty"`
	Bytes int64  `json:"bytes"`
	// Changed lists what a later sync updated in the sandbox.
	Changed []string `json:"changed,omitempty"`
}

// FileDiff is one file's share of a diff.
type FileDiff struct {
	Path    string `json:"path"`
	Added   int    `json:"added"`
	Deleted int    `json:"deleted"`
	Binary  bool   `json:"binary,omitempty"`
}

// DiffOut is workspace_diff's result.
type DiffOut struct {
	Diff      string     `json:"diff" jsonschema:"the unified diff (git, binary hunks included)"`
	Truncated bool       `json:"truncated" jsonschema:"true when the diff shown was cut; the hash covers all of it"`
	Files     []FileDiff `json:"files"`
	SHA256    string     `json:"sha256" jsonschema:"give it to workspace_accept to bring exactly this diff into the host tree"`
	Base      string     `json:"base" jsonschema:"the commit it is against"`
}

// AcceptIn are workspace_accept's arguments.
type AcceptIn struct {
	Name   string `json:"name" jsonschema:"the sandbox's name"`
	SHA256 string `json:"sha256" jsonschema:"the hash workspace_diff gave for the diff that was reviewed"`
}

// AcceptOut is workspace_accept's result.
type AcceptOut struct {
	Dir   string   `json:"dir" jsonschema:"the host tree written"`
	Files []string `json:"files"`
}

// diffs keeps the diffs a server showed, by hash, for accept.
type diffs struct {
	mu    sync.Mutex
	order []string
	byKey map[string]string // sandbox + sha256: patch
}

func (d *diffs) keep(sandbox, sum, patch string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.byKey == nil {
		d.byKey = map[string]string{}
	}
	k := sandbox + "/" + sum
	if _, ok := d.byKey[k]; !ok {
		d.order = append(d.order, k)
	}
	d.byKey[k] = patch
	for len(d.order) > keptDiffs {
		delete(d.byKey, d.order[0])
		d.order = d.order[1:]
	}
}

func (d *diffs) take(sandbox, sum string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.byKey[sandbox+"/"+sum]
	return p, ok
}

func (s *Server) addWorkspaceTools() {
	sdk.AddTool(s.srv, &sdk.Tool{Name: "workspace_sync_in", Title: "Bring a host project into a sandbox",
		Description: "Place a host project (under one of the server's roots) in a sandbox at /workspace, or bring the host's later changes in: git-tracked files and .git, all or nothing.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(true), IdempotentHint: true, OpenWorldHint: new(false)}}, s.syncIn)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "workspace_diff", Title: "What changed in a sandbox's project",
		Description: "The sandbox's changes to its project as a unified git diff against the commit it came from, a per-file summary and the diff's sha256 (for workspace_accept). Nothing is written anywhere.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)}}, s.diff)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "workspace_accept", Title: "Bring reviewed changes back to the host",
		Description: "Write a diff that workspace_diff showed, named by its sha256, into the host project: exactly what was reviewed, all or nothing; a diff touching .git or .gitattributes is refused.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(true), OpenWorldHint: new(false)}}, s.accept)
}

// underRoot resolves p and says whether it is one of the roots or below
// one.
func (s *Server) underRoot(p string) (string, error) {
	if len(s.roots) == 0 {
		return "", fmt.Errorf("%w: this server was started without --root, so it takes no host path; start `banger mcp --root DIR`", api.ErrPermissionDenied)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: path %q: give an absolute host path", api.ErrInvalidArgument, p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("%w: path %q: %v", api.ErrInvalidArgument, p, err)
	}
	for _, r := range s.roots {
		if real == r || strings.HasPrefix(real, r+string(filepath.Separator)) {
			return real, nil
		}
	}
	return "", fmt.Errorf("%w: %s is not under this server's roots (%s)", api.ErrPermissionDenied, p, strings.Join(s.roots, ", "))
}

func (s *Server) syncIn(ctx context.Context, req *sdk.CallToolRequest, in SyncIn) (*sdk.CallToolResult, SyncOut, error) {
	host, err := s.underRoot(in.Path)
	if err != nil {
		return nil, SyncOut{}, err
	}
	v, err := s.mine(ctx, in.Name)
	if err != nil {
		return nil, SyncOut{}, err
	}
	step := 0.0
	onProgress := func(p api.WorkspaceProgress) {
		step++
		progress(ctx, req, step, 0, fmt.Sprintf("%s: %d of %d %s", p.Phase, p.Done, p.Total, p.Unit))
	}
	if v.Workspace == "" {
		r, err := s.d.PrepareWorkspace(ctx, api.WorkspacePrepareParams{Name: in.Name, WorkspaceSpec: api.WorkspaceSpec{Path: host}}, onProgress)
		if err != nil {
			return nil, SyncOut{}, err
		}
		return text("%s is in sandbox %s at %s: %d files", host, in.Name, r.Dir, r.Files), SyncOut{Dir: r.Dir, Files: r.Files, Bytes: r.Bytes}, nil
	}
	r, err := s.d.PushWorkspace(ctx, api.WorkspaceRefParams{Name: in.Name, Dir: host}, onProgress)
	if err != nil {
		return nil, SyncOut{}, err
	}
	c := r.Changes
	changed := append(append(append([]string{}, c.Added...), c.Modified...), c.Deleted...)
	return text("%d changes of %s brought into %s", len(changed), host, r.Dir), SyncOut{Dir: r.Dir, Bytes: r.Bytes, Changed: changed}, nil
}

// workspaceHost is the host tree of a sandbox's workspace, if it is under
// the server's roots.
func (s *Server) workspaceHost(ctx context.Context, name string) (string, error) {
	if _, err := s.mine(ctx, name); err != nil {
		return "", err
	}
	st, err := s.d.WorkspaceStatus(ctx, api.WorkspaceRefParams{Name: name})
	if err != nil {
		return "", err
	}
	return s.underRoot(st.HostDir)
}

func (s *Server) diff(ctx context.Context, _ *sdk.CallToolRequest, in NameIn) (*sdk.CallToolResult, DiffOut, error) {
	if _, err := s.workspaceHost(ctx, in.Name); err != nil {
		return nil, DiffOut{}, err
	}
	r, err := s.d.ExportWorkspace(ctx, api.WorkspaceExportParams{Name: in.Name})
	if err != nil {
		return nil, DiffOut{}, err
	}
	s.diffs.keep(in.Name, r.SHA256, r.Patch)
	out := DiffOut{Diff: r.Patch, SHA256: r.SHA256, Base: r.Base, Files: summarize(r.Patch)}
	if len(out.Diff) > maxDiffText {
		out.Diff, out.Truncated = strings.ToValidUTF8(out.Diff[:maxDiffText], ""), true
	}
	var lines []string
	for _, f := range out.Files {
		lines = append(lines, fmt.Sprintf("%s +%d -%d", f.Path, f.Added, f.Deleted))
	}
	return text("%d files changed against %s; sha256 %s\n%s\n\n%s", len(out.Files), short(r.Base), r.SHA256, strings.Join(lines, "\n"), out.Diff), out, nil
}

func short(commit string) string { return commit[:min(12, len(commit))] }

// summarize counts each file's added and deleted lines in a git diff.
func summarize(patch string) []FileDiff {
	files := []FileDiff{}
	var cur *FileDiff
	for _, line := range strings.Split(patch, "\n") {
		switch {
		case strings.HasPrefix(line, "diff --git "):
			path := line[len("diff --git "):]
			if i := strings.LastIndex(path, " b/"); i >= 0 {
				path = path[i+3:]
			}
			files = append(files, FileDiff{Path: path})
			cur = &files[len(files)-1]
		case cur == nil, strings.HasPrefix(line, "+++ "), strings.HasPrefix(line, "--- "):
		case strings.HasPrefix(line, "GIT binary patch"):
			cur.Binary = true
		case strings.HasPrefix(line, "+") && !cur.Binary:
			cur.Added++
		case strings.HasPrefix(line, "-") && !cur.Binary:
			cur.Deleted++
		}
	}
	return files
}

func (s *Server) accept(ctx context.Context, _ *sdk.CallToolRequest, in AcceptIn) (*sdk.CallToolResult, AcceptOut, error) {
	if _, err := s.workspaceHost(ctx, in.Name); err != nil {
		return nil, AcceptOut{}, err
	}
	patch, ok := s.diffs.take(in.Name, in.SHA256)
	if !ok {
		return nil, AcceptOut{}, fmt.Errorf("%w: no diff of sandbox %s with sha256 %q was shown by this server: call workspace_diff, review it, and accept its hash", api.ErrNotFound, in.Name, in.SHA256)
	}
	r, err := s.d.ApplyWorkspace(ctx, api.WorkspaceApplyParams{Name: in.Name, Patch: patch, SHA256: in.SHA256})
	if err != nil {
		return nil, AcceptOut{}, err
	}
	s.log.Info("workspace accepted", "vm", in.Name, "dir", r.Dir, "files", len(r.Files), "sha256", in.SHA256)
	return text("%d files written into %s", len(r.Files), r.Dir), AcceptOut{Dir: r.Dir, Files: r.Files}, nil
}
