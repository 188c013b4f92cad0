package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Forward is a loopback listener for a guest port.
type Forward struct {
	VMID      string
	GuestPort int
	GuestAddr string
	HostAddr  string
	UIDs      []uint32 // who asked for it; none: the daemon's own user
}

// PutForward records f, replacing the VM's forward of the same port.
func (t *Tx) PutForward(ctx context.Context, f Forward) error {
	uids := make([]string, len(f.UIDs))
	for i, u := range f.UIDs {
		uids[i] = strconv.FormatUint(uint64(u), 10)
	}
	_, err := t.tx.ExecContext(ctx, "INSERT OR REPLACE INTO forwards(vm_id, guest_port, guest_addr, host_addr, uids) VALUES(?, ?, ?, ?, ?)",
		f.VMID, f.GuestPort, f.GuestAddr, f.HostAddr, strings.Join(uids, ","))
	if err != nil {
		return fmt.Errorf("recording the forward of vm %s port %d: %w", f.VMID, f.GuestPort, err)
	}
	return nil
}

// Forwards lists every forward.
func (t *Tx) Forwards(ctx context.Context) ([]Forward, error) {
	return all(ctx, t, func(r scanner) (Forward, error) {
		var f Forward
		var uids string
		if err := r.Scan(&f.VMID, &f.GuestPort, &f.GuestAddr, &f.HostAddr, &uids); err != nil {
			return f, err
		}
		for _, u := range strings.Split(uids, ",") {
			if n, err := strconv.ParseUint(u, 10, 32); err == nil {
				f.UIDs = append(f.UIDs, uint32(n))
			}
		}
		return f, nil
	}, "forwards", "SELECT vm_id, guest_port, guest_addr, host_addr, uids FROM forwards ORDER BY vm_id, guest_port")
}

// DeleteForwards removes the forwards of a VM.
func (t *Tx) DeleteForwards(ctx context.Context, vmID string) error {
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM forwards WHERE vm_id = ?", vmID); err != nil {
		return fmt.Errorf("removing the forwards of vm %s: %w", vmID, err)
	}
	return nil
}
