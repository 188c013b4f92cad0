package vm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/diskspace"
	"github.com/bangerdev/banger/internal/store"
)

// Creation is a VM recorded as creating, whose phases Build runs.
type Creation struct {
	rec     store.VM
	noStart bool
	cold    bool   // boot it, even where a template would do
	init    string // as asked: api.InitAgent, InitImage or InitAuto
}

// Name is the VM's name, generated when the params left it out.
func (c Creation) Name() string { return c.rec.Name }

// Create validates p and records the VM as creating, before any work: a
// taken name is api.ErrAlreadyExists, a bad value api.ErrInvalidArgument.
// Build then runs its phases (the daemon runs them as the vm.create
// operation). A workspace is the caller's to place once the VM is up.
func (s *Service) Create(ctx context.Context, p api.VMCreateParams) (Creation, error) {
	rec, err := s.recs.newRecord(p)
	if err != nil {
		return Creation{}, err
	}
	if err := s.recs.add(ctx, &rec); err != nil {
		return Creation{}, err
	}
	init := cmp.Or(p.Init, s.cfg.Defaults.Init, api.InitAuto)
	return Creation{rec: rec, noStart: p.NoStart, cold: p.Cold, init: init}, nil
}

// Build runs a creation's phases under the VM's lock, reporting each to
// phase. A failure keeps the VM, failed, with its console log for `vm
// logs`; a canceled build leaves nothing.
func (s *Service) Build(ctx context.Context, phase func(string), c Creation) (api.VM, error) {
	unlock := s.recs.lock(c.rec.Name)
	defer unlock()
	start := time.Now()
	v, err := s.create(ctx, phase, c)
	if err != nil {
		s.cfg.Log.Warn("vm create failed", "vm", c.rec.Name, "err", err)
		return api.VM{}, err
	}
	s.cfg.Log.Info("vm created", "vm", c.rec.Name, "state", v.State, "took", time.Since(start).Round(time.Millisecond))
	s.recs.announce(api.EventVMCreated, v.Name, v.Image, "")
	if v.State == api.VMRunning {
		s.recs.announce(api.EventVMStarted, v.Name, v.Image, "")
	}
	return v, nil
}

// create runs the phases of vm.create. A failure keeps the VM, failed,
// with its console log for `vm logs`; a canceled create leaves nothing,
// and nor does one that ran out of space: it has nothing to read, its
// record may not fit, and the retry once space is freed takes the name.
func (s *Service) create(ctx context.Context, phase func(string), cr Creation) (api.VM, error) {
	rec, noStart := cr.rec, cr.noStart
	fail := func(err error) (api.VM, error) {
		err = diskspace.Explain(err)
		if ctx.Err() != nil || errors.Is(err, api.ErrNoSpace) {
			if rerr := s.recs.remove(context.WithoutCancel(ctx), rec); rerr != nil {
				s.cfg.Log.Error("removing a create that did not finish", "vm", rec.Name, "err", rerr)
			}
			return api.VM{}, err
		}
		rec.State, rec.Reason, rec.StoppedAt, rec.PID, rec.PIDStart = api.VMFailed, err.Error(), time.Now(), 0, 0
		if perr := s.recs.put(context.WithoutCancel(ctx), rec); perr != nil {
			s.cfg.Log.Error("recording a failed create", "vm", rec.Name, "err", perr)
		}
		return api.VM{}, err
	}
	phase("resolving image")
	img, err := s.cfg.Images.Resolve(ctx, rec.Image)
	if errors.Is(err, api.ErrNotFound) {
		phase("pulling image")
		img, err = s.cfg.Images.Pull(ctx, rec.Image)
	}
	if err != nil {
		return fail(fmt.Errorf("image %s: %w", rec.Image, err))
	}
	rec.Image, rec.ImageID = img.Name, img.ID
	if rec.Init, err = initOf(cr.init, img); err != nil {
		// Refused as asked, before anything was made: nothing is kept.
		if rerr := s.recs.remove(context.WithoutCancel(ctx), rec); rerr != nil {
			s.cfg.Log.Error("removing a refused VM", "vm", rec.Name, "err", rerr)
		}
		return api.VM{}, err
	}
	phase("resolving kernel")
	k, err := s.cfg.Kernel(ctx, rec.Kernel)
	if err != nil {
		return fail(err)
	}
	rec.Kernel, rec.KernelID = k.Name, k.ID
	// Templates hold agent-init VMs: a booted systemd keeps the
	// identity it started with (journal, hostname) where a restore
	// would give the copy another.
	if !noStart && !cr.cold && s.tmpl.warm() && rec.Init == "" {
		warm, err := s.tmpl.createWarm(ctx, phase, rec, img, k)
		if err == nil {
			return s.recs.toAPI(warm), nil
		}
		if ctx.Err() != nil {
			return fail(err)
		}
		// The VM is still owed a start: booted, from a fresh disk.
		s.cfg.Log.Warn("starting from a template failed; booting instead", "vm", rec.Name, "err", err)
		_ = os.Remove(s.recs.work(rec.ID))
	}
	phase("preparing work disk")
	if err := boot.WorkDisk(ctx, s.recs.work(rec.ID), rec.DiskSize); err != nil {
		return fail(err)
	}
	if noStart {
		rec.State = api.VMStopped
		if err := s.recs.put(ctx, rec); err != nil {
			return fail(err)
		}
		return s.recs.toAPI(rec), nil
	}
	if err := s.recs.put(ctx, rec); err != nil {
		return fail(err)
	}
	rec, err = s.vmms.boot(ctx, phase, rec, img, k)
	if err != nil {
		return fail(err)
	}
	return s.recs.toAPI(rec), nil
}
