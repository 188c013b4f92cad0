package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/roottest"
)

func TestRange(t *testing.T) {
	for _, tc := range []struct {
		prefix, gw, first, last string
		size                    int
	}{
		{"10.203.0.0/24", "10.203.0.1", "10.203.0.2", "10.203.0.254", 253},
		{"10.203.0.7/29", "10.203.0.1", "10.203.0.2", "10.203.0.6", 5},
		{"172.16.0.0/12", "172.16.0.1", "172.16.0.2", "172.31.255.254", 1<<20 - 3},
	} {
		n, err := New(Config{Bridge: "b", Prefix: netip.MustParsePrefix(tc.prefix), Owner: "o"})
		if err != nil {
			t.Fatal(err)
		}
		first, last := n.Range()
		if n.Gateway().String() != tc.gw || first.String() != tc.first || last.String() != tc.last {
			t.Errorf("%s: gateway %s, range %s-%s; want %s, %s-%s", tc.prefix, n.Gateway(), first, last, tc.gw, tc.first, tc.last)
		}
		if got := RangeSize(netip.MustParsePrefix(tc.prefix)); got != tc.size {
			t.Errorf("%s: RangeSize = %d, want %d", tc.prefix, got, tc.size)
		}
	}
	for _, bad := range []string{"10.0.0.0/30", "fd00::/64", "10.0.0.0/7"} {
		if _, err := New(Config{Bridge: "b", Prefix: netip.MustParsePrefix(bad), Owner: "o"}); err == nil {
			t.Errorf("New accepted %s", bad)
		}
	}
	if _, err := New(Config{Bridge: "b", Prefix: netip.MustParsePrefix("10.0.0.0/24"), Owner: "o", Deny: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}}); err == nil {
		t.Error("New accepted an IPv6 denied destination")
	}
	if got := TapName("0123456789abcdef0123456789abcdef"); got != "bg-0123456789ab" || len(got) > 15 {
		t.Errorf("TapName = %q", got)
	}
}

// inNewNetns moves the test's goroutine, locked to its thread, into a
// network namespace of its own, which goes when the thread does: the test
// touches nothing of the host's network. A new namespace copies the
// host's IPv4 forwarding switch: it starts off here, as on a host that
// never routed.
func inNewNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread() // never unlocked: the thread ends with the test
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("making a network namespace: %v", err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func vmAttachment(id, mac, addr string, p Policy) Attachment {
	m, _ := net.ParseMAC(mac)
	return Attachment{ID: id, MAC: m, Addr: netip.MustParseAddr(addr), Policy: p}
}

// TestAttachDetachSync drives the real kernel: bridge, taps and
// nftables in a namespace the test makes; what the rules do to packets
// is TestContainment's.
func TestAttachDetachSync(t *testing.T) {
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
	// Nothing to sync before the first VM, and syncing makes nothing.
	if removed, err := n.Sync(nil); err != nil || len(removed) != 0 {
		t.Fatalf("Sync on a bare host = %v, %v", removed, err)
	}
	if _, err := netlink.LinkByName("bgtest0"); err == nil {
		t.Fatal("Sync made the bridge")
	}
	const a, b = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	va := vmAttachment(a, "52:54:00:00:00:0a", "10.99.0.2", Policy{})
	tapA, err := n.Attach(va)
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
	if br.Attrs().Group != BridgeGroup {
		t.Errorf("bridge group = %#x; want %#x", br.Attrs().Group, BridgeGroup)
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
	// A sandbox: anti-spoofing, to-host and egress rules, its chains,
	// no NAT, no sets.
	wantA := []string{"bridge prerouting", "bridge prerouting", "bridge prerouting", "bridge prerouting",
		"ip egress", "ip to-host"}
	if got := ownedRules(t, n, a); !slices.Equal(got, wantA) {
		t.Errorf("a sandboxed VM's rules = %v; want %v", got, wantA)
	}
	if got := objects(t, n); !slices.Equal(got, []string{"chain no-aaaaaaaaaaaa", "chain ok-aaaaaaaaaaaa", "chain vm-aaaaaaaaaaaa"}) {
		t.Errorf("per-VM chains and sets = %v", got)
	}
	fixed := len(chainRules(t, n.table(), chainForward))
	if fixed != 7 {
		t.Errorf("forward chain has %d rules; want 7 (forwarding was on, or is not checked)", fixed)
	}
	// b gets an allow-list and isolation, and attaching it twice (a
	// restart) leaves one set of rules.
	vb := vmAttachment(b, "52:54:00:00:00:0b", "10.99.0.3", Policy{NAT: true, Isolate: true, Allow: mustList(t, "192.0.2.0/24:443", "example.com")})
	for range 2 {
		if _, err := n.Attach(vb); err != nil {
			t.Fatal(err)
		}
	}
	wantB := []string{"bridge forward", "bridge forward", "bridge prerouting", "bridge prerouting", "bridge prerouting", "bridge prerouting",
		"ip egress", "ip isolation", "ip isolation", "ip postrouting", "ip to-host"}
	if got := ownedRules(t, n, b); !slices.Equal(got, wantB) {
		t.Errorf("rules of b = %v; want %v", got, wantB)
	}
	if got := objects(t, n); !slices.Equal(got, []string{"chain no-aaaaaaaaaaaa", "chain no-bbbbbbbbbbbb", "chain ok-aaaaaaaaaaaa", "chain ok-bbbbbbbbbbbb",
		"chain vm-aaaaaaaaaaaa", "chain vm-bbbbbbbbbbbb", "set a-bbbbbbbbbbbb", "set p-bbbbbbbbbbbb"}) {
		t.Errorf("per-VM chains and sets = %v", got)
	}
	// link-local, the list's two (TCP and UDP) port rules, its two sets,
	// the final goto.
	if got := len(chainRules(t, n.table(), "vm-bbbbbbbbbbbb")); got != 6 {
		t.Errorf("b's policy chain has %d rules; want 6", got)
	}
	if fwd, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("ip_forward = %q after a NAT attach", fwd)
	}
	// Forwarding was off in this namespace: banger keeps the host from
	// routing anything but its bridges' traffic, with one rule, once.
	if got := len(chainRules(t, n.table(), chainForward)); got != fixed+1 {
		t.Errorf("forward chain has %d rules after NAT attaches; want %d", got, fixed+1)
	}
	// An address outside the network is refused, and leaves nothing.
	if _, err := n.Attach(vmAttachment("cccccccccccccccccccccccccccccccc", "52:54:00:00:00:0c", "10.98.0.3", Policy{NAT: true})); err == nil {
		t.Error("attached an address outside the network")
	}
	if got := ownedRules(t, n, "cccccccccccccccccccccccccccccccc"); len(got) != 0 {
		t.Errorf("a refused attach left rules %v", got)
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
	if _, err := n2.Attach(vmAttachment(a, "52:54:00:00:00:0a", "10.50.7.2", Policy{})); err == nil || !strings.Contains(err.Error(), "overlaps 10.50.1.1/16 on other0") {
		t.Errorf("overlapping network: %v", err)
	}
	if _, err := netlink.LinkByName("bgtest1"); err == nil {
		t.Error("a refused network left its bridge")
	}
	// Another daemon's bridge of the same name is refused, and its
	// taps are not swept.
	other, _ := New(Config{Bridge: "bgtest0", Prefix: netip.MustParsePrefix("10.99.0.0/24"), Owner: "other"})
	if _, err := other.Attach(vmAttachment("dddddddddddddddddddddddddddddddd", "52:54:00:00:00:0a", "10.99.0.9", Policy{})); err == nil ||
		!strings.Contains(err.Error(), "belongs to another banger daemon (test)") {
		t.Errorf("attaching to another daemon's bridge: %v", err)
	}
	if removed, err := other.Sync(nil); err != nil || len(removed) != 0 {
		t.Errorf("another daemon swept %v, %v", removed, err)
	}
	// The bridge's MAC is its own, whatever ports come and go: guests
	// cache it.
	if br, _ := netlink.LinkByName("bgtest0"); br.Attrs().HardwareAddr.String() != mac {
		t.Errorf("the bridge's MAC changed from %s to %s as taps came", mac, br.Attrs().HardwareAddr)
	}
	// A restarted daemon keeps a, whose rules a hand lost, and removes
	// b's tap, rules, chains and sets.
	c, _ := nftables.New()
	for _, r := range chainRulesOf(t, c, n.table(), chainEgress) {
		_ = c.DelRule(r)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	restarted, _ := New(Config{Bridge: "bgtest0", Prefix: netip.MustParsePrefix("10.99.0.0/24"), Owner: "test"})
	removed, err := restarted.Sync([]Attachment{va})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, "tap "+TapName(b)) || !slices.Contains(removed, "nftables rules of vm "+b) || !slices.Contains(removed, "nftables set a-bbbbbbbbbbbb") {
		t.Errorf("Sync removed %v; want b's tap, rules, chains and sets", removed)
	}
	if _, err := netlink.LinkByName(TapName(b)); err == nil {
		t.Error("Sync kept b's tap")
	}
	if _, err := netlink.LinkByName(tapA); err != nil {
		t.Errorf("Sync removed a's tap: %v", err)
	}
	if got := ownedRules(t, n, a); !slices.Equal(got, wantA) {
		t.Errorf("a's rules after Sync = %v; want %v (made again)", got, wantA)
	}
	if got := ownedRules(t, n, b); len(got) != 0 {
		t.Errorf("b's rules after Sync = %v", got)
	}
	if got := objects(t, n); !slices.Equal(got, []string{"chain no-aaaaaaaaaaaa", "chain ok-aaaaaaaaaaaa", "chain vm-aaaaaaaaaaaa"}) {
		t.Errorf("per-VM chains and sets after Sync = %v", got)
	}
	// An older banger's table (no layout tag) is replaced whole.
	c.FlushChain(regular(n.table(), chainForward))
	c.AddRule(&nftables.Rule{Table: n.table(), Chain: regular(n.table(), chainForward), Exprs: join(accept()), UserData: comment("banger")})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := restarted.Sync([]Attachment{va}); err != nil {
		t.Fatal(err)
	}
	if got := len(chainRules(t, n.table(), chainForward)); got != fixed {
		t.Errorf("an older table made again has %d forward rules; want %d", got, fixed)
	}
	if got := ownedRules(t, n, a); !slices.Equal(got, wantA) {
		t.Errorf("a's rules after an older table = %v; want %v", got, wantA)
	}
	for range 2 {
		if err := n.Detach(a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := netlink.LinkByName(tapA); err == nil {
		t.Error("Detach kept the tap")
	}
	if got := ownedRules(t, n, a); len(got) != 0 {
		t.Errorf("rules after Detach = %v", got)
	}
	if got := objects(t, n); len(got) != 0 {
		t.Errorf("chains and sets after Detach = %v", got)
	}
	if br, _ := netlink.LinkByName("bgtest0"); br.Attrs().HardwareAddr.String() != mac {
		t.Errorf("the bridge's MAC changed from %s to %s as taps went", mac, br.Attrs().HardwareAddr)
	}
}

// TestTapsAreChangedOnlyWhenOurs: a tap named like a VM's (its first 12
// digits) that is another daemon's (a VM whose ID starts the same, on
// that daemon's bridge), a tap of no one's (unmarked, unenslaved), or one
// another user owns is neither removed by Detach nor swept by Sync, and
// blocks an Attach of that name by name; a tap this network made is
// marked with the VM's whole ID. The taps are capped by the network's
// addresses, and what a made-up VM resolved leaves nothing behind.
func TestTapsAreChangedOnlyWhenOurs(t *testing.T) {
	roottest.Require(t, "it makes a bridge and taps in a network namespace")
	inNewNetns(t)
	n, err := New(Config{Bridge: "bgtest2", Prefix: netip.MustParsePrefix("10.97.0.0/29"), Owner: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	const mine = "0123456789ab00000000000000000001"
	tap, err := n.Attach(vmAttachment(mine, "52:54:00:00:01:01", "10.97.0.2", Policy{}))
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := netlink.LinkByName(tap); l == nil || l.Attrs().Alias != "banger tap "+mine+" banger mine" {
		t.Fatalf("tap %s is marked %+v", tap, l)
	}
	// Another daemon's VM whose ID starts as this one's: its own tap,
	// on its own bridge; Detach of this VM, with its tap renamed away
	// first, must not take it.
	const theirs = "0123456789abffffffffffffffffffff"
	other, _ := New(Config{Bridge: "bgtest3", Prefix: netip.MustParsePrefix("10.96.0.0/29"), Owner: "theirs"})
	if err := n.Detach(mine); err != nil {
		t.Fatal(err)
	}
	otherTap, err := other.Attach(vmAttachment(theirs, "52:54:00:00:02:01", "10.96.0.2", Policy{}))
	if err != nil || otherTap != tap {
		t.Fatalf("the other daemon's attach = %q, %v", otherTap, err)
	}
	if err := n.Detach(mine); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(otherTap); err != nil {
		t.Fatalf("Detach removed the other daemon's tap: %v", err)
	}
	if _, err := n.Attach(vmAttachment(mine, "52:54:00:00:01:01", "10.97.0.2", Policy{})); err == nil || !strings.Contains(err.Error(), "exists: vm "+theirs) && !strings.Contains(err.Error(), "exists: a tuntap") {
		t.Fatalf("Attach over the other daemon's tap = %v", err)
	}
	if err := other.Detach(theirs); err != nil {
		t.Fatal(err)
	}
	// A tap of no one's, and one another user owns, named as this VM's.
	for _, foreign := range []*netlink.Tuntap{
		{LinkAttrs: netlink.LinkAttrs{Name: tap}, Mode: netlink.TUNTAP_MODE_TAP},
		{LinkAttrs: netlink.LinkAttrs{Name: tap}, Mode: netlink.TUNTAP_MODE_TAP, Owner: 4242},
	} {
		if err := netlink.LinkAdd(foreign); err != nil {
			t.Fatal(err)
		}
		l, _ := netlink.LinkByName(tap)
		if foreign.Owner != 0 {
			// Marked as this network's, but another user's: still not ours.
			_ = netlink.LinkSetAlias(l, n.tapAlias(mine))
		}
		if err := n.Detach(mine); err != nil {
			t.Fatal(err)
		}
		if removed, err := n.Sync(nil); err != nil || slices.Contains(removed, "tap "+tap) {
			t.Fatalf("Sync removed %v, %v", removed, err)
		}
		if _, err := netlink.LinkByName(tap); err != nil {
			t.Fatalf("a foreign tap (owner %d) was removed: %v", foreign.Owner, err)
		}
		_ = netlink.LinkDel(l)
	}
	// As many taps as addresses (a /29: five), no more.
	var ids []string
	for i := range 5 {
		id := fmt.Sprintf("%02x%030x", 0xa0+i, 7)
		ids = append(ids, id)
		if _, err := n.Attach(vmAttachment(id, fmt.Sprintf("52:54:00:00:03:%02x", i), fmt.Sprintf("10.97.0.%d", 2+i), Policy{})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Attach(vmAttachment(fmt.Sprintf("ff%030x", 7), "52:54:00:00:03:ff", "10.97.0.2", Policy{})); !errors.Is(err, ErrFull) {
		t.Fatalf("a sixth tap on a /29 = %v", err)
	}
	// What a made-up VM (no sets) resolved is refused and not kept.
	if err := n.AllowResolved("deadbeefdeadbeefdeadbeefdeadbeef", []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil, time.Minute); err == nil {
		t.Fatal("a VM without sets had addresses allowed")
	}
	if len(n.resolved) != 0 {
		t.Fatalf("kept for VMs that are not there: %v", n.resolved)
	}
	for _, id := range ids {
		if err := n.Detach(id); err != nil {
			t.Fatal(err)
		}
	}
}

func mustList(t *testing.T, rules ...string) allowlist.List {
	t.Helper()
	l, err := allowlist.ParseList(rules)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ownedRules lists "family chain" of every rule owned by the VM id,
// sorted.
func ownedRules(t *testing.T, n *Network, id string) []string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ch := range n.ownedChains() {
		for _, r := range chainRulesOf(t, c, ch.Table, ch.Name) {
			if o, ok := RuleOwner(r); ok && o == id {
				fam := map[nftables.TableFamily]string{nftables.TableFamilyIPv4: "ip", nftables.TableFamilyBridge: "bridge"}[ch.Table.Family]
				out = append(out, fam+" "+ch.Name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// objects lists the per-VM chains and sets of the ip table, sorted.
func objects(t *testing.T, n *Network) []string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	chains, _ := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	for _, ch := range chains {
		if _, ok := vmObject(ch.Name, "vm-", "ok-", "no-"); ok && ch.Table.Name == n.table().Name {
			out = append(out, "chain "+ch.Name)
		}
	}
	sets, _ := c.GetSets(n.table())
	for _, s := range sets {
		out = append(out, "set "+s.Name)
	}
	slices.Sort(out)
	return out
}

func chainRules(t *testing.T, table *nftables.Table, chain string) []*nftables.Rule {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	return chainRulesOf(t, c, table, chain)
}

func chainRulesOf(t *testing.T, c *nftables.Conn, table *nftables.Table, chain string) []*nftables.Rule {
	t.Helper()
	rules, err := c.GetRules(table, regular(table, chain))
	if err != nil && !strings.Contains(err.Error(), "no such file") {
		t.Fatal(err)
	}
	return rules
}
