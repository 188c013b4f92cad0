package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/crashpoint"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// saved are a VM's saved states: suspended (its memory saved and its
// VMM ended, until a resume), checkpoints (`vm snapshot`: saved in one
// pause, the VM running on, for a rollback) and forks (copies started
// from one save); and what a daemon that died left of them.
type saved struct {
	cfg  *Config
	recs *records
	vmms *vmms
}

// reasonSuspended is a suspended VM's reason.
const reasonSuspended = "suspended by `banger vm suspend`: resume it with `banger vm resume`, exec or ssh"

// suspend saves rec, running and locked, recording reason.
func (sv *saved) suspend(ctx context.Context, rec store.VM, reason string) error {
	sn, err := sv.vmms.snapshotter()
	if err != nil {
		return err
	}
	l := sv.vmms.of(rec.ID)
	if l == nil || rec.State != api.VMRunning {
		return fmt.Errorf("vm %s is %s: %w; only a running VM is suspended", rec.Name, rec.State, api.ErrNotRunning)
	}
	img, k, err := sv.vmms.inputs(ctx, rec)
	if err != nil {
		return err
	}
	spec, err := sv.vmms.spec(rec, img, k, "")
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.reason, l.suspending = reason, true
	l.mu.Unlock()
	dir := sv.recs.suspended(rec.ID)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	// The crash point is mid-save: the guest paused, the driver's helper
	// (QEMU's) started.
	paused := func() error { crashpoint.At("vm.suspend", "guest paused"); return nil }
	if _, err := sn.Snapshot(ctx, l.inst, spec, dir, vmm.SnapshotOptions{Stop: true, Paused: paused}); err != nil {
		l.mu.Lock()
		l.reason, l.suspending = "", false
		l.mu.Unlock()
		select {
		case <-l.inst.Done():
			// Its VMM ended without a state: stopped, not suspended.
			<-l.exited
			if cur, ferr := sv.recs.find(ctx, rec.Name); ferr == nil && cur.State == api.VMSuspended {
				_ = sv.discard(context.WithoutCancel(ctx), cur, "its VMM ended while it was being suspended: "+err.Error())
			}
			return fmt.Errorf("suspending vm %s: %w; its VMM ended: it is stopped", rec.Name, err)
		default:
		}
		return fmt.Errorf("suspending vm %s: %w (it runs on)", rec.Name, err)
	}
	select {
	case <-l.exited:
	case <-ctx.Done():
		return ctx.Err()
	}
	sv.cfg.Log.Info("vm suspended", "vm", rec.Name, "reason", reason, "state_bytes", sv.recs.stateBytes(rec.ID))
	return nil
}

// resumeNamed resumes the VM named name if it is suspended: Resume's
// work, and what exec, ssh and the other verbs that need it up call.
func (sv *saved) resumeNamed(ctx context.Context, phase func(string), name string) (api.VM, error) {
	rec, unlock, err := sv.recs.locked(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	switch rec.State {
	case api.VMRunning:
		return sv.recs.toAPI(rec), nil
	case api.VMSuspended:
	default:
		return api.VM{}, fmt.Errorf("%w: vm %s is %s, not suspended: start it (`banger vm start %s`)", api.ErrInvalidArgument, rec.Name, rec.State, rec.Name)
	}
	phase("restoring")
	rec, err = sv.resume(ctx, rec)
	if err != nil {
		return api.VM{}, err
	}
	return sv.recs.toAPI(rec), nil
}

// resume restores rec, which is suspended and locked. The saved state
// is removed once the VM runs from it: its disk moves on from there, and
// the state must never be loaded twice. A resume that fails leaves the
// VM suspended, its state kept.
func (sv *saved) resume(ctx context.Context, rec store.VM) (store.VM, error) {
	img, k, err := sv.vmms.inputs(ctx, rec)
	if err != nil {
		return rec, err
	}
	// Recorded with the VM still suspended: the saved state is still
	// there for the next daemon if this one dies now.
	in, err := sv.vmms.restore(ctx, func(string) {}, &rec, img, k, sv.recs.suspended(rec.ID))
	if err != nil {
		rec.PID, rec.PIDStart = 0, 0
		if perr := sv.recs.put(context.WithoutCancel(ctx), rec); perr != nil {
			sv.cfg.Log.Error("recording a failed resume", "vm", rec.Name, "err", perr)
		}
		if errors.Is(err, vmm.ErrStateMismatch) {
			return rec, fmt.Errorf("vm %s cannot be resumed: %w; its saved memory is of no use now: `banger vm stop %s` discards it, then `banger vm start %s` boots it afresh", rec.Name, err, rec.Name, rec.Name)
		}
		return rec, fmt.Errorf("resuming vm %s: %w", rec.Name, err)
	}
	kill := func() {
		_ = in.Process().Kill()
		<-in.Done()
		sv.vmms.detach(rec)
	}
	suspended := rec
	suspended.PID, suspended.PIDStart = 0, 0
	rec.State, rec.Reason, rec.StoppedAt = api.VMRunning, "", time.Time{}
	// Recorded before waiting, so a daemon that dies now adopts it.
	if err := sv.recs.put(ctx, rec); err != nil {
		kill()
		return suspended, err
	}
	wctx, cancel := context.WithTimeout(ctx, min(time.Minute, sv.cfg.BootTimeout))
	defer cancel()
	var c *client.Client
	if c, err = boot.WaitAgent(wctx, in.DialAgent, in.Done()); err != nil {
		kill()
		if perr := sv.recs.put(context.WithoutCancel(ctx), suspended); perr != nil {
			sv.cfg.Log.Error("recording a failed resume", "vm", rec.Name, "err", perr)
		}
		return suspended, fmt.Errorf("resuming vm %s: its agent: %w; it stays suspended", rec.Name, err)
	}
	// Its clock stopped at the save, and its random pool must not
	// repeat what it drew after: both are set again (an agent from
	// before identities keeps them).
	if err := sv.vmms.identify(wctx, rec, c, false); err != nil {
		sv.cfg.Log.Warn("a resumed VM keeps its saved clock", "vm", rec.Name, "err", err)
	}
	sv.vmms.watch(rec, in, c)
	if err := os.RemoveAll(sv.recs.suspended(rec.ID)); err != nil {
		sv.cfg.Log.Warn("removing a used saved state", "vm", rec.Name, "err", err)
	}
	sv.cfg.Log.Info("vm resumed", "vm", rec.Name)
	sv.recs.announce(api.EventVMResumed, rec.Name, rec.Image, "")
	return rec, nil
}

// discard drops a suspended VM's saved state: it is stopped.
func (sv *saved) discard(ctx context.Context, rec store.VM, reason string) error {
	if err := os.RemoveAll(sv.recs.suspended(rec.ID)); err != nil {
		return err
	}
	rec.State, rec.Reason, rec.StoppedAt = api.VMStopped, reason, time.Now()
	if err := sv.recs.put(ctx, rec); err != nil {
		return err
	}
	sv.recs.announce(api.EventVMStopped, rec.Name, rec.Image, reason)
	return nil
}

// awake is the running VM named name and its agent, resuming it first
// when it is suspended: what a user's exec, ssh or workspace call needs.
func (sv *saved) awake(ctx context.Context, name string) (store.VM, *client.Client, error) {
	rec, err := sv.recs.find(ctx, name)
	if err != nil {
		return rec, nil, err
	}
	if rec.State == api.VMSuspended {
		if _, err := sv.resumeNamed(ctx, func(string) {}, name); err != nil {
			return rec, nil, err
		}
	}
	return sv.vmms.running(ctx, name)
}

// sweep removes what is of no use of rec's saved states at start: a save
// cut short, or a state already resumed from; a fork's scratch state or
// a checkpoint cut short.
func (sv *saved) sweep(rec store.VM) {
	_ = os.RemoveAll(sv.recs.suspended(rec.ID) + partial)
	for _, pattern := range []string{filepath.Join(sv.recs.state(rec.ID), forkPrefix+"*"), filepath.Join(sv.recs.state(rec.ID), checkpointsDir, "*"+partial)} {
		leftovers, _ := filepath.Glob(pattern)
		for _, f := range leftovers {
			_ = os.RemoveAll(f)
		}
	}
	if rec.State != api.VMSuspended {
		_ = os.RemoveAll(sv.recs.suspended(rec.ID))
	}
}
