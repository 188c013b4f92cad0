package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/clonefile"
	"github.com/bangerdev/banger/internal/crashpoint"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/wholefile"
)

// maxFork bounds one fork's copies: each is a whole VM's memory.
const maxFork = 16

// forkPrefix names a fork's scratch state and disk in its origin's
// state directory (removed once the copies run, or at the next start).
const forkPrefix = "fork-"

func (sv *saved) fork(ctx context.Context, phase func(string), p api.VMForkParams) (api.VMForkResult, error) {
	res := api.VMForkResult{VMs: []api.VM{}}
	count := p.Count
	if count == 0 {
		count = 1
	}
	if count < 1 || count > maxFork {
		return res, fmt.Errorf("%w: --count %d: fork 1 to %d copies at once", api.ErrInvalidArgument, p.Count, maxFork)
	}
	if p.Stopped && p.Checkpoint == "" {
		return res, fmt.Errorf("%w: --stopped copies hold a checkpoint: name it with --checkpoint TAG", api.ErrInvalidArgument)
	}
	sn, err := sv.vmms.snapshotter()
	if err != nil {
		return res, err
	}
	rec, err := sv.recs.find(ctx, p.Name)
	if err != nil {
		return res, err
	}
	if rec.State == api.VMSuspended && p.Checkpoint == "" {
		if _, err := sv.resumeNamed(ctx, phase, p.Name); err != nil {
			return res, err
		}
	}
	rec, unlock, err := sv.recs.locked(ctx, p.Name)
	if err != nil {
		return res, err
	}
	defer unlock()
	l := sv.vmms.of(rec.ID)
	if p.Checkpoint != "" {
		// From a checkpoint: the original may be in any state; the
		// copies take the checkpoint's shape.
		cp, err := sv.checkpoint(rec, p.Checkpoint)
		if err != nil {
			return res, err
		}
		rec.VCPU, rec.MemoryMiB = cp.VCPU, cp.MemoryMiB
	} else if l == nil || rec.State != api.VMRunning {
		return res, fmt.Errorf("vm %s is %s: %w; only a running VM is forked (`banger vm start %s`), or one of its checkpoints (--checkpoint)", rec.Name, rec.State, api.ErrNotRunning, rec.Name)
	}
	img, k, err := sv.vmms.inputs(ctx, rec)
	if err != nil {
		return res, err
	}
	like := rec
	like.NoShare = rec.NoShare || p.NoShare
	copies, err := sv.recs.addCopies(ctx, like, p.Prefix, count)
	if err != nil {
		return res, err
	}
	// What is left of a fork that failed: its copies, whole.
	ok := false
	defer func() {
		if !ok {
			for _, c := range copies {
				sv.dropCopy(ctx, c)
			}
		}
	}()
	// scratch and disk are the saved state and work disk the copies
	// start from: the checkpoint's, or the running VM's saved now.
	start := time.Now()
	var scratch, disk string
	if p.Checkpoint != "" {
		dir := sv.recs.checkpoint(rec.ID, p.Checkpoint)
		scratch, disk = filepath.Join(dir, templateState), filepath.Join(dir, templateDisk)
	} else {
		spec, err := sv.vmms.spec(rec, img, k, "")
		if err != nil {
			return res, err
		}
		scratch = filepath.Join(sv.recs.state(rec.ID), forkPrefix+randomHex(4))
		disk = scratch + ".ext4"
		defer os.Remove(disk)
		defer os.RemoveAll(scratch)
		phase("saving")
		// The disk is copied while the guest is paused: the copy is the
		// disk its saved memory knows.
		if _, err := sn.Snapshot(ctx, l.inst, spec, scratch, vmm.SnapshotOptions{Paused: func() error {
			crashpoint.At("vm.fork", "guest paused")
			_, err := clonefile.Copy(sv.recs.work(rec.ID), disk)
			return err
		}}); err != nil {
			return res, fmt.Errorf("forking vm %s: %w (it runs on)", rec.Name, err)
		}
	}
	saved := time.Since(start)
	if p.Stopped {
		phase(fmt.Sprintf("making %d stopped copies", len(copies)))
	} else {
		phase(fmt.Sprintf("starting %d copies", len(copies)))
	}
	errs := make([]error, len(copies))
	var wg sync.WaitGroup
	for i := range copies {
		wg.Go(func() {
			c := copies[i]
			unlock := sv.recs.lock(c.Name)
			defer unlock()
			if err := os.MkdirAll(sv.recs.state(c.ID), 0o700); err != nil {
				errs[i] = err
				return
			}
			if err := sv.carry(rec, c); err != nil {
				errs[i] = err
				return
			}
			t0 := time.Now()
			if _, err := clonefile.Copy(disk, sv.recs.work(c.ID)); err != nil {
				errs[i] = err
				return
			}
			sv.cfg.Log.Info("copied a fork's disk", "vm", c.Name, "took", time.Since(t0).Round(time.Millisecond))
			if p.Stopped {
				copies[i], errs[i] = sv.hold(ctx, c, rec.Name, p.Checkpoint, scratch, disk)
				return
			}
			copies[i], errs[i] = sv.vmms.startFrom(ctx, func(string) {}, c, img, k, scratch, true)
		})
	}
	wg.Wait()
	if p.Partial {
		// Each copy stands alone: the ones that failed go, and say why.
		var kept []store.VM
		for i, c := range copies {
			if errs[i] == nil {
				kept = append(kept, c)
				continue
			}
			sv.dropCopy(ctx, c)
			res.Failed = append(res.Failed, api.VMForkFailure{Name: c.Name, Error: errs[i].Error()})
		}
		copies = kept
		errs = nil
		if len(kept) == 0 {
			return res, fmt.Errorf("forking vm %s: no copy started; the first said: %s", rec.Name, res.Failed[0].Error)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("forking vm %s: %w", rec.Name, err)
	}
	ok = true
	for _, c := range copies {
		sv.recs.announce(api.EventVMCreated, c.Name, c.Image, "forked from "+rec.Name)
		if !p.Stopped {
			sv.recs.announce(api.EventVMStarted, c.Name, c.Image, "")
		}
		res.VMs = append(res.VMs, sv.recs.toAPI(c))
	}
	sv.cfg.Log.Info("vm forked", "vm", rec.Name, "copies", len(copies), "paused_for", saved.Round(time.Millisecond), "took", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// hold makes c a stopped copy that keeps its origin's checkpoint tag
// (state and disk) as its own, made beside and renamed whole.
func (sv *saved) hold(ctx context.Context, c store.VM, from, tag, state, disk string) (store.VM, error) {
	dir := sv.recs.checkpoint(c.ID, tag)
	tmp := dir + partial
	if err := os.MkdirAll(filepath.Join(tmp, templateState), 0o700); err != nil {
		return c, err
	}
	defer os.RemoveAll(tmp)
	entries, err := os.ReadDir(state)
	if err != nil {
		return c, err
	}
	for _, e := range entries {
		// A checkpoint's state is a flat directory of files the daemon
		// wrote; anything else is not copied.
		if !e.Type().IsRegular() {
			return c, fmt.Errorf("copying checkpoint %s: %s is not a regular file", tag, e.Name())
		}
		if _, err := clonefile.Copy(filepath.Join(state, e.Name()), filepath.Join(tmp, templateState, e.Name())); err != nil {
			return c, err
		}
	}
	if _, err := clonefile.Copy(disk, filepath.Join(tmp, templateDisk)); err != nil {
		return c, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return c, err
	}
	c.State, c.StoppedAt, c.Reason = api.VMStopped, time.Now(), "forked from "+from+"'s checkpoint "+tag+", not started"
	if err := sv.recs.put(ctx, c); err != nil {
		return c, err
	}
	return c, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// dropCopy removes a fork's copy that failed, or whose fork did: its
// VMM, if it runs, and its record and files.
func (sv *saved) dropCopy(ctx context.Context, c store.VM) {
	if c.State == api.VMRunning {
		_ = sv.vmms.kill(context.WithoutCancel(ctx), c, "its fork failed")
	}
	if err := sv.recs.remove(context.WithoutCancel(ctx), c); err != nil {
		sv.cfg.Log.Error("removing a fork's copy", "vm", c.Name, "err", err)
	}
}

// carry copies the state files a fork's copies inherit (Config.ForkCarries)
// from the original's state directory to the copy's.
func (sv *saved) carry(from, to store.VM) error {
	for _, name := range sv.cfg.ForkCarries {
		b, err := os.ReadFile(filepath.Join(sv.recs.state(from.ID), name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := wholefile.Write(filepath.Join(sv.recs.state(to.ID), name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
