// Package workspace is the workspace service: a host project placed in a
// VM (git-tracked files by default, with enough of .git that git works
// inside), what changed on each side since the last sync by content hash,
// pull and push that refuse conflicts and change a side all at once or
// not at all, and a binary git patch of the guest's work. Transfers are
// tar streams over the agent link: no network is needed. It reaches VMs
// only through the functions of Config.
package workspace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/tree"
	"github.com/bangerdev/banger/internal/crashpoint"
	"github.com/bangerdev/banger/internal/wholefile"
)

// GuestDir is where a workspace lives in the guest; exec starts there.
const GuestDir = "/workspace"

// Agent is what the service asks of a guest's agent.
type Agent interface {
	PutTree(ctx context.Context, p proto.PutTreeParams, r io.Reader) (proto.TreeResult, error)
	GetTree(ctx context.Context, dir string, paths []string, w io.Writer) (proto.TreeResult, error)
	// Manifest lists at most max entries in at most maxBytes.
	Manifest(ctx context.Context, p proto.ManifestParams, max int, maxBytes int64) ([]proto.TreeEntry, error)
}

// VMs is what the service asks of the VM service.
type VMs interface {
	// Agent is the agent of the running VM named name (api.ErrNotFound,
	// api.ErrNotRunning otherwise; a suspended VM is resumed first).
	Agent(ctx context.Context, name string) (Agent, error)
	// StateDir is the VM's directory, where the workspace's sync state
	// is kept.
	StateDir(ctx context.Context, name string) (string, error)
	// Placed records the guest directory on the VM, for exec and ssh.
	Placed(ctx context.Context, name, dir string) error
}

// Config wires a Service.
type Config struct {
	VMs VMs
	// GuestDir is where workspaces go in guests (default GuestDir).
	GuestDir string
	// MaxBytes and MaxEntries cap what one sync takes from a guest (files'
	// bytes, entries of its manifest); 0 means DefaultMaxBytes and
	// DefaultMaxEntries.
	MaxBytes   int64
	MaxEntries int
	Log        *slog.Logger
	// HostTree refuses a host tree the request's caller may not have the
	// daemon read, write or run git in (internal/peer); nil allows every
	// tree.
	HostTree func(ctx context.Context, path, what string) error
}

// Defaults of the per-sync caps ([workspace] max_bytes, max_entries).
const (
	DefaultMaxBytes   = 8 << 30
	DefaultMaxEntries = 200_000
)

// manifestBytesPerEntry is the listing a manifest may take per entry
// allowed, on average: a JSON line with a long path is about 250 bytes.
const manifestBytesPerEntry = 256

// Service is the workspace service.
type Service struct {
	cfg Config
	// hashes holds the host trees' hashes by file stamp: a status
	// re-reads only the files that changed.
	hashes tree.Cache
}

// New makes a service.
func New(cfg Config) *Service {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.GuestDir == "" {
		cfg.GuestDir = GuestDir
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	return &Service{cfg: cfg}
}

// Progress reports a transfer's advance.
type Progress func(api.WorkspaceProgress)

// State is what the last sync left: the files both sides agreed on.
type State struct {
	Host             string                     `json:"host"`
	Guest            string                     `json:"guest"`
	Base             string                     `json:"base,omitempty"`
	IncludeUntracked bool                       `json:"include_untracked,omitempty"`
	Files            map[string]proto.TreeEntry `json:"files"`
}

// StateFile is a workspace's state, in its VM's state directory: what a
// fork's copies inherit (vm.Config.ForkCarries).
const StateFile = "workspace.json"

func (s *Service) loadState(ctx context.Context, name string) (State, string, error) {
	dir, err := s.cfg.VMs.StateDir(ctx, name)
	if err != nil {
		return State{}, "", err
	}
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, dir, fmt.Errorf("vm %s has no workspace: %w; make one with `banger vm workspace prepare %s PATH`", name, api.ErrNotFound, name)
	}
	if err != nil {
		return State{}, dir, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, dir, fmt.Errorf("reading the workspace state of vm %s: %w", name, err)
	}
	if st.Files == nil {
		st.Files = map[string]proto.TreeEntry{}
	}
	// A state written by an older banger may record paths no sync takes
	// now (nested .git files): kept, they would read as deleted on the
	// side that no longer lists them, and the sync would delete them.
	for p := range st.Files {
		if _, err := tree.CleanRel(p); err != nil || tree.IsGitPath(p) {
			delete(st.Files, p)
		}
	}
	return st, dir, nil
}

// saveState replaces the state file atomically.
func saveState(dir string, st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return wholefile.Write(filepath.Join(dir, StateFile), b, 0o600)
}

// Check refuses a workspace that is not a directory on this host, so a
// create with a typo costs no VM.
func Check(spec api.WorkspaceSpec) error {
	fi, err := os.Stat(spec.Path)
	if err != nil {
		return fmt.Errorf("%w: workspace %s: not a directory on this host: %v", api.ErrInvalidArgument, spec.Path, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: workspace %s: not a directory on this host: a file", api.ErrInvalidArgument, spec.Path)
	}
	return nil
}

// Prepare places the host tree p.Path in the VM (all of it in one put),
// or with p.DryRun only lists what would go.
func (s *Service) Prepare(ctx context.Context, p api.WorkspacePrepareParams, progress Progress) (api.WorkspacePrepareResult, error) {
	res := api.WorkspacePrepareResult{Name: p.Name, Dir: s.cfg.GuestDir}
	if !filepath.IsAbs(p.Path) {
		return res, fmt.Errorf("%w: workspace path %q must be absolute", api.ErrInvalidArgument, p.Path)
	}
	if err := s.hostTree(ctx, p.Path, "workspace prepare"); err != nil {
		return res, err
	}
	sel, err := Select(ctx, filepath.Clean(p.Path), p.IncludeUntracked)
	if err != nil {
		return res, fmt.Errorf("%w: %v", api.ErrInvalidArgument, err)
	}
	res.Base = sel.Base
	if p.DryRun {
		res.List, res.Files = sel.Files, len(sel.Files)
		return res, nil
	}
	a, err := s.cfg.VMs.Agent(ctx, p.Name)
	if err != nil {
		return res, err
	}
	stateDir, err := s.cfg.VMs.StateDir(ctx, p.Name)
	if err != nil {
		return res, err
	}
	st := State{Host: sel.Root, Guest: s.cfg.GuestDir, Base: sel.Base, IncludeUntracked: p.IncludeUntracked, Files: map[string]proto.TreeEntry{}}
	paths := slices.Clone(sel.Files)
	expect := map[string]string{}
	sc := s.hashes.Begin(sel.Root) // warm for the first status
	for i, f := range sel.Files {
		e, err := sc.Entry(filepath.Join(sel.Root, filepath.FromSlash(f)), f)
		if err != nil {
			return res, fmt.Errorf("reading %s: %w", f, err)
		}
		st.Files[f] = e
		if e.Type == "f" {
			expect[f] = e.SHA256
			res.Bytes += e.Size
		}
		progress(api.WorkspaceProgress{Phase: "hashing", Done: int64(i + 1), Total: int64(len(sel.Files)), Unit: "files"})
	}
	sc.End(true)
	if sel.Git {
		gitFiles, err := walkRel(sel.Root, ".git")
		if err != nil {
			return res, err
		}
		paths = append(paths, gitFiles...)
	}
	res.Files = len(sel.Files)
	_, err = s.put(ctx, a, tree.Spec{Dir: sel.Root, Paths: paths, Hashes: expect}, proto.PutTreeParams{Dir: s.cfg.GuestDir, ReadOnly: p.ReadOnly}, progress)
	if err != nil {
		return res, fmt.Errorf("placing the workspace in vm %s: %w", p.Name, err)
	}
	crashpoint.At("workspace.prepare", "placed in the guest")
	if err := saveState(stateDir, st); err != nil {
		return res, err
	}
	crashpoint.At("workspace.prepare", "state saved")
	if err := s.cfg.VMs.Placed(ctx, p.Name, s.cfg.GuestDir); err != nil {
		return res, err
	}
	s.cfg.Log.Info("workspace placed", "vm", p.Name, "host", sel.Root, "files", res.Files, "base", sel.Base)
	return res, nil
}

// Reconcile runs at daemon start over the VMs named: a prepare the
// previous daemon's end cut short after the workspace's state was saved
// (its commit point) but before the VM's record named the workspace is
// finished, so the record and the state agree.
func (s *Service) Reconcile(ctx context.Context, names []string) error {
	for _, name := range names {
		st, _, err := s.loadState(ctx, name)
		if err != nil {
			continue // no workspace, or none readable: nothing to finish
		}
		if err := s.cfg.VMs.Placed(ctx, name, st.Guest); err != nil {
			return fmt.Errorf("recording the workspace of vm %s: %w", name, err)
		}
	}
	return nil
}

// hostTree is the config's HostTree, or nil.
func (s *Service) hostTree(ctx context.Context, path, what string) error {
	if s.cfg.HostTree == nil {
		return nil
	}
	return s.cfg.HostTree(ctx, path, what)
}

// walkRel lists a subtree (directories first, then their contents) as
// slash paths relative to root.
func walkRel(root, sub string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(filepath.Join(root, sub), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	return out, err
}

// put streams spec to the guest as one tar, all or nothing.
func (s *Service) put(ctx context.Context, a Agent, spec tree.Spec, p proto.PutTreeParams, progress Progress) (proto.TreeResult, error) {
	p.Entries = len(spec.Paths)
	pr, pw := io.Pipe()
	go func() {
		w := &countingWriter{w: pw, progress: progress, phase: "sending"}
		_, err := tree.Write(w, spec)
		pw.CloseWithError(err)
	}()
	r, err := a.PutTree(ctx, p, pr)
	pr.CloseWithError(errors.New("the put ended"))
	return r, err
}

// countingWriter reports bytes written as progress.
type countingWriter struct {
	w        io.Writer
	n        int64
	progress Progress
	phase    string
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.progress(api.WorkspaceProgress{Phase: c.phase, Done: c.n, Unit: "bytes"})
	return n, err
}

// ownerOf is the uid and gid owning dir, for files the daemon writes into
// a user's tree.
func ownerOf(dir string) (int, int) {
	fi, err := os.Stat(dir)
	if err != nil {
		return os.Getuid(), os.Getgid()
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return os.Getuid(), os.Getgid()
}
