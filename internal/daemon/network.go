package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/egress"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/nethelper"
	"github.com/bangerdev/banger/internal/vm"
	"github.com/bangerdev/banger/internal/vmdns"
)

// dnsPort is where the .vm zone is served, on the bridge's address.
const dnsPort = 53

// bridgeNet is the host's side of the bridge network: a root daemon's
// own *hostnet.Network, or a *nethelper.Client asking the root helper.
type bridgeNet interface {
	vm.Bridge
	Ours() bool
	AllowResolved(vmID string, addrs []netip.Addr, ports []uint16, ttl time.Duration) error
	Watch(ctx context.Context, seen func(hostnet.Attempt)) error
}

// bridge is the bridge network, its .vm DNS server and the egress log
// both feed.
type bridge struct {
	net     bridgeNet
	dns     *vmdns.Server
	egress  *egress.Service
	watched sync.Once // the firewall's log, read from when the bridge first exists
}

// egressService keeps what VMs tried to reach, and publishes each
// denial as an event; it reads the VM records from the store, so it
// needs no service.
func (d *Daemon) egressService(names vm.Names, publish func(api.Event)) *egress.Service {
	vmsDir := filepath.Join(d.layout.StateDir, "vms")
	return egress.New(egress.Config{
		Find: func(ctx context.Context, name string) (egress.Target, error) {
			id, network, err := names.Lookup(ctx, name)
			return egress.Target{ID: id, Network: network}, err
		},
		Dir:    func(id string) string { return filepath.Join(vmsDir, id) },
		Egress: names.Egress,
		Deny:   d.cfg.Network.NATDeny,
		Log:    d.log.With("service", "egress"),
		Denied: func(id string, e api.EgressEvent) {
			ctx, cancel := context.WithTimeout(d.lifetime, 5*time.Second)
			defer cancel()
			name, ok := names.NameOf(ctx, id)
			if !ok {
				return // deleted meanwhile
			}
			publish(api.Event{Time: e.Time, Type: api.EventEgressDenied, VM: name, Reason: e.Reason, Detail: egressDetail(e)})
		},
	})
}

// egressDetail says where a denied attempt went, as `vm egress` does.
func egressDetail(e api.EgressEvent) string {
	if e.Kind == api.EgressDNS {
		return "dns " + e.Name
	}
	where := e.Proto + " " + e.Dest
	if e.Port != 0 {
		where += ":" + strconv.Itoa(e.Port)
	}
	if e.Name != "" {
		where += " (" + e.Name + ")"
	}
	return where
}

// bridgeNetwork is the bridge network and its .vm DNS server, which
// starts listening on the gateway when the bridge comes up (the
// network's OnUp hook), as the firewall's log is read; nil and why not
// elsewhere. A root daemon does it in-process; an installed one, running
// as its owner, asks the root helper (network.helper). The DNS server
// reads the VM records from the store, so it needs no service.
func (d *Daemon) bridgeNetwork(names vm.Names, eg *egress.Service) (*bridge, string) {
	b := &bridge{egress: eg}
	onUp := func(gw netip.Addr) { d.bridgeUp(b, gw) }
	var bind func(netip.AddrPort) (*net.UDPConn, error)
	switch {
	case d.cfg.Network.Helper != "":
		ctx, cancel := context.WithTimeout(d.lifetime, 30*time.Second)
		defer cancel()
		c, err := nethelper.NewClient(ctx, d.cfg.Network.Helper, d.cfg.Network.CIDR, d.log.With("service", "nethelper"))
		if err != nil {
			return nil, err.Error()
		}
		c.OnUp, bind, b.net = onUp, c.DNSSocket, c
	case os.Geteuid() != 0:
		return nil, fmt.Sprintf("this daemon runs as uid %d without root, and a bridge, taps and nftables need root: install banger with `sudo banger system install` (your daemon, with a narrow root helper for the network; docs/privileges.md), or use --network user", os.Geteuid())
	default:
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			return nil, fmt.Sprintf("this host has no /dev/net/tun (%v); load the tun module (`modprobe tun`)", err)
		}
		n, err := hostnet.New(hostnet.Config{Bridge: d.cfg.Network.Bridge, Prefix: d.cfg.Network.CIDR,
			Owner: d.instanceID + " " + d.layout.StateDir, Deny: d.cfg.Network.NATDeny, Log: d.log.With("service", "hostnet"),
			OnUp: onUp})
		if err != nil {
			return nil, err.Error()
		}
		b.net = n
	}
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	b.dns = vmdns.New(vmdns.Config{
		Resolve: names.AddrOf,
		Source: func(ctx context.Context, src netip.Addr) vmdns.Source {
			id, egress, allow := names.Source(ctx, src)
			l, _ := allowlist.ParseList(allow) // canonical in the store
			return vmdns.Source{VM: id, Egress: egress, Allow: l}
		},
		Resolved: b.net.AllowResolved,
		Observe:  eg.DNS,
		Local:    names.Local,
		Upstream: vmdns.Upstreams(resolv, names.Prefix.Contains),
		Bind:     bind,
		Log:      d.log.With("service", "dns"),
	})
	return b, ""
}

// bridgeUp serves the .vm zone on the bridge's address, and reads the
// firewall's log into the egress log. Without either VMs still run
// (names do not resolve, connections are not logged): a failure is a
// warning.
func (d *Daemon) bridgeUp(b *bridge, gw netip.Addr) {
	if err := b.dns.Listen(netip.AddrPortFrom(gw, dnsPort)); err != nil {
		d.log.Warn("NAME.vm will not resolve", "err", err)
	}
	b.watched.Do(func() {
		if err := b.net.Watch(d.lifetime, b.egress.Attempt); err != nil {
			d.log.Warn("VMs' connections will not be logged (vm egress)", "err", err)
		}
	})
}
