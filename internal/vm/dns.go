package vm

import (
	"context"
	"net/netip"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/store"
)

// AddrOf is the bridge address of the VM named name, for NAME.vm.
func (s *Service) AddrOf(ctx context.Context, name string) (netip.Addr, bool) {
	if !validName.MatchString(name) {
		return netip.Addr{}, false
	}
	rec, err := s.find(ctx, name)
	if err != nil || rec.Network != api.NetworkBridge || !rec.Addr.IsValid() {
		return netip.Addr{}, false
	}
	return rec.Addr, true
}

// MayGoOut says whether the bridge address addr belongs to a VM with
// NAT; the host itself (the gateway) may too.
func (s *Service) MayGoOut(ctx context.Context, addr netip.Addr) bool {
	if s.cfg.Bridge == nil || !s.cfg.Bridge.Prefix().Contains(addr) || addr == s.cfg.Bridge.Gateway() {
		return true
	}
	out := false
	_ = s.cfg.Store.View(ctx, func(tx *store.Tx) error {
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
