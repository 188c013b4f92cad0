package daemon

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/stats"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vm"
)

// statsVMs is the VM service as the stats service asks of it: its VMs
// as targets (read through List and Show, with the config's defaults),
// their agents and the idle sweep's actions (adapters.go).
type statsVMs struct {
	vms      *vm.Service
	autoStop time.Duration // the config's auto_stop_stale_after
	idle     string        // the config's auto_idle_action
}

func (t statsVMs) target(v api.VM) stats.Target {
	st := stats.Target{Name: v.Name, ID: v.ID, PID: v.PID, VCPU: v.VCPU, Network: v.Network,
		AutoStop: vm.AutoStopAfter(v.AutoStop, t.autoStop), Suspend: cmp.Or(v.IdleAction, t.idle) == api.IdleSuspend}
	if v.Network == api.NetworkBridge {
		st.Addr, _ = netip.ParseAddr(v.IP)
	}
	if v.StartedAt != nil {
		st.StartedAt = *v.StartedAt
	}
	return st
}

// Running lists the running VMs.
func (t statsVMs) Running(ctx context.Context) ([]stats.Target, error) {
	return t.inState(ctx, api.VMRunning)
}

// Suspended lists the suspended VMs.
func (t statsVMs) Suspended(ctx context.Context) ([]stats.Target, error) {
	return t.inState(ctx, api.VMSuspended)
}

func (t statsVMs) inState(ctx context.Context, state string) ([]stats.Target, error) {
	all, err := t.vms.List(ctx)
	var out []stats.Target
	for _, v := range all.VMs {
		if v.State == state {
			out = append(out, t.target(v))
		}
	}
	return out, err
}

// Target is the running VM named name.
func (t statsVMs) Target(ctx context.Context, name string) (stats.Target, error) {
	v, err := t.vms.Show(ctx, api.VMRefParams{Name: name})
	if err != nil {
		return stats.Target{}, err
	}
	if v.State != api.VMRunning {
		return stats.Target{}, fmt.Errorf("vm %s is %s: %w; start it with `banger vm start %s`", name, v.State, api.ErrNotRunning, name)
	}
	return t.target(v), nil
}

// storeForwards keeps the stats service's forwards in the store.
type storeForwards struct{ st *store.Store }

func (f storeForwards) Save(ctx context.Context, fw stats.Forward) error {
	return f.st.Update(ctx, func(tx *store.Tx) error {
		return tx.PutForward(ctx, store.Forward{VMID: fw.VMID, GuestPort: fw.GuestPort, GuestAddr: fw.GuestAddr, HostAddr: fw.HostAddr, UIDs: fw.UIDs})
	})
}

func (f storeForwards) Drop(ctx context.Context, vmID string) error {
	return f.st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteForwards(ctx, vmID) })
}

func (f storeForwards) All(ctx context.Context) ([]stats.Forward, error) {
	var out []stats.Forward
	err := f.st.View(ctx, func(tx *store.Tx) error {
		all, err := tx.Forwards(ctx)
		for _, fw := range all {
			out = append(out, stats.Forward{VMID: fw.VMID, GuestPort: fw.GuestPort, GuestAddr: fw.GuestAddr, HostAddr: fw.HostAddr, UIDs: fw.UIDs})
		}
		return err
	})
	return out, err
}
