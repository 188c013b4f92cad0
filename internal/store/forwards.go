package store

import (
	"context"
	"fmt"
)

// Forward is a loopback listener for a guest port.
type Forward struct {
	VMID      string
	GuestPort int
	GuestAddr string
	HostAddr  string
}

// PutForward records f, replacing the VM's forward of the same port.
func (t *Tx) PutForward(ctx context.Context, f Forward) error {
	_, err := t.tx.ExecContext(ctx, "INSERT OR REPLACE INTO forwards(vm_id, guest_port, guest_addr, host_addr) VALUES(?, ?, ?, ?)",
		f.VMID, f.GuestPort, f.GuestAddr, f.HostAddr)
	if err != nil {
		return fmt.Errorf("recording the forward of vm %s port %d: %w", f.VMID, f.GuestPort, err)
	}
	return nil
}

// Forwards lists every forward.
func (t *Tx) Forwards(ctx context.Context) ([]Forward, error) {
	return all(ctx, t, func(r scanner) (Forward, error) {
		var f Forward
		err := r.Scan(&f.VMID, &f.GuestPort, &f.GuestAddr, &f.HostAddr)
		return f, err
	}, "forwards", "SELECT vm_id, guest_port, guest_addr, host_addr FROM forwards ORDER BY vm_id, guest_port")
}

// DeleteForwards removes the forwards of a VM.
func (t *Tx) DeleteForwards(ctx context.Context, vmID string) error {
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM forwards WHERE vm_id = ?", vmID); err != nil {
		return fmt.Errorf("removing the forwards of vm %s: %w", vmID, err)
	}
	return nil
}
