package vm

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/proc"
)

// Reconcile runs once at daemon start: VMs recorded running whose VMM
// still runs are taken back; those whose VMM died are recorded stopped;
// creates that the previous daemon did not finish are undone (their VMM
// ended, record, lease and directories removed: the caller was never
// told of a VM); a VMM that no record accounts for (one started just
// before the daemon died, its pid not yet recorded) is ended; runtime
// directories that no record owns are removed.
func (s *Service) Reconcile(ctx context.Context) error {
	all, err := s.recs.all(ctx)
	if err != nil {
		return err
	}
	s.tmpl.sweepBuilds()
	s.tmpl.dropGone(ctx)
	// Every process's command line, read once: a VMM no record has the
	// pid of is known by its VM's runtime directory there.
	args := proc.Args()
	owned := map[string]bool{}
	var alive []string
	for _, rec := range all {
		owned[rec.ID] = true
		s.saved.sweep(rec)
		switch rec.State {
		case api.VMRunning:
			if s.vmms.adopt(rec) {
				alive = append(alive, rec.ID)
				s.cfg.Log.Info("vm taken back after a daemon restart", "vm", rec.Name, "pid", rec.PID)
				continue
			}
			rec.State, rec.Reason = api.VMStopped, "its VMM exited while the daemon was not running"
		case api.VMCreating:
			s.vmms.end(rec)
			s.vmms.endStrays(args, rec.ID)
			delete(owned, rec.ID)
			if err := s.recs.remove(ctx, rec); err != nil {
				return err
			}
			s.cfg.Log.Info("an interrupted create undone", "vm", rec.Name)
			continue
		case api.VMSuspended:
			if rec.PID == 0 {
				continue // its saved state waits in its directory
			}
			// A resume the daemon's end cut short: its VMM goes, the
			// state (removed only after a resume) stays.
			s.vmms.end(rec)
			rec.Reason = "a resume was cut short (the daemon stopped); resume it again"
		default:
			if rec.PID == 0 {
				continue
			}
			// A start from a checkpoint the daemon's end cut short.
			s.vmms.end(rec)
			rec.Reason = "its start was cut short (the daemon stopped); start it again"
		}
		rec.PID, rec.PIDStart, rec.StoppedAt = 0, 0, time.Now()
		if err := s.recs.put(ctx, rec); err != nil {
			return err
		}
		s.cfg.Log.Info("vm reconciled", "vm", rec.Name, "state", rec.State, "reason", rec.Reason)
		if rec.State == api.VMStopped {
			s.recs.announce(api.EventVMStopped, rec.Name, rec.Image, rec.Reason)
		}
	}
	for _, rec := range all {
		if owned[rec.ID] && !slices.Contains(alive, rec.ID) {
			s.vmms.endStrays(args, rec.ID)
		}
	}
	s.vmms.sync(all, alive)
	for _, parent := range []string{s.cfg.RunDir, s.cfg.StateDir} {
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			if e.IsDir() && len(e.Name()) == 32 && !owned[e.Name()] {
				s.vmms.endStrays(args, e.Name())
				dir := filepath.Join(parent, e.Name())
				s.cfg.Log.Info("removing a leftover VM directory", "dir", dir)
				_ = os.RemoveAll(dir)
			}
		}
	}
	return nil
}
