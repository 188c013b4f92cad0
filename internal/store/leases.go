package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
)

// ErrExhausted is returned when a network has no free address left.
var ErrExhausted = errors.New("no free address")

// AllocateLease gives vmID the lowest free address from first to last,
// both included; a VM that holds a lease keeps it.
func (t *Tx) AllocateLease(ctx context.Context, vmID string, first, last netip.Addr) (netip.Addr, error) {
	if a, err := t.Lease(ctx, vmID); err == nil {
		return a, nil
	} else if !errors.Is(err, ErrNotFound) {
		return netip.Addr{}, err
	}
	used, err := t.Leases(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	for a := first; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
		if _, taken := used[a]; taken {
			continue
		}
		if _, err := t.tx.ExecContext(ctx, "INSERT INTO leases(addr, vm_id) VALUES(?, ?)", a.String(), vmID); err != nil {
			return netip.Addr{}, fmt.Errorf("leasing %s to vm %s: %w", a, vmID, err)
		}
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("leasing an address from %s to %s: %w", first, last, ErrExhausted)
}

// Lease is vmID's address, or ErrNotFound.
func (t *Tx) Lease(ctx context.Context, vmID string) (netip.Addr, error) {
	var s string
	err := t.tx.QueryRowContext(ctx, "SELECT addr FROM leases WHERE vm_id = ?", vmID).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return netip.Addr{}, fmt.Errorf("lease of vm %s: %w", vmID, ErrNotFound)
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("reading the lease of vm %s: %w", vmID, err)
	}
	return parseLease(s)
}

// Leases maps every leased address to its VM's ID.
func (t *Tx) Leases(ctx context.Context) (map[netip.Addr]string, error) {
	rows, err := t.tx.QueryContext(ctx, "SELECT addr, vm_id FROM leases")
	if err != nil {
		return nil, fmt.Errorf("listing leases: %w", err)
	}
	defer rows.Close()
	out := map[netip.Addr]string{}
	for rows.Next() {
		var s, id string
		if err := rows.Scan(&s, &id); err != nil {
			return nil, fmt.Errorf("listing leases: %w", err)
		}
		a, err := parseLease(s)
		if err != nil {
			return nil, err
		}
		out[a] = id
	}
	return out, rows.Err()
}

func parseLease(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lease %q: %w", s, err)
	}
	return a, nil
}
