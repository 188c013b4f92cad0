package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/clonefile"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// maxFork bounds one fork's copies: each is a whole VM's memory.
const maxFork = 16

// forkPrefix names a fork's scratch state and disk in its origin's
// state directory (removed once the copies run, or at the next start).
const forkPrefix = "fork-"

// Fork makes p.Count running copies of a running VM: its memory and
// work disk are saved in one pause (the original then runs on), and
// each copy starts from them with its own name, identity, address and
// a copy of the disk. All are made or none.
func (s *Service) Fork(ctx context.Context, p api.VMForkParams) (api.VMForkResult, error) {
	return tracked(ctx, s, api.OpKindVMFork, p.Name, func(ctx context.Context, phase func(string)) (api.VMForkResult, error) {
		return s.fork(ctx, phase, p)
	})
}

func (s *Service) fork(ctx context.Context, phase func(string), p api.VMForkParams) (api.VMForkResult, error) {
	res := api.VMForkResult{VMs: []api.VM{}}
	count := p.Count
	if count == 0 {
		count = 1
	}
	if count < 1 || count > maxFork {
		return res, fmt.Errorf("%w: --count %d: fork 1 to %d copies at once", api.ErrInvalidArgument, p.Count, maxFork)
	}
	sn, err := s.snapshotter()
	if err != nil {
		return res, err
	}
	rec, err := s.find(ctx, p.Name)
	if err != nil {
		return res, err
	}
	if rec.State == api.VMSuspended {
		if _, err := s.resumeNamed(ctx, phase, p.Name); err != nil {
			return res, err
		}
	}
	rec, unlock, err := s.locked(ctx, p.Name)
	if err != nil {
		return res, err
	}
	defer unlock()
	s.mu.Lock()
	l := s.live[rec.ID]
	s.mu.Unlock()
	if l == nil || rec.State != api.VMRunning {
		return res, fmt.Errorf("vm %s is %s: %w; only a running VM is forked (`banger vm start %s`)", rec.Name, rec.State, api.ErrNotRunning, rec.Name)
	}
	img, k, err := s.inputs(ctx, rec)
	if err != nil {
		return res, err
	}
	copies, err := s.insertCopies(ctx, rec, p.Prefix, count)
	if err != nil {
		return res, err
	}
	// What is left of a fork that failed: its copies, whole.
	ok := false
	defer func() {
		if !ok {
			for _, c := range copies {
				if c.State == api.VMRunning {
					_ = s.kill(context.WithoutCancel(ctx), c, "its fork failed")
				}
				if err := s.remove(context.WithoutCancel(ctx), c); err != nil {
					s.cfg.Log.Error("removing a fork's copy", "vm", c.Name, "err", err)
				}
			}
		}
	}()
	spec, err := s.spec(rec, img, k, "")
	if err != nil {
		return res, err
	}
	scratch := filepath.Join(s.stateDir(rec.ID), forkPrefix+randomHex(4))
	disk := scratch + ".ext4"
	defer os.Remove(disk)
	defer os.RemoveAll(scratch)
	start := time.Now()
	phase("saving")
	// The disk is copied while the guest is paused: the copy is the
	// disk its saved memory knows.
	if _, err := sn.Snapshot(ctx, l.inst, spec, scratch, vmm.SnapshotOptions{Paused: func() error {
		_, err := clonefile.Copy(s.workDisk(rec.ID), disk)
		return err
	}}); err != nil {
		return res, fmt.Errorf("forking vm %s: %w (it runs on)", rec.Name, err)
	}
	saved := time.Since(start)
	phase(fmt.Sprintf("starting %d copies", len(copies)))
	errs := make([]error, len(copies))
	var wg sync.WaitGroup
	for i := range copies {
		wg.Go(func() {
			c := copies[i]
			unlock := s.lock(c.Name)
			defer unlock()
			if err := os.MkdirAll(s.stateDir(c.ID), 0o700); err != nil {
				errs[i] = err
				return
			}
			t0 := time.Now()
			if _, err := clonefile.Copy(disk, s.workDisk(c.ID)); err != nil {
				errs[i] = err
				return
			}
			s.cfg.Log.Info("copied a fork's disk", "vm", c.Name, "took", time.Since(t0).Round(time.Millisecond))
			copies[i], errs[i] = s.startFrom(ctx, func(string) {}, c, img, k, scratch, true)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("forking vm %s: %w", rec.Name, err)
	}
	ok = true
	for _, c := range copies {
		s.event(api.EventVMCreated, c.Name, c.Image, "forked from "+rec.Name)
		s.event(api.EventVMStarted, c.Name, c.Image, "")
		res.VMs = append(res.VMs, s.toAPI(c))
	}
	s.cfg.Log.Info("vm forked", "vm", rec.Name, "copies", len(copies), "paused_for", saved.Round(time.Millisecond), "took", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// insertCopies records count copies of rec, creating, in one
// transaction: named prefix (count 1) or prefix-1..N with a prefix
// given, else NAME-fork-N at the first free numbers.
func (s *Service) insertCopies(ctx context.Context, rec store.VM, prefix string, count int) ([]store.VM, error) {
	var copies []store.VM
	err := s.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		copies = copies[:0]
		next := 1
		for i := range count {
			c := rec
			c.ID, c.MAC, c.State, c.Reason, c.PID, c.PIDStart = newID(), newMAC(), api.VMCreating, "", 0, 0
			c.CreatedAt, c.StartedAt, c.StoppedAt, c.Addr = time.Now(), time.Time{}, time.Time{}, netip.Addr{}
			switch {
			case prefix != "" && count == 1:
				c.Name = prefix
			case prefix != "":
				c.Name = prefix + "-" + strconv.Itoa(i+1)
			default:
				for ; ; next++ {
					c.Name = rec.Name + "-fork-" + strconv.Itoa(next)
					if _, err := tx.VM(ctx, c.Name); errors.Is(err, store.ErrNotFound) {
						break
					} else if err != nil {
						return err
					}
				}
				next++
			}
			if err := validate(c); err != nil {
				return err
			}
			if err := tx.InsertVM(ctx, c); errors.Is(err, store.ErrAlreadyExists) {
				return fmt.Errorf("vm %q %w; pick another --name", c.Name, api.ErrAlreadyExists)
			} else if err != nil {
				return err
			}
			if c.Network == api.NetworkBridge {
				first, last := s.cfg.Bridge.Range()
				var err error
				if c.Addr, err = tx.AllocateLease(ctx, c.ID, first, last); errors.Is(err, store.ErrExhausted) {
					return fmt.Errorf("%w: the bridge network %s has no free address for %d copies; delete a VM (`banger vm prune`)", api.ErrInvalidArgument, s.cfg.Bridge.Prefix(), count)
				} else if err != nil {
					return err
				}
			}
			copies = append(copies, c)
		}
		return nil
	})
	return copies, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
