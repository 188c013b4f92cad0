package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/vm"
	"github.com/bangerdev/banger/internal/vmdns"
)

// dnsPort is where the .vm zone is served, on the bridge's address.
const dnsPort = 53

// bridgeNet is the bridge network with the .vm DNS server, which starts
// listening on the gateway as soon as the bridge exists.
type bridgeNet struct {
	*hostnet.Network
	d *Daemon
}

func (b bridgeNet) Attach(vmID string, mac net.HardwareAddr, addr netip.Addr, nat bool) (string, error) {
	tap, err := b.Network.Attach(vmID, mac, addr, nat)
	if err != nil {
		return "", err
	}
	b.d.listenDNS()
	return tap, nil
}

// bridge is the bridge network of a root daemon, or nil and why not.
func (d *Daemon) bridge() (vm.Bridge, string) {
	if os.Geteuid() != 0 {
		return nil, fmt.Sprintf("the daemon runs as uid %d, and a bridge, taps and nftables need root", os.Geteuid())
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return nil, fmt.Sprintf("this host has no /dev/net/tun (%v); load the tun module (`modprobe tun`)", err)
	}
	n, err := hostnet.New(hostnet.Config{Bridge: d.cfg.Network.Bridge, Prefix: d.cfg.Network.CIDR,
		Owner: d.instanceID + " " + d.layout.StateDir, Log: d.log.With("service", "hostnet")})
	if err != nil {
		return nil, err.Error()
	}
	d.hostnet = n
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	d.dns = vmdns.New(vmdns.Config{
		Resolve: func(ctx context.Context, name string) (netip.Addr, bool) { return d.vms.AddrOf(ctx, name) },
		MayForward: func(ctx context.Context, src netip.Addr) bool {
			return d.vms.MayGoOut(ctx, src)
		},
		Upstream: vmdns.Upstreams(resolv, func(a netip.Addr) bool { return n.Prefix().Contains(a) }),
		Log:      d.log.With("service", "dns"),
	})
	return bridgeNet{Network: n, d: d}, ""
}

// listenDNS serves the .vm zone on the bridge's address once the bridge
// has it. Without it VMs still run; only names do not resolve, so a
// failure is a warning.
func (d *Daemon) listenDNS() {
	if d.dns == nil {
		return
	}
	if _, err := net.InterfaceByName(d.cfg.Network.Bridge); err != nil {
		return // no bridge yet: the first bridge VM makes it
	}
	addr := netip.AddrPortFrom(d.hostnet.Gateway(), dnsPort)
	if err := d.dns.Listen(addr); err != nil {
		d.log.Warn("NAME.vm will not resolve", "err", err)
	}
}
