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

// Local says whether the DNS server answers a query from addr at all:
// the bridge's network (its VMs and the gateway, the host) and the
// host's loopback.
func (n Names) Local(addr netip.Addr) bool {
	return n.Prefix.Contains(addr) || addr.IsLoopback()
}

// MayGoOut says whether the bridge address addr belongs to a VM with
// NAT; the host itself (the gateway, loopback) may too. Anyone else may
// not: the server is no open resolver.
func (n Names) MayGoOut(ctx context.Context, addr netip.Addr) bool {
	if addr == n.Gateway || addr.IsLoopback() {
		return true
	}
	if !n.Prefix.Contains(addr) {
		return false
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
