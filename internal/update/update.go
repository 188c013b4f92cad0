// Package update replaces banger's binaries with a signed release, and
// puts the previous ones back: the index's signature and the tarball's
// checksum checked before anything else, nothing swapped while an
// operation is in flight or when the new daemon could not open the
// store, the old binaries kept beside the new, the daemon (and helper)
// restarted and the new doctor run, any failure after the swap rolled
// back. Running VMs are not touched: a restarted daemon adopts them.
package update

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/release"
)

// PreviousDir is the usual name of Host.KeepDir: the binaries an update
// replaced, and their VERSION.
const PreviousDir = ".banger-previous"

// Migration is what a staged daemon says of the store
// (`bangerd --check-migrations`).
type Migration int

const (
	Compatible  Migration = iota // opens it as it is
	WillMigrate                  // migrates it on start
	Refuses                      // cannot open it
)

// Host is what an update does to this machine, as function fields so
// a test can stand in for any of them.
type Host struct {
	// Current is the running release's version.
	Current string
	// Paths are where each of release.Binaries lives: the install's, or
	// beside the CLI.
	Paths map[string]string
	// KeepDir keeps the binaries an update replaced, with their VERSION.
	KeepDir string
	// Store is the daemon's database: copied before a release that
	// migrates it, and put back if that release is rolled back. The
	// update never opens it itself: StoreSteps do (as the owner,
	// installed: Bangerd).
	Store      string
	StoreSteps StoreSteps
	// InFlight lists the daemon's unfinished operations (nil, nil when
	// no daemon runs).
	InFlight func(ctx context.Context) ([]api.OperationSummary, error)
	// MarkFile keeps the high-water mark (Mark): the newest index issue
	// time and release this host has verified. "" keeps none.
	MarkFile string
	// Now is the time indexes are checked at (nil: time.Now).
	Now func() time.Time
	// Version is what a staged binary says its version is.
	Version func(ctx context.Context, bangerd string) (string, error)
	// Daemon is the daemon (and, installed, the helper) to stop and
	// restart.
	Daemon Daemon
	// Doctor runs the binaries' doctor: an error names what failed.
	Doctor func(ctx context.Context, banger string) error
	// Say reports a step, on a terminal.
	Say func(format string, args ...any)
}

// StoreSteps run a daemon binary's store commands on the store (as
// Bangerd does).
type StoreSteps interface {
	// CheckMigrations runs bangerd's --check-migrations.
	CheckMigrations(ctx context.Context, bangerd string) (Migration, string, error)
	// Backup copies the store to dst, beside it; Restore puts such a
	// copy back in its place.
	Backup(ctx context.Context, bangerd, dst string) error
	Restore(ctx context.Context, bangerd, backup string) error
}

// Daemon is the daemon as an update stops and restarts it.
type Daemon interface {
	// Restart restarts the daemon (and the helper) on the binaries in
	// Host.Paths, returning once it answers.
	Restart(ctx context.Context) error
	// Stop stops the daemon (none running is no error).
	Stop(ctx context.Context) error
}

// Options choose the release.
type Options struct {
	From   *release.Source
	Key    release.Key
	To     string // a version; "" is the newest
	DryRun bool   // everything but the swap
	// AllowDowngrade lets To name a release older than the installed
	// one; without it such a release is refused.
	AllowDowngrade bool
}

// Plan is what an update found.
type Plan struct {
	Source    string   `json:"source"`
	Current   string   `json:"current"`
	Target    string   `json:"target"`
	Available []string `json:"available"`
	UpToDate  bool     `json:"up_to_date"`
	Migration string   `json:"migration,omitempty"`
	// IndexIssued and IndexExpires are what the index's signature says.
	IndexIssued  time.Time `json:"index_issued,omitzero"`
	IndexExpires time.Time `json:"index_expires,omitzero"`
}

// ErrDowngrade: the release asked for is older than the installed one.
var ErrDowngrade = errors.New("a downgrade")

// Result is what an update or a rollback did.
type Result struct {
	Plan
	Updated    bool   `json:"updated"`
	RolledBack bool   `json:"rolled_back"`
	Reason     string `json:"reason,omitempty"` // why it rolled back
	Previous   string `json:"previous,omitempty"`
}

// ErrRolledBack: the update failed after the swap and the previous
// binaries are back.
var ErrRolledBack = errors.New("update rolled back")

// Check reads the source's signed index, refuses one that expired or
// was issued before the newest this host has verified (and raises that
// mark), and picks the release to go to.
func Check(ctx context.Context, h Host, o Options) (Plan, release.Entry, error) {
	p := Plan{Source: o.From.String(), Current: h.Current}
	if o.AllowDowngrade && o.To == "" {
		return p, release.Entry{}, fmt.Errorf("%w: --allow-downgrade goes with --to VERSION, the release to go back to", api.ErrInvalidArgument)
	}
	ix, meta, err := o.From.Index(ctx, o.Key)
	if err != nil {
		return p, release.Entry{}, err
	}
	p.IndexIssued, p.IndexExpires = meta.Issued, meta.Expires
	mark, err := ReadMark(h.MarkFile)
	if err != nil {
		return p, release.Entry{}, err
	}
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	if err := meta.Check(now(), mark.IndexIssued); err != nil {
		return p, release.Entry{}, fmt.Errorf("the release index of %s: %w; nothing was changed", o.From, err)
	}
	if err := mark.Raise(h.MarkFile, meta.Issued, ix.Latest().Version); err != nil {
		return p, release.Entry{}, err
	}
	p.Available = ix.Versions()
	var e release.Entry
	switch {
	case o.From.File != "":
		var ok bool
		for _, c := range ix {
			if c.File == o.From.File {
				e, ok = c, true
			}
		}
		if !ok {
			return p, e, fmt.Errorf("%w: %s names no %s", api.ErrNotFound, release.SumsName, o.From.File)
		}
		if o.To != "" && o.To != e.Version {
			return p, e, fmt.Errorf("%w: --to %s, but %s is release %s", api.ErrInvalidArgument, o.To, o.From.File, e.Version)
		}
	case o.To != "":
		if !release.ValidVersion(o.To) {
			return p, e, fmt.Errorf("%w: --to %q is not a version (MAJOR.MINOR.PATCH)", api.ErrInvalidArgument, o.To)
		}
		var ok bool
		if e, ok = ix.Find(o.To); !ok {
			return p, e, fmt.Errorf("%w: %s has no release %s; it has %s", api.ErrNotFound, o.From, o.To, strings.Join(p.Available, ", "))
		}
	default:
		e = ix.Latest()
		if release.ValidVersion(h.Current) && release.Compare(e.Version, h.Current) <= 0 {
			p.Target, p.UpToDate = h.Current, true
			return p, e, nil
		}
	}
	p.Target = e.Version
	p.UpToDate = e.Version == h.Current
	if !p.UpToDate && release.ValidVersion(h.Current) && release.Compare(e.Version, h.Current) < 0 && !o.AllowDowngrade {
		return p, e, fmt.Errorf("%w: release %s is older than the installed %s (%w); pass --allow-downgrade with --to %s to mean it "+
			"(`banger update --rollback` puts the previous binaries back); nothing was changed",
			api.ErrInvalidArgument, e.Version, h.Current, ErrDowngrade, e.Version)
	}
	return p, e, nil
}

// Apply updates to the release Check picks.
func Apply(ctx context.Context, h Host, o Options) (Result, error) {
	p, e, err := Check(ctx, h, o)
	res := Result{Plan: p}
	if err != nil || p.UpToDate {
		return res, err
	}
	tarball, err := o.From.Tarball(ctx, e)
	if err != nil {
		return res, err
	}
	h.Say("release %s: signature and checksum good", e.Version)
	stage, err := os.MkdirTemp(filepath.Dir(h.KeepDir), ".banger-update-")
	if err != nil {
		return res, fmt.Errorf("staging the release: %w", err)
	}
	defer os.RemoveAll(stage)
	// The owner runs the staged bangerd's store check (Bangerd): its
	// directory must be open to it; its files stay root's.
	if err := os.Chmod(stage, 0o755); err != nil {
		return res, fmt.Errorf("staging the release: %w", err)
	}
	if err := release.Unpack(tarball, stage); err != nil {
		return res, err
	}
	if v, err := h.Version(ctx, filepath.Join(stage, "bangerd")); err != nil {
		return res, fmt.Errorf("running the new bangerd: %w; nothing was changed", err)
	} else if v != e.Version {
		return res, fmt.Errorf("%w: the tarball of release %s holds bangerd %s; nothing was changed", release.ErrBadTarball, e.Version, v)
	}
	if err := preflight(ctx, h); err != nil {
		return res, err
	}
	m, msg, err := h.StoreSteps.CheckMigrations(ctx, filepath.Join(stage, "bangerd"))
	if err != nil {
		return res, fmt.Errorf("checking the store with the new bangerd: %w; nothing was changed", err)
	}
	res.Migration = msg
	if m == Refuses {
		return res, fmt.Errorf("%w: the new bangerd cannot open the store: %s; nothing was changed", api.ErrInvalidArgument, msg)
	}
	if o.DryRun {
		h.Say("dry run: would replace %s with %s in %s, then restart the daemon and run doctor", h.Current, e.Version, filepath.Dir(h.Paths["banger"]))
		return res, nil
	}
	// A release that migrates the store leaves one the old daemon cannot
	// open: a copy first, put back if this release is rolled back.
	var backup string
	if m == WillMigrate {
		backup = h.Store + ".before-" + e.Version
		if err := h.StoreSteps.Backup(ctx, h.Paths["bangerd"], backup); err != nil {
			return res, fmt.Errorf("copying the store: %w; nothing was changed", err)
		}
		h.Say("store copied to %s (release %s migrates it)", backup, e.Version)
	}
	// The old binaries go to a new keep directory, which replaces the
	// kept ones only once the update held: a failed update leaves the
	// previous rollback target as it was.
	fresh := h.KeepDir + ".new"
	if err := keep(h.Paths, fresh, h.Current); err != nil {
		os.RemoveAll(fresh)
		return res, err
	}
	defer os.RemoveAll(fresh)
	if err := install(stage, h.Paths); err != nil {
		if rerr := install(fresh, h.Paths); rerr != nil {
			return res, fmt.Errorf("installing release %s: %w; putting the old binaries back also failed: %v (they are in %s)", e.Version, err, rerr, fresh)
		}
		return res, fmt.Errorf("installing release %s: %w; the old binaries are back", e.Version, err)
	}
	h.Say("binaries of %s in place", e.Version)
	res.Previous = h.Current
	if reason := settle(ctx, h); reason != "" {
		h.Say("%s; rolling back to %s", reason, h.Current)
		res.RolledBack, res.Reason = true, reason
		if err := install(fresh, h.Paths); err != nil {
			return res, fmt.Errorf("%w: %s; and putting %s back failed: %v (the old binaries are in %s)", ErrRolledBack, reason, h.Current, err, fresh)
		}
		if backup != "" {
			if err := h.Daemon.Stop(ctx); err != nil {
				return res, fmt.Errorf("%w: %s; %s is back, but stopping the daemon to put the store back failed: %v (the copy is %s)", ErrRolledBack, reason, h.Current, err, backup)
			}
			if err := h.StoreSteps.Restore(ctx, h.Paths["bangerd"], backup); err != nil {
				return res, fmt.Errorf("%w: %s; %s is back, but its store is not: %v (the copy is %s)", ErrRolledBack, reason, h.Current, err, backup)
			}
		}
		if err := h.Daemon.Restart(ctx); err != nil {
			return res, fmt.Errorf("%w: %s; %s is back, but its daemon did not start: %v", ErrRolledBack, reason, h.Current, err)
		}
		return res, fmt.Errorf("%w to %s: %s", ErrRolledBack, h.Current, reason)
	}
	if err := os.RemoveAll(h.KeepDir); err != nil {
		return res, fmt.Errorf("updated to %s, but replacing the kept binaries failed: %w", e.Version, err)
	}
	if err := os.Rename(fresh, h.KeepDir); err != nil {
		return res, fmt.Errorf("updated to %s, but keeping the old binaries failed: %w", e.Version, err)
	}
	res.Updated = true
	return res, nil
}

// preflight refuses while the daemon has work in flight, naming it.
func preflight(ctx context.Context, h Host) error {
	ops, err := h.InFlight(ctx)
	if err != nil {
		return fmt.Errorf("asking the daemon what is in flight: %w; nothing was changed", err)
	}
	var busy []string
	for _, op := range ops {
		if op.Done {
			continue
		}
		what := op.Kind + " " + op.Target
		if op.Phase != "" {
			what += " (" + op.Phase + ")"
		}
		busy = append(busy, what+" "+op.ID)
	}
	if len(busy) > 0 {
		return fmt.Errorf("%w: %d operation(s) in flight: %s; wait for them (`banger ops wait ID`) or cancel them, then update; nothing was changed",
			api.ErrInUse, len(busy), strings.Join(busy, ", "))
	}
	return nil
}

// settle restarts on the binaries in place and runs their doctor: the
// reason it failed, or "".
func settle(ctx context.Context, h Host) string {
	h.Say("restarting the daemon")
	if err := h.Daemon.Restart(ctx); err != nil {
		return "the daemon did not start again: " + err.Error()
	}
	h.Say("running doctor")
	if err := h.Doctor(ctx, h.Paths["banger"]); err != nil {
		return "doctor failed: " + err.Error()
	}
	return ""
}

// Rollback puts the previous binaries back (and keeps the current ones
// as the previous, so a second rollback undoes the first).
func Rollback(ctx context.Context, h Host) (Result, error) {
	prev, err := os.ReadFile(filepath.Join(h.KeepDir, "VERSION"))
	if errors.Is(err, fs.ErrNotExist) {
		return Result{}, fmt.Errorf("%w: no previous binaries in %s: nothing to roll back to", api.ErrNotFound, h.KeepDir)
	}
	if err != nil {
		return Result{}, fmt.Errorf("reading the previous release: %w", err)
	}
	res := Result{Plan: Plan{Current: h.Current, Target: strings.TrimSpace(string(prev))}, Previous: h.Current}
	if err := preflight(ctx, h); err != nil {
		return res, err
	}
	// The store may have been migrated since: an older daemon refuses it.
	// Putting the copy made before the update back would lose what
	// changed since (VMs made, deleted): the owner's call, not ours.
	if m, msg, err := h.StoreSteps.CheckMigrations(ctx, filepath.Join(h.KeepDir, "bangerd")); err != nil {
		return res, fmt.Errorf("checking the store with the previous bangerd: %w; nothing was changed", err)
	} else if m == Refuses {
		return res, fmt.Errorf("%w: the previous bangerd (%s) cannot open the store, which the update migrated: %s; nothing was changed. "+
			"The copy made before the update is %s.before-*: putting it back by hand loses what changed since", api.ErrInvalidArgument, res.Target, msg, h.Store)
	}
	if err := swap(h.Paths, h.KeepDir, h.Current); err != nil {
		return res, fmt.Errorf("putting the previous binaries back: %w", err)
	}
	h.Say("binaries of %s back in place", res.Target)
	if reason := settle(ctx, h); reason != "" {
		return res, fmt.Errorf("rolled back to %s, but %s", res.Target, reason)
	}
	res.Updated = true
	return res, nil
}

// keep copies the binaries to keepDir, with their version.
func keep(paths map[string]string, keepDir, version string) error {
	if err := os.RemoveAll(keepDir); err != nil {
		return fmt.Errorf("keeping the old binaries: %w", err)
	}
	if err := os.Mkdir(keepDir, 0o755); err != nil {
		return fmt.Errorf("keeping the old binaries: %w", err)
	}
	for _, name := range release.Binaries {
		if err := copyFile(paths[name], filepath.Join(keepDir, name)); err != nil {
			return fmt.Errorf("keeping the old binaries: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(keepDir, "VERSION"), []byte(version+"\n"), 0o644); err != nil {
		return fmt.Errorf("keeping the old binaries: %w", err)
	}
	return nil
}

// install puts the binaries of from in their places, each by an atomic
// rename in its own directory: a binary is the old one or the new one,
// never half.
func install(from string, paths map[string]string) error {
	for _, name := range release.Binaries {
		tmp := filepath.Join(filepath.Dir(paths[name]), "."+name+".new")
		if err := copyFile(filepath.Join(from, name), tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, paths[name]); err != nil {
			_ = os.Remove(tmp)
			return err
		}
	}
	return nil
}

// swap exchanges the binaries in place with those kept in keepDir; the
// kept ones are then version's, those that were in place.
func swap(paths map[string]string, keepDir, version string) error {
	cur, err := os.MkdirTemp(filepath.Dir(keepDir), ".banger-swap-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cur)
	for _, name := range release.Binaries {
		if err := copyFile(paths[name], filepath.Join(cur, name)); err != nil {
			return err
		}
	}
	if err := install(keepDir, paths); err != nil {
		return err
	}
	for _, name := range release.Binaries {
		if err := os.Rename(filepath.Join(cur, name), filepath.Join(keepDir, name)); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(keepDir, "VERSION"), []byte(version+"\n"), 0o644)
}

// copyFile copies src to dst (created, 0755), synced.
func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
