package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangerdev/banger/internal/vmm"
)

// vmstateFile is the device state beside vmm.MemoryFile in a saved
// state's directory (Firecracker writes the two separately).
const vmstateFile = "vmstate"

// errJailed: a jailed Firecracker sees its files inside its chroot,
// where a saved state would have to be linked in and out; not done yet.
var errJailed = errors.New("firecracker: snapshots of jailed VMs are not supported yet (remove firecracker_jailer, or use QEMU)")

// describe is the state s would need, under this Firecracker.
func (d *Driver) describe(ctx context.Context, s vmm.Spec) (vmm.State, error) {
	return d.states.Describe(ctx, s, d.Name(), d.binary(), "kvm")
}

// Snapshot pauses the VM (PATCH /vm), runs o.Paused, saves a full
// snapshot (PUT /snapshot/create) into dir through dir.partial, then
// resumes it, or with o.Stop ends its Firecracker (which has no quit:
// the state is whole by then).
func (d *Driver) Snapshot(ctx context.Context, vin vmm.Instance, s vmm.Spec, dir string, o vmm.SnapshotOptions) (vmm.State, error) {
	if d.Jailer != nil {
		return vmm.State{}, errJailed
	}
	in, ok := vin.(*instance)
	if !ok {
		return vmm.State{}, errors.New("snapshot: not a Firecracker VM")
	}
	st, err := d.describe(ctx, s)
	if err != nil {
		return st, err
	}
	tmp, err := vmm.StageState(dir)
	if err != nil {
		return st, err
	}
	defer os.RemoveAll(tmp)
	c := NewClient(filepath.Join(s.Dir, "firecracker.sock"))
	if err := c.SetState(ctx, StatePaused); err != nil {
		return st, fmt.Errorf("snapshot: pausing the VM: %w", err)
	}
	saved := false
	defer func() {
		if !saved || !o.Stop {
			_ = c.SetState(context.WithoutCancel(ctx), StateResumed)
		}
	}()
	if o.Paused != nil {
		if err := o.Paused(); err != nil {
			return st, fmt.Errorf("snapshot: %w", err)
		}
	}
	mem := filepath.Join(tmp, vmm.MemoryFile)
	if err := c.CreateSnapshot(ctx, SnapshotCreate{SnapshotType: "Full", SnapshotPath: filepath.Join(tmp, vmstateFile), MemFilePath: mem}); err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	for _, f := range []string{mem, filepath.Join(tmp, vmstateFile)} {
		if err := os.Chmod(f, 0o600); err != nil {
			return st, fmt.Errorf("snapshot: %w", err)
		}
	}
	if st, err = vmm.CommitState(tmp, dir, st); err != nil {
		return st, err
	}
	saved = true
	if o.Stop {
		_ = in.Process().Kill()
		<-in.Done()
	}
	return st, nil
}

// Loadable says why the state in dir would not load for s here.
func (d *Driver) Loadable(ctx context.Context, s vmm.Spec, dir string) error {
	if d.Jailer != nil {
		return errJailed
	}
	want, err := d.describe(ctx, s)
	if err != nil {
		return err
	}
	return vmm.CheckSaved(dir, want)
}

// Restore starts a Firecracker given nothing, loads the state in dir
// (PUT /snapshot/load: its memory mapped from the file, the NIC on s's
// tap, vsock on s's socket), points the drives at s's files (PATCH
// /drives: a template's or a fork's disks are not the VM's), and
// resumes it.
func (d *Driver) Restore(ctx context.Context, s vmm.Spec, dir string, started func(vmm.Instance) error) (vmm.Instance, error) {
	if err := Check(s); err != nil {
		return nil, err
	}
	if err := d.Loadable(ctx, s, dir); err != nil {
		return nil, err
	}
	l, err := d.launch(s)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (vmm.Instance, error) {
		_ = l.in.Process().Kill()
		<-l.in.Done()
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := started(l.in); err != nil {
		return fail(err)
	}
	if err := waitAPI(ctx, l.in, l.apiSock); err != nil {
		return fail(err)
	}
	c := NewClient(l.apiSock)
	load := SnapshotLoad{SnapshotPath: filepath.Join(dir, vmstateFile),
		MemBackend:    &MemoryBackend{BackendType: "File", BackendPath: filepath.Join(dir, vmm.MemoryFile)},
		VsockOverride: &VsockOverride{UDSPath: l.fcVsock}}
	if n := s.NIC; n != nil {
		load.NetworkOverrides = []NetworkOverride{{IfaceID: "eth0", HostDevName: n.Tap}}
	}
	if err := c.LoadSnapshot(ctx, load); err != nil {
		return fail(err)
	}
	for _, dk := range l.fcSpec.Disks {
		if err := c.PatchDrive(ctx, DrivePatch{DriveID: dk.Serial, PathOnHost: dk.Path}); err != nil {
			return fail(err)
		}
	}
	if err := c.SetState(ctx, StateResumed); err != nil {
		return fail(err)
	}
	return l.in, nil
}
