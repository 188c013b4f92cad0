package vm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/clonefile"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// A checkpoint (`vm snapshot`) is a running VM's memory, device state
// and work disk saved in one pause, under its state directory:
// checkpoints/TAG/{state/, work.ext4}, made in TAG.partial and renamed
// whole into place.
const (
	checkpointsDir = "checkpoints"
	partial        = ".partial"
)

func (s *Service) checkpointDir(id, tag string) string {
	return filepath.Join(s.stateDir(id), checkpointsDir, tag)
}

// checkTag refuses a tag that is no plain name (it names a directory).
func checkTag(tag string) error {
	if !validName.MatchString(tag) {
		return fmt.Errorf("%w: snapshot tag %q: use lower-case letters, digits and '-', starting with a letter or digit, at most 64", api.ErrInvalidArgument, tag)
	}
	return nil
}

// SnapshotCreate saves a running VM (a suspended one is resumed first)
// as checkpoint p.Tag (default: the time), the VM running on.
func (s *Service) SnapshotCreate(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
	return tracked(ctx, s, api.OpKindVMSnapshot, p.Name, func(ctx context.Context, phase func(string)) (api.Snapshot, error) {
		return s.snapshotCreate(ctx, phase, p)
	})
}

func (s *Service) snapshotCreate(ctx context.Context, phase func(string), p api.VMSnapshotParams) (api.Snapshot, error) {
	sn, err := s.snapshotter()
	if err != nil {
		return api.Snapshot{}, err
	}
	if p.Tag == "" {
		p.Tag = time.Now().UTC().Format("20060102-150405")
	}
	if err := checkTag(p.Tag); err != nil {
		return api.Snapshot{}, err
	}
	rec, err := s.find(ctx, p.Name)
	if err != nil {
		return api.Snapshot{}, err
	}
	if rec.State == api.VMSuspended {
		if _, err := s.resumeNamed(ctx, phase, p.Name); err != nil {
			return api.Snapshot{}, err
		}
	}
	rec, unlock, err := s.locked(ctx, p.Name)
	if err != nil {
		return api.Snapshot{}, err
	}
	defer unlock()
	s.mu.Lock()
	l := s.live[rec.ID]
	s.mu.Unlock()
	if l == nil || rec.State != api.VMRunning {
		return api.Snapshot{}, fmt.Errorf("vm %s is %s: %w; only a running VM is checkpointed (`banger vm start %s`)", rec.Name, rec.State, api.ErrNotRunning, rec.Name)
	}
	dir := s.checkpointDir(rec.ID, p.Tag)
	if _, err := os.Stat(dir); err == nil {
		return api.Snapshot{}, fmt.Errorf("vm %s: snapshot %s %w; pick another tag, or delete it (`banger vm snapshot delete %s %s`)", rec.Name, p.Tag, api.ErrAlreadyExists, rec.Name, p.Tag)
	}
	img, k, err := s.inputs(ctx, rec)
	if err != nil {
		return api.Snapshot{}, err
	}
	spec, err := s.spec(rec, img, k, "")
	if err != nil {
		return api.Snapshot{}, err
	}
	tmp := dir + partial
	if err := os.RemoveAll(tmp); err != nil {
		return api.Snapshot{}, err
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return api.Snapshot{}, err
	}
	defer os.RemoveAll(tmp)
	phase("saving")
	if _, err := sn.Snapshot(ctx, l.inst, spec, filepath.Join(tmp, templateState), vmm.SnapshotOptions{Paused: func() error {
		_, err := clonefile.Copy(s.workDisk(rec.ID), filepath.Join(tmp, templateDisk))
		return err
	}}); err != nil {
		return api.Snapshot{}, fmt.Errorf("checkpointing vm %s: %w (it runs on)", rec.Name, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return api.Snapshot{}, err
	}
	s.cfg.Log.Info("vm checkpointed", "vm", rec.Name, "tag", p.Tag)
	return s.checkpoint(rec, p.Tag)
}

// checkpoint describes rec's checkpoint tag; a missing one is
// api.ErrNotFound.
func (s *Service) checkpoint(rec store.VM, tag string) (api.Snapshot, error) {
	dir := s.checkpointDir(rec.ID, tag)
	st, err := vmm.ReadState(filepath.Join(dir, templateState))
	if errors.Is(err, fs.ErrNotExist) {
		return api.Snapshot{}, fmt.Errorf("vm %s has no snapshot %q: %w (see `banger vm snapshot list %s`)", rec.Name, tag, api.ErrNotFound, rec.Name)
	}
	if err != nil {
		return api.Snapshot{}, err
	}
	return api.Snapshot{VM: rec.Name, Tag: tag, Created: st.Saved, StateBytes: st.Size,
		DiskUsed: diskUsed(filepath.Join(dir, templateDisk)), VCPU: st.VCPU, MemoryMiB: st.MemoryMiB}, nil
}

// SnapshotList lists a VM's checkpoints, oldest first.
func (s *Service) SnapshotList(ctx context.Context, p api.VMRefParams) (api.SnapshotListResult, error) {
	res := api.SnapshotListResult{Snapshots: []api.Snapshot{}}
	rec, err := s.find(ctx, p.Name)
	if err != nil {
		return res, err
	}
	entries, err := os.ReadDir(filepath.Join(s.stateDir(rec.ID), checkpointsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, err
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), partial) {
			continue
		}
		if c, err := s.checkpoint(rec, e.Name()); err == nil {
			res.Snapshots = append(res.Snapshots, c)
		}
	}
	slices.SortFunc(res.Snapshots, func(a, b api.Snapshot) int { return a.Created.Compare(b.Created) })
	return res, nil
}

// SnapshotDelete removes a checkpoint.
func (s *Service) SnapshotDelete(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
	if err := checkTag(p.Tag); err != nil {
		return api.Snapshot{}, err
	}
	rec, unlock, err := s.locked(ctx, p.Name)
	if err != nil {
		return api.Snapshot{}, err
	}
	defer unlock()
	c, err := s.checkpoint(rec, p.Tag)
	if err != nil {
		return c, err
	}
	return c, os.RemoveAll(s.checkpointDir(rec.ID, p.Tag))
}

// SnapshotRestore rolls a VM back to a checkpoint, memory and disk: a
// running VM's VMM is ended (nothing since the checkpoint is kept), a
// suspended one's saved state dropped, and the VM runs from the
// checkpoint, which stays for another restore.
func (s *Service) SnapshotRestore(ctx context.Context, p api.VMSnapshotParams) (api.VM, error) {
	if err := checkTag(p.Tag); err != nil {
		return api.VM{}, err
	}
	return tracked(ctx, s, api.OpKindVMRollback, p.Name, func(ctx context.Context, phase func(string)) (api.VM, error) {
		return s.snapshotRestore(ctx, phase, p)
	})
}

func (s *Service) snapshotRestore(ctx context.Context, phase func(string), p api.VMSnapshotParams) (api.VM, error) {
	sn, err := s.snapshotter()
	if err != nil {
		return api.VM{}, err
	}
	rec, unlock, err := s.locked(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if _, err := s.checkpoint(rec, p.Tag); err != nil {
		return api.VM{}, err
	}
	if rec.State == api.VMCreating {
		return api.VM{}, fmt.Errorf("vm %s is being created: %w", rec.Name, api.ErrInUse)
	}
	img, k, err := s.inputs(ctx, rec)
	if err != nil {
		return api.VM{}, err
	}
	dir := s.checkpointDir(rec.ID, p.Tag)
	// Refused before anything is undone: the VM runs on, its disk its own.
	spec, err := s.spec(rec, img, k, "")
	if err != nil {
		return api.VM{}, err
	}
	if err := sn.Loadable(ctx, spec, filepath.Join(dir, templateState)); err != nil {
		return api.VM{}, fmt.Errorf("vm %s cannot go back to snapshot %s: %w; it is left as it was (`banger vm set` back to the snapshot's size, or take another)", rec.Name, p.Tag, err)
	}
	reason := "rolled back to snapshot " + p.Tag
	switch rec.State {
	case api.VMRunning:
		if err := s.kill(ctx, rec, reason); err != nil {
			return api.VM{}, err
		}
	case api.VMSuspended:
		if err := s.discard(ctx, rec, reason); err != nil {
			return api.VM{}, err
		}
	}
	if rec, err = s.find(ctx, rec.Name); err != nil {
		return api.VM{}, err
	}
	phase("copying the disk back")
	if _, err := clonefile.Copy(filepath.Join(dir, templateDisk), s.workDisk(rec.ID)); err != nil {
		return api.VM{}, err
	}
	rec, err = s.startFrom(ctx, phase, rec, img, k, filepath.Join(dir, templateState), false)
	if err != nil {
		rec.State, rec.Reason, rec.StoppedAt = api.VMStopped, "a rollback to snapshot "+p.Tag+" failed: "+err.Error(), time.Now()
		if perr := s.put(context.WithoutCancel(ctx), rec); perr != nil {
			s.cfg.Log.Error("recording a failed rollback", "vm", rec.Name, "err", perr)
		}
		return api.VM{}, fmt.Errorf("rolling vm %s back to snapshot %s: %w", rec.Name, p.Tag, err)
	}
	s.cfg.Log.Info("vm rolled back", "vm", rec.Name, "tag", p.Tag)
	s.event(api.EventVMStarted, rec.Name, rec.Image, reason)
	return s.toAPI(rec), nil
}
