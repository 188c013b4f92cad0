package vm

import (
	"context"
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

// MayGoOut says whether the bridge address addr belongs to a VM with
// NAT; the host itself (the gateway, or an address off the bridge) may
// too.
func (n Names) MayGoOut(ctx context.Context, addr netip.Addr) bool {
	if !n.Prefix.Contains(addr) || addr == n.Gateway {
		return true
	}
	out := false
	_ = n.Store.View(ctx, func(tx *store.Tx) error {
		all, err := tx.VMs(ctx)
		for _, rec := range all {
			if rec.Addr == addr && rec.Network == api.NetworkBridge {
				out = rec.NAT
			}
		}
		return err
	})
	return out
}
