package hostnet

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/roottest"
)

func TestRange(t *testing.T) {
	for _, tc := range []struct{ prefix, gw, first, last string }{
		{"10.203.0.0/24", "10.203.0.1", "10.203.0.2", "10.203.0.254"},
		{"10.203.0.7/29", "10.203.0.1", "10.203.0.2", "10.203.0.6"},
		{"172.16.0.0/12", "172.16.0.1", "172.16.0.2", "172.31.255.254"},
	} {
		n, err := New(Config{Bridge: "b", Prefix: netip.MustParsePrefix(tc.prefix), Owner: "o"})
		if err != nil {
			t.Fatal(err)
		}
		first, last := n.Range()
		if n.Gateway().String() != tc.gw || first.String() != tc.first || last.String() != tc.last {
			t.Errorf("%s: gateway %s, range %s-%s; want %s, %s-%s", tc.prefix, n.Gateway(), first, last, tc.gw, tc.first, tc.last)
		}
	}
	for _, bad := range []string{"10.0.0.0/30", "fd00::/64", "10.0.0.0/7"} {
		if _, err := New(Config{Bridge: "b", Prefix: netip.MustParsePrefix(bad), Owner: "o"}); err == nil {
			t.Errorf("New accepted %s", bad)
		}
	}
	if got := TapName("0123456789abcdef0123456789abcdef"); got != "bg-0123456789ab" || len(got) > 15 {
		t.Errorf("TapName = %q", got)
	}
}

// inNewNetns moves the test's goroutine, locked to its thread, into a
// network namespace of its own, which goes when the thread does: the test
// touches nothing of the host's network.
func inNewNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread() // never unlocked: the thread ends with the test
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("making a network namespace: %v", err)
	}
}

// TestAttachDetachSweep drives the real kernel: bridge, taps and
// nftables in a namespace the test makes.
func TestAttachDetachSweep(t *testing.T) {
	roottest.Require(t, "it makes a bridge, taps and nftables rules in a network namespace")
	inNewNetns(t)
	var up []netip.Addr
	n, err := New(Config{Bridge: "bgtest0", Prefix: netip.MustParsePrefix("10.99.0.0/24"), Owner: "test",
		OnUp: func(gw netip.Addr) { up = append(up, gw) }})
	if err != nil {
		t.Fatal(err)
	}
	if n.Ours() {
		t.Fatal("Ours before any bridge exists")
	}
	// Nothing to sweep before the first VM, and sweeping makes nothing.
	if removed, err := n.Sweep(nil); err != nil || len(removed) != 0 {
		t.Fatalf("Sweep on a bare host = %v, %v", removed, err)
	}
	if _, err := netlink.LinkByName("bgtest0"); err == nil {
		t.Fatal("Sweep made the bridge")
	}
	const a, b = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	macA, _ := net.ParseMAC("52:54:00:00:00:0a")
	macB, _ := net.ParseMAC("52:54:00:00:00:0b")
	tapA, err := n.Attach(a, macA, netip.MustParseAddr("10.99.0.2"), false)
	if err != nil {
		t.Fatal(err)
	}
	// The bridge is up: its hook heard the gateway, and it is ours.
	if len(up) != 1 || up[0] != netip.MustParseAddr("10.99.0.1") || !n.Ours() {
		t.Fatalf("after the first attach: OnUp calls %v, Ours %v", up, n.Ours())
	}
	br, err := netlink.LinkByName("bgtest0")
	if err != nil {
		t.Fatalf("no bridge after attach: %v", err)
	}
	addrs, _ := netlink.AddrList(br, unix.AF_INET)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.99.0.1/24" {
		t.Errorf("bridge addresses = %v; want 10.99.0.1/24", addrs)
	}
	mac := br.Attrs().HardwareAddr.String()
	l, err := netlink.LinkByName(tapA)
	if err != nil || l.Attrs().MasterIndex != br.Attrs().Index || l.Attrs().Flags&unix.IFF_UP == 0 {
		t.Fatalf("tap %s: %v, %+v", tapA, err, l)
	}
	if got := ruleOwners(t, n); !slices.Equal(got, []string{a, a, a, a}) {
		t.Errorf("a sandboxed VM's rules = %v; want its four anti-spoofing ones, no NAT", got)
	}
	if len(forwardRules(t, n)) != 5 {
		t.Errorf("forward chain has %d rules; want 5", len(forwardRules(t, n)))
	}
	// b gets NAT, and attaching it twice (a restart) leaves one set of rules.
	for range 2 {
		if _, err := n.Attach(b, macB, netip.MustParseAddr("10.99.0.3"), true); err != nil {
			t.Fatal(err)
		}
	}
	if got := ruleOwners(t, n); !slices.Equal(got, []string{b, b, a, a, a, a, b, b, b, b}) {
		t.Errorf("rule owners after attaching b with NAT = %v; want b's two NAT rules, then a's and b's anti-spoofing", got)
	}
	if fwd, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("ip_forward = %q after a NAT attach", fwd)
	}
	// The fixed rules are made once.
	if len(forwardRules(t, n)) != 5 {
		t.Errorf("forward chain has %d rules after three attaches; want 5", len(forwardRules(t, n)))
	}
	// An address outside the network is refused, and leaves nothing.
	if _, err := n.Attach("cccccccccccccccccccccccccccccccc", macB, netip.MustParseAddr("10.98.0.3"), true); err == nil {
		t.Error("attached an address outside the network")
	}
	// A network overlapping another interface's is refused by name.
	dummy := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "other0"}}
	if err := netlink.LinkAdd(dummy); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("10.50.1.1/16")
	if err := netlink.AddrAdd(dummy, addr); err != nil {
		t.Fatal(err)
	}
	n2, _ := New(Config{Bridge: "bgtest1", Prefix: netip.MustParsePrefix("10.50.7.0/24"), Owner: "test"})
	if _, err := n2.Attach(a, macA, netip.MustParseAddr("10.50.7.2"), false); err == nil || !strings.Contains(err.Error(), "overlaps 10.50.1.1/16 on other0") {
		t.Errorf("overlapping network: %v", err)
	}
	if _, err := netlink.LinkByName("bgtest1"); err == nil {
		t.Error("a refused network left its bridge")
	}
	// Another daemon's bridge of the same name is refused, and its
	// taps are not swept.
	other, _ := New(Config{Bridge: "bgtest0", Prefix: netip.MustParsePrefix("10.99.0.0/24"), Owner: "other"})
	if _, err := other.Attach("dddddddddddddddddddddddddddddddd", macA, netip.MustParseAddr("10.99.0.9"), false); err == nil ||
		!strings.Contains(err.Error(), "belongs to another banger daemon (test)") {
		t.Errorf("attaching to another daemon's bridge: %v", err)
	}
	if removed, err := other.Sweep(nil); err != nil || len(removed) != 0 {
		t.Errorf("another daemon swept %v, %v", removed, err)
	}
	// The bridge's MAC is its own, whatever ports come and go: guests
	// cache it.
	if br, _ := netlink.LinkByName("bgtest0"); br.Attrs().HardwareAddr.String() != mac {
		t.Errorf("the bridge's MAC changed from %s to %s as taps came", mac, br.Attrs().HardwareAddr)
	}
	// Sweep keeps a, removes b's tap and rules.
	removed, err := n.Sweep([]string{a})
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 7 {
		t.Errorf("Sweep removed %v; want b's tap and six rules", removed)
	}
	if _, err := netlink.LinkByName(TapName(b)); err == nil {
		t.Error("Sweep kept b's tap")
	}
	if _, err := netlink.LinkByName(tapA); err != nil {
		t.Errorf("Sweep removed a's tap: %v", err)
	}
	if got := ruleOwners(t, n); !slices.Equal(got, []string{a, a, a, a}) {
		t.Errorf("rules after Sweep = %v; want a's only", got)
	}
	for range 2 {
		if err := n.Detach(a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := netlink.LinkByName(tapA); err == nil {
		t.Error("Detach kept the tap")
	}
	if got := ruleOwners(t, n); len(got) != 0 {
		t.Errorf("rules after Detach = %v", got)
	}
	if br, _ := netlink.LinkByName("bgtest0"); br.Attrs().HardwareAddr.String() != mac {
		t.Errorf("the bridge's MAC changed from %s to %s as taps went", mac, br.Attrs().HardwareAddr)
	}
}

// ruleOwners lists the owners of every per-VM rule, in chain order.
func ruleOwners(t *testing.T, n *Network) []string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ch := range n.ownedChains() {
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			if o, ok := RuleOwner(r); ok {
				out = append(out, o)
			}
		}
	}
	return out
}

func forwardRules(t *testing.T, n *Network) []*nftables.Rule {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	forward, _, _ := n.chains()
	rules, err := c.GetRules(n.table(), forward)
	if err != nil {
		t.Fatal(err)
	}
	return rules
}
