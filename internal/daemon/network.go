package daemon

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/vm"
	"github.com/bangerdev/banger/internal/vmdns"
)

// dnsPort is where the .vm zone is served, on the bridge's address.
const dnsPort = 53

// bridgeNetwork is a root daemon's bridge network and its .vm DNS server,
// which starts listening on the gateway when the bridge comes up (the
// network's OnUp hook); nil and why not elsewhere. The DNS server reads
// the VM records from the store, so it needs no service.
func (d *Daemon) bridgeNetwork() (*hostnet.Network, *vmdns.Server, string) {
	if os.Geteuid() != 0 {
		return nil, nil, fmt.Sprintf("the daemon runs as uid %d, and a bridge, taps and nftables need root", os.Geteuid())
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return nil, nil, fmt.Sprintf("this host has no /dev/net/tun (%v); load the tun module (`modprobe tun`)", err)
	}
	prefix := d.cfg.Network.CIDR.Masked()
	names := vm.Names{Store: d.store, Prefix: prefix, Gateway: hostnet.GatewayOf(prefix)}
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	dns := vmdns.New(vmdns.Config{
		Resolve:    names.AddrOf,
		MayForward: names.MayGoOut,
		Local:      names.Local,
		Upstream:   vmdns.Upstreams(resolv, prefix.Contains),
		Log:        d.log.With("service", "dns"),
	})
	n, err := hostnet.New(hostnet.Config{Bridge: d.cfg.Network.Bridge, Prefix: d.cfg.Network.CIDR,
		Owner: d.instanceID + " " + d.layout.StateDir, Log: d.log.With("service", "hostnet"),
		OnUp: func(gw netip.Addr) { d.listenDNS(dns, gw) }})
	if err != nil {
		return nil, nil, err.Error()
	}
	return n, dns, ""
}

// listenDNS serves the .vm zone on the bridge's address. Without it VMs
// still run; only names do not resolve, so a failure is a warning.
func (d *Daemon) listenDNS(dns *vmdns.Server, gw netip.Addr) {
	if err := dns.Listen(netip.AddrPortFrom(gw, dnsPort)); err != nil {
		d.log.Warn("NAME.vm will not resolve", "err", err)
	}
}
