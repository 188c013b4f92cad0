package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// VM is one VM record.
type VM struct {
	Name, ID      string
	State, Reason string
	Image         string
	ImageID       string
	Kernel        string
	KernelID      string
	VCPU          int
	MemoryMiB     int
	DiskSize      int64
	Network       string
	MAC           string
	VMM           string
	PID           int
	PIDStart      uint64
	CreatedAt     time.Time
	StartedAt     time.Time // zero: never started
	StoppedAt     time.Time // zero: not stopped since
	NAT           bool      // outbound connections allowed
	AutoStop      string    // idle time before an automatic stop: "" default, "0" never
	IdleAction    string    // what auto-stop does: "" default, "stop" or "suspend"
	Init          string    // PID 1: "" the agent, "image" the image's systemd
	Workspace     string    // the guest directory of its workspace; "" none
	Isolate       bool      // no traffic with the other VMs on the bridge
	Allow         []string  // egress allow-list, canonical rules; nil: none
	Creator       string    // who asked for it, when not a person: "mcp:NAME"
	NoShare       bool      // shares no memory pages with other VMs
	// Addr is the VM's leased bridge address (read from leases; PutVM
	// does not write it).
	Addr netip.Addr
}

const vmColumns = "name, id, state, reason, image, image_id, kernel, kernel_id, vcpu, memory_mib, disk_size, network, mac, vmm, pid, pid_start, created_at, started_at, stopped_at, nat, auto_stop, workspace, isolate, allow, idle_action, init, creator, no_share"

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

func scanVM(row scanner) (VM, error) {
	var v VM
	var created, started, stopped string
	var pidStart int64
	var allow string
	if err := row.Scan(&v.Name, &v.ID, &v.State, &v.Reason, &v.Image, &v.ImageID, &v.Kernel, &v.KernelID, &v.VCPU, &v.MemoryMiB,
		&v.DiskSize, &v.Network, &v.MAC, &v.VMM, &v.PID, &pidStart, &created, &started, &stopped, &v.NAT, &v.AutoStop, &v.Workspace,
		&v.Isolate, &allow, &v.IdleAction, &v.Init, &v.Creator, &v.NoShare); err != nil {
		return VM{}, err
	}
	if allow != "" {
		v.Allow = strings.Split(allow, "\n")
	}
	v.PIDStart = uint64(pidStart)
	var err error
	for _, f := range []struct {
		s   string
		dst *time.Time
	}{{created, &v.CreatedAt}, {started, &v.StartedAt}, {stopped, &v.StoppedAt}} {
		if *f.dst, err = parseTime(f.s); err != nil {
			return VM{}, fmt.Errorf("vm %q: time %q: %w", v.Name, f.s, err)
		}
	}
	return v, nil
}

// InsertVM adds a record; a VM of that name already there is
// ErrAlreadyExists.
func (t *Tx) InsertVM(ctx context.Context, v VM) error {
	if _, err := t.VM(ctx, v.Name); err == nil {
		return fmt.Errorf("vm %q: %w", v.Name, ErrAlreadyExists)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	return t.PutVM(ctx, v)
}

// PutVM inserts or replaces the record of v.Name.
func (t *Tx) PutVM(ctx context.Context, v VM) error {
	_, err := t.tx.ExecContext(ctx, "INSERT OR REPLACE INTO vms("+vmColumns+") VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		v.Name, v.ID, v.State, v.Reason, v.Image, v.ImageID, v.Kernel, v.KernelID, v.VCPU, v.MemoryMiB, v.DiskSize, v.Network,
		v.MAC, v.VMM, v.PID, int64(v.PIDStart), formatTime(v.CreatedAt), formatTime(v.StartedAt), formatTime(v.StoppedAt), v.NAT, v.AutoStop, v.Workspace,
		v.Isolate, strings.Join(v.Allow, "\n"), v.IdleAction, v.Init, v.Creator, v.NoShare)
	if err != nil {
		return fmt.Errorf("writing vm %q: %w", v.Name, err)
	}
	return nil
}

// VM returns the record named name, or ErrNotFound.
func (t *Tx) VM(ctx context.Context, name string) (VM, error) {
	v, err := one(ctx, t, scanVM, fmt.Sprintf("vm %q", name), "SELECT "+vmColumns+" FROM vms WHERE name = ?", name)
	if err != nil {
		return VM{}, err
	}
	if v.Addr, err = t.Lease(ctx, v.ID); err != nil && !errors.Is(err, ErrNotFound) {
		return VM{}, err
	}
	return v, nil
}

// VMs lists every record, oldest first.
func (t *Tx) VMs(ctx context.Context) ([]VM, error) {
	out, err := all(ctx, t, scanVM, "vms", "SELECT "+vmColumns+" FROM vms ORDER BY created_at, name")
	if err != nil {
		return nil, err
	}
	leases, err := t.Leases(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]netip.Addr{}
	for a, id := range leases {
		byID[id] = a
	}
	for i := range out {
		out[i].Addr = byID[out[i].ID]
	}
	return out, nil
}

// DeleteVM removes the record named name, and frees its lease and forwards.
func (t *Tx) DeleteVM(ctx context.Context, name string) error {
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM leases WHERE vm_id = (SELECT id FROM vms WHERE name = ?)", name); err != nil {
		return fmt.Errorf("freeing the lease of vm %q: %w", name, err)
	}
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM forwards WHERE vm_id = (SELECT id FROM vms WHERE name = ?)", name); err != nil {
		return fmt.Errorf("removing the forwards of vm %q: %w", name, err)
	}
	res, err := t.tx.ExecContext(ctx, "DELETE FROM vms WHERE name = ?", name)
	if err != nil {
		return fmt.Errorf("deleting vm %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("vm %q: %w", name, ErrNotFound)
	}
	return nil
}

// VMsUsing counts the running and the other VMs whose column col
// ("image_id" or "kernel_id") is id.
func (t *Tx) VMsUsing(ctx context.Context, col, id string) (running, other int, err error) {
	if col != "image_id" && col != "kernel_id" {
		return 0, 0, fmt.Errorf("counting vms by %q: not a column to count by", col)
	}
	err = t.tx.QueryRowContext(ctx, "SELECT COUNT(*) FILTER (WHERE state = 'running'), COUNT(*) FILTER (WHERE state != 'running') FROM vms WHERE "+col+" = ?", id).Scan(&running, &other)
	if err != nil {
		return 0, 0, fmt.Errorf("counting vms of %s %s: %w", col, id, err)
	}
	return running, other, nil
}

// SetVMWorkspace records the guest directory of a VM's workspace.
func (t *Tx) SetVMWorkspace(ctx context.Context, name, dir string) error {
	res, err := t.tx.ExecContext(ctx, "UPDATE vms SET workspace = ? WHERE name = ?", dir, name)
	if err != nil {
		return fmt.Errorf("writing the workspace of vm %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("vm %q: %w", name, ErrNotFound)
	}
	return nil
}
