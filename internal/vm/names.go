package vm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/store"
)

// Names answers what the .vm DNS zone asks of the VM records, from the
// store alone: no service is needed, so the DNS server can exist before
// the bridge network that starts it and the VM service that uses that.
type Names struct {
	Store   store.Access
	Prefix  netip.Prefix // the bridge network
	Gateway netip.Addr   // the host's address on it
}

// AddrOf is the bridge address of the VM named name, for NAME.vm.
func (n Names) AddrOf(ctx context.Context, name string) (netip.Addr, bool) {
	if !validName.MatchString(name) {
		return netip.Addr{}, false
	}
	var rec store.VM
	err := n.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		rec, err = tx.VM(ctx, name)
		return err
	})
	if err != nil || rec.Network != api.NetworkBridge || !rec.Addr.IsValid() {
		return netip.Addr{}, false
	}
	return rec.Addr, true
}

// Local says whether the DNS server answers a query from addr at all:
// the bridge's network (its VMs and the gateway, the host) and the
// host's loopback.
func (n Names) Local(addr netip.Addr) bool {
	return n.Prefix.Contains(addr) || addr.IsLoopback()
}

// Source says who the bridge address addr is, for the DNS server: a VM
// (its ID, what it may reach, its allow-list), or the host itself (the
// gateway, loopback: no ID, anything). An address no VM holds may reach
// nothing: the server is no open resolver.
func (n Names) Source(ctx context.Context, addr netip.Addr) (id, egress string, allow []string) {
	if addr == n.Gateway || addr.IsLoopback() {
		return "", api.EgressNAT, nil
	}
	egress = api.EgressSandbox
	if !n.Prefix.Contains(addr) {
		return "", egress, nil
	}
	_ = n.Store.View(ctx, func(tx *store.Tx) error {
		all, err := tx.VMs(ctx)
		for _, rec := range all {
			if rec.Addr == addr && rec.Network == api.NetworkBridge {
				id, egress, allow = rec.ID, egressOf(rec), rec.Allow
			}
		}
		return err
	})
	return id, egress, allow
}

// Egress is what the VM of that ID may reach now (api.Egress*), and its
// allow-list.
func (n Names) Egress(ctx context.Context, id string) (mode string, allow []string) {
	mode = api.EgressSandbox
	_ = n.Store.View(ctx, func(tx *store.Tx) error {
		all, err := tx.VMs(ctx)
		for _, rec := range all {
			if rec.ID == id {
				mode, allow = egressOf(rec), rec.Allow
			}
		}
		return err
	})
	return mode, allow
}

// Lookup is the ID and network of the VM named name.
func (n Names) Lookup(ctx context.Context, name string) (id, network string, err error) {
	var rec store.VM
	err = n.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		rec, err = tx.VM(ctx, name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return "", "", fmt.Errorf("vm %q: %w (see `banger vm list`)", name, api.ErrNotFound)
	}
	return rec.ID, rec.Network, err
}

// NameOf is the name of the VM of that ID, for what is known of a VM by
// its ID alone (its egress, from the firewall's log).
func (n Names) NameOf(ctx context.Context, id string) (string, bool) {
	name := ""
	_ = n.Store.View(ctx, func(tx *store.Tx) error {
		all, err := tx.VMs(ctx)
		for _, rec := range all {
			if rec.ID == id {
				name = rec.Name
			}
		}
		return err
	})
	return name, name != ""
}
