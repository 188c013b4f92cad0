package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/stats"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vm"
)

// newStats wires the stats service to the VM service through closures;
// it needs d.vms set.
func (d *Daemon) newStats() *stats.Service {
	target := func(v api.VM) stats.Target {
		t := stats.Target{Name: v.Name, ID: v.ID, PID: v.PID, VCPU: v.VCPU, Network: v.Network,
			AutoStop: vm.AutoStopAfter(v.AutoStop, d.cfg.AutoStopStaleAfter)}
		if v.Network == api.NetworkBridge {
			t.Addr, _ = netip.ParseAddr(v.IP)
		}
		if v.StartedAt != nil {
			t.StartedAt = *v.StartedAt
		}
		return t
	}
	return stats.New(stats.Config{
		Running: func(ctx context.Context) ([]stats.Target, error) {
			all, err := d.vms.List(ctx)
			var out []stats.Target
			for _, v := range all.VMs {
				if v.State == api.VMRunning {
					out = append(out, target(v))
				}
			}
			return out, err
		},
		Target: func(ctx context.Context, name string) (stats.Target, error) {
			v, err := d.vms.Show(ctx, api.VMRefParams{Name: name})
			if err != nil {
				return stats.Target{}, err
			}
			if v.State != api.VMRunning {
				return stats.Target{}, fmt.Errorf("vm %s is %s: %w; start it with `banger vm start %s`", name, v.State, api.ErrNotRunning, name)
			}
			return target(v), nil
		},
		Agent: func(ctx context.Context, name string) (stats.Agent, error) {
			c, err := d.vms.Agent(ctx, name)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		AutoStop: d.vms.AutoStop,
		Forwards: storeForwards{d.store},
		Interval: d.cfg.StatsPollInterval,
		Log:      d.log.With("service", "stats"),
	})
}

// The stats service's methods, adapted for the dispatch table.

func vmStats(ctx context.Context, d *Daemon, p api.VMRefParams) (api.VMStats, error) {
	return d.stats.Stats(ctx, p.Name)
}

func vmStatsAll(ctx context.Context, d *Daemon) (api.VMStatsList, error) {
	return d.stats.StatsAll(ctx)
}

func vmHealth(ctx context.Context, d *Daemon, p api.VMRefParams) (api.VMHealth, error) {
	return d.stats.Health(ctx, p.Name)
}

func vmPorts(ctx context.Context, d *Daemon, p api.VMPortsParams) (api.VMPortsResult, error) {
	return d.stats.Ports(ctx, p.Name, p.Forward)
}

// touchVMs records API activity on the VMs a vm.* call names, for the
// idle sweep. Reads (list, stats, ports, health, ping) are left out: a
// dashboard polling them must not keep every VM awake.
func (d *Daemon) touchVMs(method string, params json.RawMessage) {
	if d.stats == nil || !strings.HasPrefix(method, "vm.") {
		return
	}
	switch method {
	case api.MethodVMList, api.MethodVMShow, api.MethodVMStats, api.MethodVMStatsAll, api.MethodVMHealth,
		api.MethodVMPing, api.MethodVMPorts, api.MethodVMLogs:
		return
	}
	var ref struct {
		Name  string   `json:"name"`
		Names []string `json:"names"`
	}
	if json.Unmarshal(params, &ref) != nil {
		return
	}
	for _, n := range append(ref.Names, ref.Name) {
		if n != "" {
			d.stats.Touch(n)
		}
	}
}

// storeForwards keeps the stats service's forwards in the store.
type storeForwards struct{ st *store.Store }

func (f storeForwards) Save(ctx context.Context, fw stats.Forward) error {
	return f.st.Update(ctx, func(tx *store.Tx) error {
		return tx.PutForward(ctx, store.Forward{VMID: fw.VMID, GuestPort: fw.GuestPort, GuestAddr: fw.GuestAddr, HostAddr: fw.HostAddr})
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
			out = append(out, stats.Forward{VMID: fw.VMID, GuestPort: fw.GuestPort, GuestAddr: fw.GuestAddr, HostAddr: fw.HostAddr})
		}
		return err
	})
	return out, err
}
