package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/bangerdev/banger/internal/vmm"
)

// qmpSocket is a VM's QMP control socket in its runtime directory.
const qmpSocket = "qmp.sock"

// Snapshots travel over a file descriptor handed to QEMU (QMP getfd):
// no shell (an exec: URI would run one) and no path QEMU must open.
const snapFD = "banger-state"

// describe is the state s would need, under this QEMU here.
func (d *Driver) describe(ctx context.Context, s vmm.Spec) (vmm.State, error) {
	return d.states.Describe(ctx, s, d.Name(), d.binary(), d.machineOf(s).Accel)
}

// monitor is a QMP connection to one QEMU.
type monitor struct{ m *qmp.SocketMonitor }

// dialQMP connects to QEMU's control socket, waiting for it while QEMU
// starts (until ctx ends or QEMU does).
func dialQMP(ctx context.Context, path string, exited <-chan struct{}) (*monitor, error) {
	for {
		m, err := qmp.NewSocketMonitor("unix", path, 5*time.Second)
		if err == nil {
			if err = m.Connect(); err == nil {
				return &monitor{m: m}, nil
			}
			_ = m.Disconnect()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to QEMU's control socket: %w (last: %v)", ctx.Err(), err)
		case <-exited:
			return nil, errors.New("QEMU exited before its control socket answered")
		case <-time.After(5 * time.Millisecond): // QEMU makes its socket early: a restore waits on this
		}
	}
}

func (m *monitor) close() { _ = m.m.Disconnect() }

// run executes a QMP command and decodes its return value into out
// (nil: ignored).
func (m *monitor) run(command string, args any, out any, file ...*os.File) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var raw []byte
	if len(file) > 0 {
		raw, err = m.m.RunWithFile(b, file[0])
	} else {
		raw, err = m.m.Run(b)
	}
	if err != nil {
		return fmt.Errorf("QMP %s: %w", command, err)
	}
	if out == nil {
		return nil
	}
	var resp struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		return fmt.Errorf("QMP %s: reading its answer: %w", command, err)
	}
	if err := json.Unmarshal(resp.Return, out); err != nil {
		return fmt.Errorf("QMP %s: reading its answer: %w", command, err)
	}
	return nil
}

// migration is what query-migrate answers (the part read here).
type migration struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
}

// waitMigration polls a migration until it completed or failed.
func (m *monitor) waitMigration(ctx context.Context, exited <-chan struct{}) error {
	for {
		var st migration
		if err := m.run("query-migrate", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("QEMU's migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			_ = m.run("migrate_cancel", nil, nil)
			return ctx.Err()
		case <-exited:
			return errors.New("QEMU exited during the migration")
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Snapshot saves in's memory and device state into dir: the guest is
// paused, its state written through a descriptor QEMU migrates to, the
// description written last, and the directory renamed into place, so a
// crash leaves a whole state or none. The VM then runs on, or with stop
// its QEMU quits.
func (d *Driver) Snapshot(ctx context.Context, vin vmm.Instance, s vmm.Spec, dir string, o vmm.SnapshotOptions) (vmm.State, error) {
	in, ok := vin.(*instance)
	if !ok {
		return vmm.State{}, fmt.Errorf("snapshot: not a QEMU VM")
	}
	st, err := d.describe(ctx, s)
	if err != nil {
		return st, err
	}
	if _, err := os.Stat(in.qmp); err != nil {
		return st, fmt.Errorf("snapshot: this VM's QEMU has no control socket (it was started by an older banger): restart the VM first")
	}
	tmp, err := vmm.StageState(dir)
	if err != nil {
		return st, err
	}
	defer os.RemoveAll(tmp)
	mon, err := dialQMP(ctx, in.qmp, in.Done())
	if err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	defer mon.close()
	if err := mon.run("stop", nil, nil); err != nil {
		return st, fmt.Errorf("snapshot: pausing the VM: %w", err)
	}
	saved := false
	defer func() {
		if !saved || !o.Stop {
			_ = mon.run("cont", nil, nil) // running again, whatever happened
		}
	}()
	if o.Paused != nil {
		if err := o.Paused(); err != nil {
			return st, fmt.Errorf("snapshot: %w", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(tmp, vmm.MemoryFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	defer f.Close()
	// QEMU caps a migration at 128 MiB/s by default: a save to a local
	// file wants none.
	if err := mon.run("migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	if err := mon.run("getfd", map[string]any{"fdname": snapFD}, nil, f); err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	if err := mon.run("migrate", map[string]any{"uri": "fd:" + snapFD}, nil); err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	if err := mon.waitMigration(ctx, in.Done()); err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	if st, err = vmm.CommitState(tmp, dir, st); err != nil {
		return st, err
	}
	saved = true
	if o.Stop {
		_ = mon.run("quit", nil, nil)
		select {
		case <-in.Done():
		case <-ctx.Done():
			_ = in.Process().Kill()
			<-in.Done()
		}
	}
	return st, nil
}

// Restore starts QEMU for s from the state in dir: refused, with the
// reason, unless the state was saved by this QEMU, here, for the same
// kernel, initramfs and machine; then loaded through a descriptor and
// run.
func (d *Driver) Restore(ctx context.Context, s vmm.Spec, dir string, started func(vmm.Instance) error) (vmm.Instance, error) {
	if err := d.Loadable(ctx, s, dir); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, vmm.MemoryFile))
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	in, _, err := d.launch(s, "-incoming", "defer")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (vmm.Instance, error) {
		_ = in.Process().Kill()
		<-in.Done()
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := started(in); err != nil {
		return fail(err)
	}
	mon, err := dialQMP(ctx, in.qmp, in.Done())
	if err != nil {
		return fail(err)
	}
	defer mon.close()
	if err := mon.run("getfd", map[string]any{"fdname": snapFD}, nil, f); err != nil {
		return fail(err)
	}
	if err := mon.run("migrate-incoming", map[string]any{"uri": "fd:" + snapFD}, nil); err != nil {
		return fail(err)
	}
	if err := mon.waitMigration(ctx, in.Done()); err != nil {
		return fail(err)
	}
	if err := mon.run("cont", nil, nil); err != nil {
		return fail(err)
	}
	return in, nil
}

// Loadable says why the state in dir would not load for s here.
func (d *Driver) Loadable(ctx context.Context, s vmm.Spec, dir string) error {
	want, err := d.describe(ctx, s)
	if err != nil {
		return err
	}
	return vmm.CheckSaved(dir, want)
}

// unpause continues a guest left paused, if its QEMU has a control
// socket and says so.
func (in *instance) unpause() {
	if _, err := os.Stat(in.qmp); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mon, err := dialQMP(ctx, in.qmp, in.Done())
	if err != nil {
		return
	}
	defer mon.close()
	// A save still under way is cancelled first: continued during the
	// migration, the guest would be paused again when it completes.
	var mig migration
	if mon.run("query-migrate", nil, &mig) == nil && migrating(mig.Status) {
		_ = mon.run("migrate_cancel", nil, nil)
		_ = mon.waitMigration(ctx, in.Done()) // "cancelled" is its expected error
	}
	var st struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if mon.run("query-status", nil, &st) == nil && !st.Running && st.Status != "inmigrate" {
		_ = mon.run("cont", nil, nil)
	}
}

// migrating says whether a query-migrate status is of an outgoing
// migration not yet over.
func migrating(status string) bool {
	switch status {
	case "", "none", "completed", "failed", "cancelled":
		return false
	}
	return true
}
