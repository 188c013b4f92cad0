package workspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/tree"
	"github.com/bangerdev/banger/internal/crashpoint"
	"github.com/bangerdev/banger/internal/diskspace"
	"github.com/bangerdev/banger/internal/units"
)

// files is one side's files by path (regular files and symlinks).
type files map[string]proto.TreeEntry

// hashes are the sha256 of the regular files among paths, and their
// bytes in all: what a transfer of paths must deliver.
func (fs files) hashes(paths []string) (map[string]string, int64) {
	sums := map[string]string{}
	var n int64
	for _, f := range paths {
		if e := fs[f]; e.Type == "f" {
			sums[f] = e.SHA256
			n += e.Size
		}
	}
	return sums, n
}

// same compares entries as git would: type, content, link and whether
// the file is executable. Other mode bits do not sync (the host masks
// what comes from a guest), so they cannot make a change.
func same(a, b proto.TreeEntry) bool {
	return a.Type == b.Type && a.SHA256 == b.SHA256 && a.Link == b.Link && a.Mode&0o111 != 0 == (b.Mode&0o111 != 0)
}

// changes compares a side now with the last sync.
func changes(last, now files) api.WorkspaceChanges {
	c := api.WorkspaceChanges{Added: []string{}, Modified: []string{}, Deleted: []string{}}
	for p, e := range now {
		old, ok := last[p]
		switch {
		case !ok:
			c.Added = append(c.Added, p)
		case !same(old, e):
			c.Modified = append(c.Modified, p)
		}
	}
	for p := range last {
		if _, ok := now[p]; !ok {
			c.Deleted = append(c.Deleted, p)
		}
	}
	slices.Sort(c.Added)
	slices.Sort(c.Modified)
	slices.Sort(c.Deleted)
	return c
}

func changed(c api.WorkspaceChanges) []string {
	return slices.Concat(c.Added, c.Modified, c.Deleted)
}

// conflicts are the paths both sides changed, to different results.
func conflicts(host, guest files, hc, gc api.WorkspaceChanges) []string {
	inHost := map[string]bool{}
	for _, p := range changed(hc) {
		inHost[p] = true
	}
	out := []string{}
	for _, p := range changed(gc) {
		if !inHost[p] {
			continue
		}
		h, hok := host[p]
		g, gok := guest[p]
		if hok != gok || (hok && !same(h, g)) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// hostTree hashes the host side: the files the workspace selects now,
// plus those the last sync knew (a deleted one is simply absent); cache
// holds the hashes of files whose stamps did not change.
func hostTree(ctx context.Context, root string, st State, cache *tree.Cache) (files, error) {
	sel, err := Select(ctx, root, st.IncludeUntracked)
	if err != nil {
		return nil, err
	}
	paths := slices.Clone(sel.Files)
	for p := range st.Files {
		// A state from an older banger may name paths no guest may sync.
		if _, err := tree.CleanRel(p); err == nil && !tree.IsGitPath(p) {
			paths = append(paths, p)
		}
	}
	out := files{}
	checked := map[string]bool{}
	sc := cache.Begin(root)
	for _, p := range paths {
		if _, done := out[p]; done {
			continue
		}
		e, err := sc.EntryIn(root, p, checked)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if e.Type != "d" {
			out[p] = e
		}
	}
	sc.End(true)
	return out, nil
}

// guestTree lists the guest side, leaving out .git at any depth (its
// commits travel by export, not by sync). The listing is the guest's
// proposal: vetManifest keeps only what the host may use.
func (s *Service) guestTree(ctx context.Context, a Agent, dir string) (files, error) {
	entries, err := a.Manifest(ctx, proto.ManifestParams{Dir: dir, Exclude: []string{".git"}},
		s.cfg.MaxEntries, max(int64(s.cfg.MaxEntries)*manifestBytesPerEntry, 1<<20))
	if errors.Is(err, proto.ErrFrame) {
		return nil, fmt.Errorf("listing the guest's workspace: %w: %w; raise workspace.max_entries if the tree is really that large", api.ErrGuestRefused, err)
	}
	if err != nil {
		return nil, fmt.Errorf("listing the guest's workspace: %w", err)
	}
	return vetManifest(entries, s.cfg.MaxBytes)
}

// sides is everything a status, pull or push works from.
type sides struct {
	st       State
	stateDir string
	hostDir  string
	a        Agent
	host     files
	guest    files
	hc, gc   api.WorkspaceChanges
	conflict []string
}

func (s *Service) sides(ctx context.Context, name, dir string) (sides, error) {
	var sd sides
	var err error
	if dir != "" {
		// Checked first: a caller refused the directory learns nothing
		// of the VM.
		if !filepath.IsAbs(dir) {
			return sd, fmt.Errorf("%w: directory %q must be absolute", api.ErrInvalidArgument, dir)
		}
		if err := s.hostTree(ctx, dir, "a workspace sync with"); err != nil {
			return sd, err
		}
	}
	if sd.st, sd.stateDir, err = s.loadState(ctx, name); err != nil {
		return sd, err
	}
	sd.hostDir = sd.st.Host
	if dir != "" {
		sd.hostDir = filepath.Clean(dir)
	} else if err := s.hostTree(ctx, sd.hostDir, "a workspace sync with"); err != nil {
		return sd, err
	}
	if sd.a, err = s.cfg.VMs.Agent(ctx, name); err != nil {
		return sd, err
	}
	if sd.host, err = hostTree(ctx, sd.hostDir, sd.st, &s.hashes); err != nil {
		return sd, err
	}
	if sd.guest, err = s.guestTree(ctx, sd.a, sd.st.Guest); err != nil {
		return sd, fmt.Errorf("vm %s: %w", name, err)
	}
	last := files(sd.st.Files)
	sd.hc, sd.gc = changes(last, sd.host), changes(last, sd.guest)
	sd.conflict = conflicts(sd.host, sd.guest, sd.hc, sd.gc)
	return sd, nil
}

// Status says what changed on each side since the last sync.
func (s *Service) Status(ctx context.Context, p api.WorkspaceRefParams) (api.WorkspaceStatus, error) {
	sd, err := s.sides(ctx, p.Name, p.Dir)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	return api.WorkspaceStatus{Name: p.Name, HostDir: sd.hostDir, GuestDir: sd.st.Guest, Base: sd.st.Base,
		Host: sd.hc, Guest: sd.gc, Conflicts: sd.conflict}, nil
}

// refuse is the error for conflicts without force.
func refuse(verb string, paths []string) error {
	shown := paths
	if len(shown) > 20 {
		shown = shown[:20]
	}
	more := ""
	if len(paths) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(paths)-len(shown))
	}
	return fmt.Errorf("%w: %s would overwrite changes on both sides: %s%s; see `banger vm workspace status`, or pass --force to take this side's",
		api.ErrInUse, verb, strings.Join(shown, ", "), more)
}

// Pull brings the guest's changes into the host directory, all at once.
// A host file changed since the last sync, or one the sync never put
// there, is not replaced or removed unless p.Force.
func (s *Service) Pull(ctx context.Context, p api.WorkspaceRefParams, progress Progress) (api.WorkspaceSyncResult, error) {
	sd, err := s.sides(ctx, p.Name, p.Dir)
	if err != nil {
		return api.WorkspaceSyncResult{}, err
	}
	res := api.WorkspaceSyncResult{Name: p.Name, Dir: sd.hostDir, Changes: sd.gc}
	// Files the sync did not put on the host (ignored ones, say) count
	// as host changes too.
	var clash, dirs []string
	checked := map[string]bool{}
	for _, path := range changed(sd.gc) {
		last, known := sd.st.Files[path]
		cur, hashed := sd.host[path]
		var err error
		if !hashed { // outside the selection (ignored, say): not hashed yet
			cur, err = tree.EntryIn(sd.hostDir, path, checked)
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return res, err
		case cur.Type == "d" && sd.guest[path].Type != "":
			// A file of the guest's where the host has a directory: never
			// replaced, --force or not (it may hold anything).
			dirs = append(dirs, path)
		case cur.Type == "d":
			// Deleted in the guest, a directory on the host: it stays.
		case !known || !same(last, cur):
			if g, ok := sd.guest[path]; !ok || !same(g, cur) {
				clash = append(clash, path)
			}
		}
	}
	slices.Sort(clash)
	if len(dirs) > 0 {
		return res, fmt.Errorf("%w: pull from vm %s would replace host directories with the guest's files: %q; move them away on the host, or rename them in the guest", api.ErrInUse, p.Name, dirs)
	}
	if len(clash) > 0 && !p.Force {
		return res, refuse("pull from vm "+p.Name, clash)
	}
	res.Overwritten = clash
	saves := p.Dir == "" || filepath.Clean(p.Dir) == sd.st.Host // a pull elsewhere leaves the state
	fetch := slices.Concat(sd.gc.Added, sd.gc.Modified)
	want, n, err := s.wanted(sd.guest, fetch)
	if err == nil {
		err = diskspace.Need(sd.hostDir, n)
	}
	if err == nil && saves {
		// The state is saved after the host tree changed: room for it
		// is checked first, so a full state leaves the tree as it was.
		err = diskspace.Need(sd.stateDir, 0)
	}
	if err != nil {
		return res, fmt.Errorf("pulling from vm %s: %w", p.Name, err)
	}
	res.Bytes += n
	uid, gid := ownerOf(sd.hostDir)
	put := proto.PutTreeParams{Dir: sd.hostDir, UID: uid, GID: gid}
	// The guest's tar goes straight into the host's all-or-nothing
	// extraction: staged beside the tree, checked, then renamed.
	pr, pw := io.Pipe()
	go func() {
		w := &countingWriter{w: pw, progress: progress, phase: "receiving"}
		_, err := sd.a.GetTree(ctx, sd.st.Guest, fetch, w)
		pw.CloseWithError(err)
	}()
	// Deletions happen with the rest, after every file is checked: the
	// host's own list, from the manifests, never the stream's.
	if _, err := tree.Extract(pr, put, tree.Local{Want: want, Delete: sd.gc.Deleted, MaxBytes: s.cfg.MaxBytes}); err != nil {
		pr.CloseWithError(err)
		return res, fmt.Errorf("pulling from vm %s: %w; the host tree is unchanged", p.Name, guestFault(err))
	}
	crashpoint.At("workspace.pull", "host tree changed")
	sd.record(sd.gc, sd.guest)
	if saves {
		if err := saveState(sd.stateDir, sd.st); err != nil {
			return res, err
		}
	}
	s.cfg.Log.Info("workspace pulled", "vm", p.Name, "dir", sd.hostDir, "changed", len(changed(sd.gc)))
	return res, nil
}

// Push sends the host's changes into the guest, all at once; a guest
// file changed since the last sync is not replaced or removed unless
// p.Force.
func (s *Service) Push(ctx context.Context, p api.WorkspaceRefParams, progress Progress) (api.WorkspaceSyncResult, error) {
	sd, err := s.sides(ctx, p.Name, p.Dir)
	if err != nil {
		return api.WorkspaceSyncResult{}, err
	}
	res := api.WorkspaceSyncResult{Name: p.Name, Dir: sd.st.Guest, Changes: sd.hc}
	if len(sd.conflict) > 0 && !p.Force {
		return res, refuse("push to vm "+p.Name, sd.conflict)
	}
	res.Overwritten = sd.conflict
	send := slices.Concat(sd.hc.Added, sd.hc.Modified)
	expect, n := sd.host.hashes(send)
	res.Bytes += n
	// The state is saved after the guest's tree changed: room first.
	if err := diskspace.Need(sd.stateDir, 0); err != nil {
		return res, fmt.Errorf("pushing to vm %s: %w", p.Name, err)
	}
	spec := tree.Spec{Dir: sd.hostDir, Paths: send, Hashes: expect, Delete: sd.hc.Deleted}
	if _, err := s.put(ctx, sd.a, spec, proto.PutTreeParams{Dir: sd.st.Guest}, progress); err != nil {
		return res, fmt.Errorf("pushing to vm %s: %w; the guest's workspace is unchanged", p.Name, err)
	}
	crashpoint.At("workspace.push", "guest tree changed")
	sd.record(sd.hc, sd.host)
	if err := saveState(sd.stateDir, sd.st); err != nil {
		return res, err
	}
	s.cfg.Log.Info("workspace pushed", "vm", p.Name, "dir", sd.hostDir, "changed", len(changed(sd.hc)))
	return res, nil
}

// record notes in the state what a sync carried over from side now.
func (sd *sides) record(c api.WorkspaceChanges, now files) {
	for _, p := range slices.Concat(c.Added, c.Modified) {
		sd.st.Files[p] = now[p]
	}
	for _, p := range c.Deleted {
		delete(sd.st.Files, p)
	}
}

// wanted is what a transfer of paths from the guest must bring, as the
// guest's vetted manifest described it, and its bytes; it refuses a
// transfer over the caps (the caller checks the room where it lands).
func (s *Service) wanted(guest files, paths []string) (map[string]proto.TreeEntry, int64, error) {
	if len(paths) > s.cfg.MaxEntries {
		return nil, 0, fmt.Errorf("%w: %d files is over workspace.max_entries (%d); raise it in the config", api.ErrLimitExceeded, len(paths), s.cfg.MaxEntries)
	}
	want := make(map[string]proto.TreeEntry, len(paths))
	var n int64
	for _, p := range paths {
		e := guest[p]
		want[p] = e
		n += e.Size
	}
	if n > s.cfg.MaxBytes {
		return nil, 0, fmt.Errorf("%w: %s in %d files is over workspace.max_bytes (%s); raise it in the config, or remove the large files in the guest",
			api.ErrLimitExceeded, units.FormatSize(n), len(paths), units.FormatSize(s.cfg.MaxBytes))
	}
	return want, n, nil
}

// guestFault marks an extraction's refusal of the guest's stream as the
// guest's doing, and a type clash as a conflict.
func guestFault(err error) error {
	switch {
	case errors.Is(err, tree.ErrRefused):
		return fmt.Errorf("%w: %w", api.ErrGuestRefused, err)
	case errors.Is(err, tree.ErrConflict):
		return fmt.Errorf("%w: %w", api.ErrInUse, err)
	}
	return err
}
