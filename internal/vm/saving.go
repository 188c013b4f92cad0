package vm

// The verbs of saved states and templates: long ones run as operations
// (tracker), the work is saved's and templates'.

import (
	"context"

	"github.com/bangerdev/banger/api"
)

// Suspend saves a running VM's memory and device state in its directory
// and ends its VMM: the host's memory is freed, the work disk stays as
// the guest left it. Resume, exec, ssh or start bring it back as it was.
func (s *Service) Suspend(ctx context.Context, p api.VMRefParams) (api.VM, error) {
	if _, err := s.vmms.snapshotter(); err != nil {
		return api.VM{}, err
	}
	return tracked(ctx, s, api.OpKindVMSuspend, p.Name, func(ctx context.Context, phase func(string)) (api.VM, error) {
		rec, unlock, err := s.recs.locked(ctx, p.Name)
		if err != nil {
			return api.VM{}, err
		}
		defer unlock()
		if rec.State != api.VMSuspended {
			phase("saving")
			if err := s.saved.suspend(ctx, rec, reasonSuspended); err != nil {
				return api.VM{}, err
			}
		}
		return s.Show(ctx, api.VMRefParams{Name: p.Name})
	})
}

// Resume brings a suspended VM back from its saved state.
func (s *Service) Resume(ctx context.Context, p api.VMRefParams) (api.VM, error) {
	return tracked(ctx, s, api.OpKindVMResume, p.Name, func(ctx context.Context, phase func(string)) (api.VM, error) {
		return s.saved.resumeNamed(ctx, phase, p.Name)
	})
}

// SnapshotCreate saves a running VM (a suspended one is resumed first)
// as checkpoint p.Tag (default: the time), the VM running on.
func (s *Service) SnapshotCreate(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
	return tracked(ctx, s, api.OpKindVMSnapshot, p.Name, func(ctx context.Context, phase func(string)) (api.Snapshot, error) {
		return s.saved.snapshotCreate(ctx, phase, p)
	})
}

// SnapshotList lists a VM's checkpoints, oldest first.
func (s *Service) SnapshotList(ctx context.Context, p api.VMRefParams) (api.SnapshotListResult, error) {
	return s.saved.list(ctx, p)
}

// SnapshotDelete removes a checkpoint.
func (s *Service) SnapshotDelete(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
	return s.saved.deleteCheckpoint(ctx, p)
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
		return s.saved.snapshotRestore(ctx, phase, p)
	})
}

// Fork makes p.Count running copies of a running VM: its memory and
// work disk are saved in one pause (the original then runs on), and
// each copy starts from them with its own name, identity, address and
// a copy of the disk. All are made or none.
func (s *Service) Fork(ctx context.Context, p api.VMForkParams) (api.VMForkResult, error) {
	return tracked(ctx, s, api.OpKindVMFork, p.Name, func(ctx context.Context, phase func(string)) (api.VMForkResult, error) {
		return s.saved.fork(ctx, phase, p)
	})
}

// Warm makes the template of a VM shape, as the first create of that
// shape would: the image (pulled if unknown), kernel and sizes default
// as vm create's do.
func (s *Service) Warm(ctx context.Context, p api.ImageWarmParams) (api.Template, error) {
	var t api.Template
	err := s.ops.track(ctx, api.OpKindImageWarm, p.Image, func(ctx context.Context, phase func(string)) error {
		var err error
		t, err = s.tmpl.warmImage(ctx, phase, p)
		return err
	})
	return t, err
}

// Templates lists the templates creates start from, oldest first.
func (s *Service) Templates(ctx context.Context) (api.TemplateListResult, error) {
	return s.tmpl.list(ctx)
}

// DropTemplates removes the templates of images or kernels that are
// gone: the daemon calls it once an image is deleted, and at start
// (a kernel's are removed then, or with the next image deleted).
func (s *Service) DropTemplates(ctx context.Context) {
	s.tmpl.dropGone(ctx)
}
