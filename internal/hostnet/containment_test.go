package hostnet

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/roottest"
)

// The stand-in world of TestContainment. Host: the test's namespace,
// with the bridge and, on every address, a TCP service on :8080 and a
// UDP echo on :53; a second host address on lo. Outside: a namespace
// behind a veth, its web servers on two documentation addresses, a
// "metadata server" on 169.254.169.254 and a denied address, each
// answering TCP :80 and :443. A neighbour namespace on another host
// interface tries to route through the host.
const (
	hostOther   = "192.0.2.1"    // dummy0, another host address
	outsideAddr = "198.51.100.2" // the outside's veth
	outsideB    = "203.0.113.10" // another outside address
	deniedAddr  = "203.0.113.20" // in Config.Deny
	metadata    = "169.254.169.254"
	neighbour   = "192.168.77.2" // behind up1
)

// TestContainment sends real packets from stand-in guests (namespaces
// whose veth is named as a VM's tap and carries its MAC and address) at
// the real firewall: what each policy lets through, what it stops, and
// what the log says. Nothing leaves the namespaces the test makes.
func TestContainment(t *testing.T) {
	roottest.Require(t, "it makes namespaces, a bridge and nftables rules")
	inNewNetns(t)
	host, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	noDAD(t)
	outside := world(t)
	n, err := New(Config{Bridge: "bgtest0", Prefix: netip.MustParsePrefix("10.99.0.0/24"), Owner: "test",
		Deny: []netip.Prefix{netip.MustParsePrefix(deniedAddr + "/32")}})
	if err != nil {
		t.Fatal(err)
	}

	var logMu sync.Mutex
	var seen []Attempt
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	const (
		idSandbox  = "11111111111111111111111111111111"
		idNAT      = "22222222222222222222222222222222"
		idList     = "33333333333333333333333333333333"
		idIsolated = "44444444444444444444444444444444"
		idOpen     = "55555555555555555555555555555555"
	)
	sandbox := guest(t, n, host, vmAttachment(idSandbox, "52:54:00:00:01:01", "10.99.0.11", Policy{}))
	// The firewall exists once the first VM attached: watch its log.
	if err := n.Watch(ctx, func(a Attempt) { logMu.Lock(); seen = append(seen, a); logMu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	natVM := guest(t, n, host, vmAttachment(idNAT, "52:54:00:00:01:02", "10.99.0.12", Policy{NAT: true}))
	listVM := guest(t, n, host, vmAttachment(idList, "52:54:00:00:01:03", "10.99.0.13", Policy{NAT: true, Allow: mustList(t, outsideAddr+":443", "example.test")}))
	isolated := guest(t, n, host, vmAttachment(idIsolated, "52:54:00:00:01:04", "10.99.0.14", Policy{Isolate: true}))
	// An open list: everything but outsideB, which it still allows on
	// :443 (E2B's denyOut with an allowOut exception).
	openVM := guest(t, n, host, vmAttachment(idOpen, "52:54:00:00:01:05", "10.99.0.15", Policy{NAT: true, Allow: mustList(t, "!"+outsideB, outsideB+":443")}))
	for _, g := range []netns.NsHandle{natVM, isolated, neighbourNS(t)} {
		serve(t, g, "0.0.0.0:7000")
	}

	// A published port, as Docker makes one: a host address's port
	// DNAT'd to a server beyond the host.
	dnat(t, hostOther, 9090, outsideAddr, 80)

	// The services answer where nothing stands in the way.
	for _, a := range []string{"10.99.0.1:8080", hostOther + ":8080"} {
		if !reach(t, host, "tcp", a) {
			t.Fatalf("the host's own %s does not answer the host", a)
		}
	}
	for _, a := range []string{outsideAddr + ":80", outsideB + ":80", metadata + ":80", deniedAddr + ":80"} {
		if !reach(t, outside, "tcp", a) {
			t.Fatalf("the outside's %s does not answer the outside", a)
		}
	}

	type check struct {
		from      netns.NsHandle
		who       string
		network   string
		addr      string
		reachable bool
	}
	run := func(step string, checks []check) {
		t.Helper()
		var wg sync.WaitGroup
		for _, c := range checks {
			wg.Go(func() {
				got := reach(t, c.from, c.network, c.addr)
				// What must answer may take its time on a loaded host
				// (neighbour discovery, a first SYN lost): tried again
				// for up to 10 s. What must not answer had its chance.
				for deadline := time.Now().Add(10 * time.Second); c.reachable && !got && time.Now().Before(deadline); {
					got = reach(t, c.from, c.network, c.addr)
				}
				if got != c.reachable {
					t.Errorf("%s: %s reaches %s %s = %v; want %v", step, c.who, c.network, c.addr, got, c.reachable)
				}
			})
		}
		wg.Wait()
	}
	hostSide := func(g netns.NsHandle, who string) []check {
		return []check{
			{g, who, "udp", "10.99.0.1:53", true}, // the daemon's DNS, only
			{g, who, "tcp", "10.99.0.1:8080", false},
			{g, who, "udp", "10.99.0.1:5353", false},
			{g, who, "tcp", hostOther + ":8080", false},
			{g, who, "udp", hostOther + ":53", false},
			{g, who, "tcp", "198.51.100.1:8080", false}, // the host's address on its uplink
			{g, who, "udp", "10.99.0.255:53", false},    // the bridge's broadcast
		}
	}
	var checks []check
	for _, g := range []struct {
		ns  netns.NsHandle
		who string
	}{{sandbox, "the sandbox"}, {natVM, "the NAT VM"}, {listVM, "the allow-listed VM"}, {isolated, "the isolated VM"}, {openVM, "the open-listed VM"}} {
		checks = append(checks, hostSide(g.ns, g.who)...)
		checks = append(checks, check{g.ns, g.who, "tcp", metadata + ":80", false}, check{g.ns, g.who, "tcp", deniedAddr + ":80", false},
			check{g.ns, g.who, "tcp", hostOther + ":9090", false})
	}
	checks = append(checks,
		check{sandbox, "the sandbox", "tcp", outsideAddr + ":80", false},
		check{sandbox, "the sandbox", "udp", outsideAddr + ":53", false},
		check{natVM, "the NAT VM", "tcp", outsideAddr + ":80", true},
		check{natVM, "the NAT VM", "tcp", outsideB + ":443", true},
		check{listVM, "the allow-listed VM", "tcp", outsideAddr + ":443", true},
		check{listVM, "the allow-listed VM", "tcp", outsideAddr + ":80", false},
		check{listVM, "the allow-listed VM", "tcp", outsideB + ":80", false},
		check{openVM, "the open-listed VM", "tcp", outsideAddr + ":80", true},
		check{openVM, "the open-listed VM", "tcp", outsideB + ":80", false},
		check{openVM, "the open-listed VM", "tcp", outsideB + ":443", true},
		// VM to VM: open unless one is isolated, both ways.
		check{sandbox, "the sandbox", "tcp", "10.99.0.12:7000", true},
		check{sandbox, "the sandbox", "tcp", "10.99.0.14:7000", false},
		check{isolated, "the isolated VM", "tcp", "10.99.0.12:7000", false},
		// The host still routes nothing between its other interfaces.
		check{outside, "the outside", "tcp", neighbour + ":7000", false},
	)
	run("contained", checks)

	// IPv6 leaves no tap: the bridge's link-local address answers a
	// guest-like namespace on a plain bridge port, not a VM.
	ll := "[" + bridgeLinkLocal(t, "bgtest0") + "%eth0]:9999"
	plain := plainPort(t, host, "bgtest0")
	eventually(t, "the bridge answers a plain port over IPv6 at "+ll, func() bool { return reach(t, plain, "udp6", ll) })
	for _, g := range []netns.NsHandle{sandbox, natVM} {
		if reach(t, g, "udp6", ll) {
			t.Errorf("a VM reached the host over IPv6 at %s", ll)
		}
	}

	// Names the list allows resolved to outsideB: reachable on their
	// ports while their TTL lasts; a denied address stays denied.
	if err := n.AllowResolved(idList, []netip.Addr{netip.MustParseAddr(outsideB)}, []uint16{80}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := n.AllowResolved(idList, []netip.Addr{netip.MustParseAddr(deniedAddr), netip.MustParseAddr(metadata)}, nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	run("resolved", []check{
		{listVM, "the allow-listed VM", "tcp", outsideB + ":80", true},
		{listVM, "the allow-listed VM", "tcp", outsideB + ":443", false},
		{listVM, "the allow-listed VM", "tcp", deniedAddr + ":80", false},
		{listVM, "the allow-listed VM", "tcp", metadata + ":80", false},
	})
	// A short TTL: the kernel drops the address when it passes.
	if err := n.AllowResolved(idList, []netip.Addr{netip.MustParseAddr(outsideAddr)}, nil, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	anyPort, _ := n.vmSets(idList)
	inSet := func() bool {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		elems, err := c.GetSetElements(anyPort)
		if err != nil {
			t.Fatal(err)
		}
		want := netip.MustParseAddr(outsideAddr).As4()
		return slices.ContainsFunc(elems, func(e nftables.SetElement) bool { return string(e.Key) == string(want[:]) })
	}
	if !inSet() {
		t.Fatal("a resolved address is not in the VM's set")
	}
	eventually(t, "a resolved address expires with its TTL", func() bool { return !inSet() && !reach(t, listVM, "tcp", outsideAddr+":80") })

	// A policy change takes effect at once, connections included.
	conn := dialIn(t, natVM, outsideAddr+":443")
	if !echo(conn) {
		t.Fatal("an open connection of the NAT VM does not echo")
	}
	if err := n.SetPolicy(vmAttachment(idNAT, "52:54:00:00:01:02", "10.99.0.12", Policy{})); err != nil {
		t.Fatal(err)
	}
	if err := n.SetPolicy(vmAttachment(idSandbox, "52:54:00:00:01:01", "10.99.0.11", Policy{NAT: true})); err != nil {
		t.Fatal(err)
	}
	if echo(conn) {
		t.Error("a connection the new policy forbids still echoes")
	}
	conn.Close()
	run("changed", []check{
		{natVM, "the former NAT VM", "tcp", outsideAddr + ":80", false},
		{sandbox, "the former sandbox", "tcp", outsideAddr + ":80", true},
		{sandbox, "the former sandbox", "tcp", metadata + ":80", false},
		{listVM, "the allow-listed VM", "tcp", outsideB + ":80", true},
	})

	// The log says who tried what, and what the firewall did.
	want := []Attempt{
		{VM: idNAT, Allowed: true, Proto: "tcp", Dst: netip.MustParseAddr(outsideAddr), Port: 80},
		{VM: idNAT, Proto: "tcp", Dst: netip.MustParseAddr(metadata), Port: 80},
		{VM: idList, Proto: "tcp", Dst: netip.MustParseAddr(outsideB), Port: 443},
		{VM: idOpen, Proto: "tcp", Dst: netip.MustParseAddr(outsideB), Port: 80},
		{VM: idOpen, Allowed: true, Proto: "tcp", Dst: netip.MustParseAddr(outsideB), Port: 443},
		{VM: idSandbox, ToHost: true, Proto: "tcp", Dst: netip.MustParseAddr("10.99.0.1"), Port: 8080},
		{VM: idSandbox, ToHost: true, Proto: "tcp", Dst: netip.MustParseAddr(hostOther), Port: 8080},
		{VM: idSandbox, Proto: "udp", Dst: netip.MustParseAddr(outsideAddr), Port: 53},
	}
	eventually(t, "the log shows every attempt", func() bool {
		logMu.Lock()
		defer logMu.Unlock()
		for _, w := range want {
			if !slices.ContainsFunc(seen, func(a Attempt) bool { a.Time = time.Time{}; return a == w }) {
				return false
			}
		}
		return true
	})
}

// dnat forwards a port of a host address to dst:dport, in a table of
// its own, at the usual NAT priority.
func dnat(t *testing.T, addr string, port uint16, dst string, toPort uint16) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Name: "published", Family: nftables.TableFamilyIPv4})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "prerouting", Table: tbl, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
	to := netip.MustParseAddr(dst).As4()
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: join(daddr(netip.MustParsePrefix(addr+"/32")), l4proto(unix.IPPROTO_TCP), dport(port),
		&expr.Immediate{Register: 1, Data: to[:]}, &expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(toPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2})})
	if err := c.Flush(); err != nil {
		t.Fatalf("publishing a port: %v", err)
	}
}

// noDAD skips IPv6 duplicate address detection in namespaces made from
// now on in this one's image, so link-local addresses work at once.
func noDAD(t *testing.T) {
	for _, f := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
		if err := os.WriteFile(f, []byte("0"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// in runs f on a thread in ns; the thread ends with it.
func in(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread is discarded
		if err := netns.Set(ns); err != nil {
			t.Errorf("entering a namespace: %v", err)
			return
		}
		f()
	}()
	<-done
}

// newNS makes a namespace with lo up; the calling thread stays where it is.
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	var h netns.NsHandle
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if h, err = netns.New(); err != nil {
			return
		}
		noDADHere()
		lo, _ := netlink.LinkByName("lo")
		err = netlink.LinkSetUp(lo)
	}()
	<-done
	if err != nil {
		t.Fatalf("making a namespace: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func noDADHere() {
	for _, f := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
		_ = os.WriteFile(f, []byte("0"), 0o644)
	}
}

// vethTo makes a veth pair whose end hostName stays in the calling
// thread's namespace and whose other end is eth0 in ns, with addr.
func vethTo(t *testing.T, ns netns.NsHandle, hostName string, mac net.HardwareAddr, addr string, gw string) {
	t.Helper()
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: "vpeer"}); err != nil {
		t.Fatalf("veth %s: %v", hostName, err)
	}
	peer, err := netlink.LinkByName("vpeer")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(peer, int(ns)); err != nil {
		t.Fatal(err)
	}
	in(t, ns, func() {
		l, err := netlink.LinkByName("vpeer")
		if err == nil {
			err = netlink.LinkSetName(l, "eth0")
		}
		if err == nil && mac != nil {
			err = netlink.LinkSetHardwareAddr(l, mac)
		}
		if err == nil && addr != "" {
			a, _ := netlink.ParseAddr(addr)
			err = netlink.AddrAdd(l, a)
		}
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err == nil && gw != "" {
			err = netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw)})
		}
		if err != nil {
			t.Errorf("setting up eth0 in a namespace: %v", err)
		}
	})
}

// world makes the host's services and the outside; it returns the
// outside's namespace.
func world(t *testing.T) netns.NsHandle {
	t.Helper()
	lo, _ := netlink.LinkByName("lo")
	a, _ := netlink.ParseAddr(hostOther + "/32")
	if err := netlink.AddrAdd(lo, a); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	serve(t, netns.None(), "0.0.0.0:8080")
	echoUDP(t, "0.0.0.0:53")
	echoUDP(t, "0.0.0.0:5353")
	echoUDP(t, "[::]:9999")

	out := newNS(t)
	vethTo(t, out, "up0", nil, outsideAddr+"/24", "")
	up0, _ := netlink.LinkByName("up0")
	ua, _ := netlink.ParseAddr("198.51.100.1/24")
	if err := netlink.AddrAdd(up0, ua); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(up0); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"203.0.113.0/24", metadata + "/32"} {
		_, ipnet, _ := net.ParseCIDR(dst)
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: up0.Attrs().Index, Dst: ipnet, Gw: net.ParseIP(outsideAddr)}); err != nil {
			t.Fatal(err)
		}
	}
	in(t, out, func() {
		lo, _ := netlink.LinkByName("lo")
		for _, extra := range []string{outsideB, deniedAddr, metadata} {
			a, _ := netlink.ParseAddr(extra + "/32")
			if err := netlink.AddrAdd(lo, a); err != nil {
				t.Errorf("%v", err)
			}
		}
		eth0, _ := netlink.LinkByName("eth0")
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("198.51.100.1")}); err != nil {
			t.Errorf("%v", err)
		}
	})
	for _, p := range []string{"0.0.0.0:80", "0.0.0.0:443"} {
		serve(t, out, p)
	}
	return out
}

// neighbourNS is a namespace on another host interface (up1), which
// the host must not route to from the outside.
func neighbourNS(t *testing.T) netns.NsHandle {
	nb := newNS(t)
	vethTo(t, nb, "up1", nil, neighbour+"/24", "192.168.77.1")
	up1, _ := netlink.LinkByName("up1")
	a, _ := netlink.ParseAddr("192.168.77.1/24")
	if err := netlink.AddrAdd(up1, a); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(up1); err != nil {
		t.Fatal(err)
	}
	return nb
}

// guest attaches a VM and stands a namespace in for it: its tap becomes
// a veth of the same name on the bridge, whose other end has the VM's
// MAC and address.
func guest(t *testing.T, n *Network, host netns.NsHandle, a Attachment) netns.NsHandle {
	t.Helper()
	tap, err := n.Attach(a)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := netlink.LinkByName(tap)
	if err := netlink.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	g := newNS(t)
	vethTo(t, g, tap, a.MAC, a.Addr.String()+"/24", "10.99.0.1")
	br, _ := netlink.LinkByName("bgtest0")
	hl, _ := netlink.LinkByName(tap)
	if err := netlink.LinkSetMaster(hl, br); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		t.Fatal(err)
	}
	return g
}

// plainPort is a namespace on a bridge port no VM owns.
func plainPort(t *testing.T, host netns.NsHandle, bridge string) netns.NsHandle {
	g := newNS(t)
	vethTo(t, g, "plain0", nil, "", "")
	br, _ := netlink.LinkByName(bridge)
	hl, _ := netlink.LinkByName("plain0")
	if err := netlink.LinkSetMaster(hl, br); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		t.Fatal(err)
	}
	return g
}

func bridgeLinkLocal(t *testing.T, bridge string) string {
	br, _ := netlink.LinkByName(bridge)
	var ll string
	eventually(t, "the bridge has a link-local address", func() bool {
		addrs, _ := netlink.AddrList(br, unix.AF_INET6)
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				ll = a.IP.String()
				return true
			}
		}
		return false
	})
	return ll
}

// serve answers TCP on addr in ns: a greeting line, then each line back.
func serve(t *testing.T, ns netns.NsHandle, addr string) {
	t.Helper()
	var ln net.Listener
	listen := func() {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			t.Errorf("listening on %s: %v", addr, err)
		}
	}
	if ns == netns.None() {
		listen()
	} else {
		in(t, ns, listen)
	}
	if ln == nil {
		t.FailNow()
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "hello\n")
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s\n", sc.Text())
				}
			}()
		}
	}()
}

// echoUDP sends every datagram on addr (in the calling thread's
// namespace) back.
func echoUDP(t *testing.T, addr string) {
	t.Helper()
	pc, err := net.ListenPacket(map[bool]string{true: "udp6", false: "udp4"}[addr[0] == '['], addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// reach says whether addr answers from ns: a TCP greeting, or a UDP echo.
func reach(t *testing.T, ns netns.NsHandle, network, addr string) bool {
	ok := false
	in(t, ns, func() {
		// A zone by index: the net package caches names to indexes
		// process-wide, and every namespace has its own eth0.
		if eth0, err := netlink.LinkByName("eth0"); err == nil {
			addr = strings.Replace(addr, "%eth0", "%"+strconv.Itoa(eth0.Attrs().Index), 1)
		}
		c, err := net.DialTimeout(network, addr, time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if network != "tcp" {
			if _, err := c.Write([]byte("ping")); err != nil {
				return
			}
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		ok = err == nil && n > 0
	})
	return ok
}

func dialIn(t *testing.T, ns netns.NsHandle, addr string) net.Conn {
	var c net.Conn
	var err error
	in(t, ns, func() { c, err = net.DialTimeout("tcp", addr, 2*time.Second) })
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	buf := make([]byte, 6)
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("greeting of %s: %v", addr, err)
	}
	return c
}

// echo says whether a line written on c comes back within a second.
func echo(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return false
	}
	buf := make([]byte, 5)
	n, err := c.Read(buf)
	return err == nil && string(buf[:n]) == "ping\n"
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
