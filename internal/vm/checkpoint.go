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

// checkTag refuses a tag that is no plain name (it names a directory).
func checkTag(tag string) error {
	if !validName.MatchString(tag) {
		return fmt.Errorf("%w: snapshot tag %q: use lower-case letters, digits and '-', starting with a letter or digit, at most 64", api.ErrInvalidArgument, tag)
	}
	return nil
}

func (sv *saved) snapshotCreate(ctx context.Context, phase func(string), p api.VMSnapshotParams) (api.Snapshot, error) {
	sn, err := sv.vmms.snapshotter()
	if err != nil {
		return api.Snapshot{}, err
	}
	if p.Tag == "" {
		p.Tag = time.Now().UTC().Format("20060102-150405")
	}
	if err := checkTag(p.Tag); err != nil {
		return api.Snapshot{}, err
	}
	rec, err := sv.recs.find(ctx, p.Name)
	if err != nil {
		return api.Snapshot{}, err
	}
	if rec.State == api.VMSuspended {
		if _, err := sv.resumeNamed(ctx, phase, p.Name); err != nil {
			return api.Snapshot{}, err
		}
	}
	rec, unlock, err := sv.recs.locked(ctx, p.Name)
	if err != nil {
		return api.Snapshot{}, err
	}
	defer unlock()
	l := sv.vmms.of(rec.ID)
	if l == nil || rec.State != api.VMRunning {
		return api.Snapshot{}, fmt.Errorf("vm %s is %s: %w; only a running VM is checkpointed (`banger vm start %s`)", rec.Name, rec.State, api.ErrNotRunning, rec.Name)
	}
	dir := sv.recs.checkpoint(rec.ID, p.Tag)
	if _, err := os.Stat(dir); err == nil {
		return api.Snapshot{}, fmt.Errorf("vm %s: snapshot %s %w; pick another tag, or delete it (`banger vm snapshot delete %s %s`)", rec.Name, p.Tag, api.ErrAlreadyExists, rec.Name, p.Tag)
	}
	img, k, err := sv.vmms.inputs(ctx, rec)
	if err != nil {
		return api.Snapshot{}, err
	}
	spec, err := sv.vmms.spec(rec, img, k, "")
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
		_, err := clonefile.Copy(sv.recs.work(rec.ID), filepath.Join(tmp, templateDisk))
		return err
	}}); err != nil {
		return api.Snapshot{}, fmt.Errorf("checkpointing vm %s: %w (it runs on)", rec.Name, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return api.Snapshot{}, err
	}
	sv.cfg.Log.Info("vm checkpointed", "vm", rec.Name, "tag", p.Tag)
	return sv.checkpoint(rec, p.Tag)
}

// checkpoint describes rec's checkpoint tag; a missing one is
// api.ErrNotFound.
func (sv *saved) checkpoint(rec store.VM, tag string) (api.Snapshot, error) {
	dir := sv.recs.checkpoint(rec.ID, tag)
	st, err := vmm.ReadState(filepath.Join(dir, templateState))
	if errors.Is(err, fs.ErrNotExist) {
		return api.Snapshot{}, fmt.Errorf("vm %s has no snapshot %q: %w (see `banger vm snapshot list %s`)", rec.Name, tag, api.ErrNotFound, rec.Name)
	}
	if err != nil {
		return api.Snapshot{}, err
	}
	return api.Snapshot{VM: rec.Name, Tag: tag, Created: st.Saved, StateBytes: st.Bytes(),
		DiskUsed: diskUsed(filepath.Join(dir, templateDisk)), VCPU: st.VCPU, MemoryMiB: st.MemoryMiB}, nil
}

// list lists a VM's checkpoints, oldest first.
func (sv *saved) list(ctx context.Context, p api.VMRefParams) (api.SnapshotListResult, error) {
	res := api.SnapshotListResult{Snapshots: []api.Snapshot{}}
	rec, err := sv.recs.find(ctx, p.Name)
	if err != nil {
		return res, err
	}
	entries, err := os.ReadDir(filepath.Join(sv.recs.state(rec.ID), checkpointsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, err
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), partial) {
			continue
		}
		if c, err := sv.checkpoint(rec, e.Name()); err == nil {
			res.Snapshots = append(res.Snapshots, c)
		}
	}
	slices.SortFunc(res.Snapshots, func(a, b api.Snapshot) int { return a.Created.Compare(b.Created) })
	return res, nil
}

// deleteCheckpoint removes a checkpoint.
func (sv *saved) deleteCheckpoint(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
	if err := checkTag(p.Tag); err != nil {
		return api.Snapshot{}, err
	}
	rec, unlock, err := sv.recs.locked(ctx, p.Name)
	if err != nil {
		return api.Snapshot{}, err
	}
	defer unlock()
	c, err := sv.checkpoint(rec, p.Tag)
	if err != nil {
		return c, err
	}
	return c, os.RemoveAll(sv.recs.checkpoint(rec.ID, p.Tag))
}

func (sv *saved) snapshotRestore(ctx context.Context, phase func(string), p api.VMSnapshotParams) (api.VM, error) {
	sn, err := sv.vmms.snapshotter()
	if err != nil {
		return api.VM{}, err
	}
	rec, unlock, err := sv.recs.locked(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if _, err := sv.checkpoint(rec, p.Tag); err != nil {
		return api.VM{}, err
	}
	if rec.State == api.VMCreating {
		return api.VM{}, fmt.Errorf("vm %s is being created: %w", rec.Name, api.ErrInUse)
	}
	img, k, err := sv.vmms.inputs(ctx, rec)
	if err != nil {
		return api.VM{}, err
	}
	dir := sv.recs.checkpoint(rec.ID, p.Tag)
	// Refused before anything is undone: the VM runs on, its disk its own.
	spec, err := sv.vmms.spec(rec, img, k, "")
	if err != nil {
		return api.VM{}, err
	}
	if err := sn.Loadable(ctx, spec, filepath.Join(dir, templateState)); err != nil {
		return api.VM{}, fmt.Errorf("vm %s cannot go back to snapshot %s: %w; it is left as it was (`banger vm set` back to the snapshot's size, or take another)", rec.Name, p.Tag, err)
	}
	reason := "rolled back to snapshot " + p.Tag
	switch rec.State {
	case api.VMRunning:
		if err := sv.vmms.kill(ctx, rec, reason); err != nil {
			return api.VM{}, err
		}
	case api.VMSuspended:
		if err := sv.discard(ctx, rec, reason); err != nil {
			return api.VM{}, err
		}
	}
	if rec, err = sv.recs.find(ctx, rec.Name); err != nil {
		return api.VM{}, err
	}
	phase("copying the disk back")
	if _, err := clonefile.Copy(filepath.Join(dir, templateDisk), sv.recs.work(rec.ID)); err != nil {
		return api.VM{}, err
	}
	rec, err = sv.vmms.startFrom(ctx, phase, rec, img, k, filepath.Join(dir, templateState), false)
	if err != nil {
		rec.State, rec.Reason, rec.StoppedAt = api.VMStopped, "a rollback to snapshot "+p.Tag+" failed: "+err.Error(), time.Now()
		if perr := sv.recs.put(context.WithoutCancel(ctx), rec); perr != nil {
			sv.cfg.Log.Error("recording a failed rollback", "vm", rec.Name, "err", perr)
		}
		return api.VM{}, fmt.Errorf("rolling vm %s back to snapshot %s: %w", rec.Name, p.Tag, err)
	}
	sv.cfg.Log.Info("vm rolled back", "vm", rec.Name, "tag", p.Tag)
	sv.recs.announce(api.EventVMStarted, rec.Name, rec.Image, reason)
	return sv.recs.toAPI(rec), nil
}
