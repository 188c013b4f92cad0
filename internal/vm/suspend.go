package vm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// reasonSuspended is a suspended VM's reason.
const reasonSuspended = "suspended by `banger vm suspend`: resume it with `banger vm resume`, exec or ssh"

// suspendDir holds a suspended VM's saved memory and device state.
func (s *Service) suspendDir(id string) string { return filepath.Join(s.stateDir(id), "suspended") }

// stateBytes is what a VM's saved state takes on disk.
func (s *Service) stateBytes(id string) int64 {
	var n int64
	_ = filepath.WalkDir(s.suspendDir(id), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func (s *Service) snapshotter() (vmm.Snapshotter, error) {
	sn, ok := s.cfg.Driver.(vmm.Snapshotter)
	if !ok {
		return nil, fmt.Errorf("%w: the %s driver cannot save a VM's memory; stop the VM instead (`banger vm stop`)", api.ErrInvalidArgument, s.cfg.Driver.Name())
	}
	return sn, nil
}

// Suspend saves a running VM's memory and device state in its directory
// and ends its VMM: the host's memory is freed, the work disk stays as
// the guest left it. Resume, exec, ssh or start bring it back as it was.
func (s *Service) Suspend(ctx context.Context, p api.VMRefParams) (api.VM, error) {
	if _, err := s.snapshotter(); err != nil {
		return api.VM{}, err
	}
	return tracked(ctx, s, api.OpKindVMSuspend, p.Name, func(ctx context.Context, phase func(string)) (api.VM, error) {
		rec, unlock, err := s.locked(ctx, p.Name)
		if err != nil {
			return api.VM{}, err
		}
		defer unlock()
		if rec.State != api.VMSuspended {
			phase("saving")
			if err := s.suspend(ctx, rec, reasonSuspended); err != nil {
				return api.VM{}, err
			}
		}
		return s.Show(ctx, api.VMRefParams{Name: p.Name})
	})
}

// AutoSuspend suspends the running VM named name, recording reason,
// unless a lifecycle verb or operation holds it: then it reports false
// and leaves it alone.
func (s *Service) AutoSuspend(ctx context.Context, name, reason string) (bool, error) {
	return s.whenFree(ctx, name, func(rec store.VM) error { return s.suspend(ctx, rec, reason) })
}

// suspend saves rec, running and locked, recording reason.
func (s *Service) suspend(ctx context.Context, rec store.VM, reason string) error {
	sn, err := s.snapshotter()
	if err != nil {
		return err
	}
	s.mu.Lock()
	l := s.live[rec.ID]
	s.mu.Unlock()
	if l == nil || rec.State != api.VMRunning {
		return fmt.Errorf("vm %s is %s: %w; only a running VM is suspended", rec.Name, rec.State, api.ErrNotRunning)
	}
	img, k, err := s.inputs(ctx, rec)
	if err != nil {
		return err
	}
	spec, err := s.spec(rec, img, k, "")
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.reason, l.suspending = reason, true
	l.mu.Unlock()
	dir := s.suspendDir(rec.ID)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if _, err := sn.Snapshot(ctx, l.inst, spec, dir, vmm.SnapshotOptions{Stop: true}); err != nil {
		l.mu.Lock()
		l.reason, l.suspending = "", false
		l.mu.Unlock()
		select {
		case <-l.inst.Done():
			// Its VMM ended without a state: stopped, not suspended.
			<-l.exited
			if cur, ferr := s.find(ctx, rec.Name); ferr == nil && cur.State == api.VMSuspended {
				_ = s.discard(context.WithoutCancel(ctx), cur, "its VMM ended while it was being suspended: "+err.Error())
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
	s.cfg.Log.Info("vm suspended", "vm", rec.Name, "reason", reason, "state_bytes", s.stateBytes(rec.ID))
	return nil
}

// Resume brings a suspended VM back from its saved state.
func (s *Service) Resume(ctx context.Context, p api.VMRefParams) (api.VM, error) {
	return tracked(ctx, s, api.OpKindVMResume, p.Name, func(ctx context.Context, phase func(string)) (api.VM, error) {
		return s.resumeNamed(ctx, phase, p.Name)
	})
}

// resumeNamed resumes the VM named name if it is suspended: Resume's
// work, and what exec, ssh and the other verbs that need it up call.
func (s *Service) resumeNamed(ctx context.Context, phase func(string), name string) (api.VM, error) {
	rec, unlock, err := s.locked(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	switch rec.State {
	case api.VMRunning:
		return s.toAPI(rec), nil
	case api.VMSuspended:
	default:
		return api.VM{}, fmt.Errorf("%w: vm %s is %s, not suspended: start it (`banger vm start %s`)", api.ErrInvalidArgument, rec.Name, rec.State, rec.Name)
	}
	phase("restoring")
	rec, err = s.resume(ctx, rec)
	if err != nil {
		return api.VM{}, err
	}
	return s.toAPI(rec), nil
}

// inputs are the image and kernel a VM runs.
func (s *Service) inputs(ctx context.Context, rec store.VM) (api.Image, api.Kernel, error) {
	img, err := s.cfg.Image(ctx, rec.ImageID)
	if err != nil {
		return img, api.Kernel{}, fmt.Errorf("vm %s: its image %s: %w", rec.Name, rec.Image, err)
	}
	k, err := s.cfg.Kernel(ctx, rec.Kernel)
	if err != nil {
		return img, k, fmt.Errorf("vm %s: its kernel %s: %w", rec.Name, rec.Kernel, err)
	}
	return img, k, nil
}

// resume restores rec, which is suspended and locked. The saved state
// is removed once the VM runs from it: its disk moves on from there, and
// the state must never be loaded twice. A resume that fails leaves the
// VM suspended, its state kept.
func (s *Service) resume(ctx context.Context, rec store.VM) (store.VM, error) {
	img, k, err := s.inputs(ctx, rec)
	if err != nil {
		return rec, err
	}
	// Recorded with the VM still suspended: the saved state is still
	// there for the next daemon if this one dies now.
	in, err := s.restoreVMM(ctx, func(string) {}, &rec, img, k, s.suspendDir(rec.ID))
	if err != nil {
		rec.PID, rec.PIDStart = 0, 0
		if perr := s.put(context.WithoutCancel(ctx), rec); perr != nil {
			s.cfg.Log.Error("recording a failed resume", "vm", rec.Name, "err", perr)
		}
		if errors.Is(err, vmm.ErrStateMismatch) {
			return rec, fmt.Errorf("vm %s cannot be resumed: %w; its saved memory is of no use now: `banger vm stop %s` discards it, then `banger vm start %s` boots it afresh", rec.Name, err, rec.Name, rec.Name)
		}
		return rec, fmt.Errorf("resuming vm %s: %w", rec.Name, err)
	}
	kill := func() {
		_ = in.Process().Kill()
		<-in.Done()
		s.detach(rec)
	}
	suspended := rec
	suspended.PID, suspended.PIDStart = 0, 0
	rec.State, rec.Reason, rec.StoppedAt = api.VMRunning, "", time.Time{}
	// Recorded before waiting, so a daemon that dies now adopts it.
	if err := s.put(ctx, rec); err != nil {
		kill()
		return suspended, err
	}
	wctx, cancel := context.WithTimeout(ctx, min(time.Minute, s.cfg.BootTimeout))
	defer cancel()
	var c *client.Client
	if c, err = boot.WaitAgent(wctx, in.DialAgent, in.Done()); err != nil {
		kill()
		if perr := s.put(context.WithoutCancel(ctx), suspended); perr != nil {
			s.cfg.Log.Error("recording a failed resume", "vm", rec.Name, "err", perr)
		}
		return suspended, fmt.Errorf("resuming vm %s: its agent: %w; it stays suspended", rec.Name, err)
	}
	// Its clock stopped at the save, and its random pool must not
	// repeat what it drew after: both are set again (an agent from
	// before identities keeps them).
	if err := s.identify(wctx, rec, c, false); err != nil {
		s.cfg.Log.Warn("a resumed VM keeps its saved clock", "vm", rec.Name, "err", err)
	}
	s.watch(rec, in, c)
	if err := os.RemoveAll(s.suspendDir(rec.ID)); err != nil {
		s.cfg.Log.Warn("removing a used saved state", "vm", rec.Name, "err", err)
	}
	s.cfg.Log.Info("vm resumed", "vm", rec.Name)
	s.event(api.EventVMResumed, rec.Name, rec.Image, "")
	return rec, nil
}

// discard drops a suspended VM's saved state: it is stopped.
func (s *Service) discard(ctx context.Context, rec store.VM, reason string) error {
	if err := os.RemoveAll(s.suspendDir(rec.ID)); err != nil {
		return err
	}
	rec.State, rec.Reason, rec.StoppedAt = api.VMStopped, reason, time.Now()
	if err := s.put(ctx, rec); err != nil {
		return err
	}
	s.event(api.EventVMStopped, rec.Name, rec.Image, reason)
	return nil
}

// awake is the running VM named name and its agent, resuming it first
// when it is suspended: what a user's exec, ssh or workspace call needs.
func (s *Service) awake(ctx context.Context, name string) (store.VM, *client.Client, error) {
	rec, err := s.find(ctx, name)
	if err != nil {
		return rec, nil, err
	}
	if rec.State == api.VMSuspended {
		if _, err := s.resumeNamed(ctx, func(string) {}, name); err != nil {
			return rec, nil, err
		}
	}
	return s.running(ctx, name)
}

// Awake is Agent for a user's call: a suspended VM is resumed first.
func (s *Service) Awake(ctx context.Context, name string) (*client.Client, error) {
	_, c, err := s.awake(ctx, name)
	return c, err
}
