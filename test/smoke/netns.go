package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Netns makes the scenario's network namespace (runScenario does, first)
// and runs every later command in it, the daemon included: its bridge,
// taps, nftables rules and QEMU's user-mode sockets live and die there,
// and the host's network is not touched. The namespace goes with the
// scenario.
func (t *T) Netns() string {
	if t.netns != "" {
		return t.netns
	}
	t.netns = t.newNetns()
	t.inNetns(t.netns, func() {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			t.Fatalf("bringing up lo in %s: %v", t.netns, err)
		}
	})
	return t.netns
}

func (t *T) newNetns() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "bs-" + hex.EncodeToString(b)
	err := onThreadIn(func() error {
		ns, err := netns.NewNamed(name) // and moves the thread into it
		if err == nil {
			ns.Close()
		}
		return err
	}, func() {})
	if err != nil {
		t.Fatalf("making network namespace %s: %v", name, err)
	}
	t.defer_(func() { _ = netns.DeleteNamed(name) })
	return name
}

// onThreadIn runs f on a locked thread that enter moved into a network
// namespace, then moves the thread back. Sockets f opens stay in that
// namespace, whichever thread uses them later.
func onThreadIn(enter func() error, f func()) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := enter(); err != nil {
		return err
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // a thread stuck in the namespace must not run other code
		}
	}()
	f()
	return nil
}

// enterNamed moves the calling thread into the namespace named ns.
func enterNamed(ns string) func() error {
	return func() error {
		h, err := netns.GetFromName(ns)
		if err != nil {
			return fmt.Errorf("opening network namespace %s: %w", ns, err)
		}
		defer h.Close()
		return netns.Set(h)
	}
}

// inNetns runs f inside the namespace ns.
func (t *T) inNetns(ns string, f func()) {
	if err := onThreadIn(enterNamed(ns), f); err != nil {
		t.Fatalf("entering network namespace %s: %v", ns, err)
	}
}

// ListenInNetns listens on addr inside the scenario's namespace, where
// its daemon and VMs are.
func (t *T) ListenInNetns(addr string) net.Listener {
	var ln net.Listener
	t.inNetns(t.netns, func() {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			t.Fatalf("listening on %s in %s: %v", addr, t.netns, err)
		}
	})
	return ln
}

// forwardIntoNetns makes addr (a host:port on the host's loopback, the
// registry) reachable at the same address inside the scenario's
// namespace.
func (t *T) forwardIntoNetns(addr string) {
	ln := t.ListenInNetns(addr)
	t.defer_(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", addr) // from a thread in the host's namespace
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
}

// Outside gives the scenario's namespace a neighbour, in a second
// namespace joined by a veth pair: a stand-in for the internet at
// 198.51.100.2 (TEST-NET-2), whose web server answers "hello from
// outside". It returns the server's URL.
func (t *T) Outside() string {
	out := t.newNetns()
	var peer netlink.Link
	t.inNetns(t.netns, func() {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "outside"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Fatalf("making a veth pair: %v", err)
		}
		addr, _ := netlink.ParseAddr("198.51.100.1/24")
		if err := netlink.AddrAdd(veth, addr); err != nil {
			t.Fatalf("%v", err)
		}
		if err := netlink.LinkSetUp(veth); err != nil {
			t.Fatalf("%v", err)
		}
		var err error
		if peer, err = netlink.LinkByName("outside"); err != nil {
			t.Fatalf("%v", err)
		}
		h, err := netns.GetFromName(out)
		if err != nil {
			t.Fatalf("%v", err)
		}
		defer h.Close()
		if err := netlink.LinkSetNsFd(peer, int(h)); err != nil {
			t.Fatalf("moving the veth peer: %v", err)
		}
	})
	var ln net.Listener
	t.inNetns(out, func() {
		for _, name := range []string{"lo", "outside"} {
			l, err := netlink.LinkByName(name)
			if err == nil {
				err = netlink.LinkSetUp(l)
			}
			if err != nil {
				t.Fatalf("bringing up %s: %v", name, err)
			}
			if name == "outside" {
				addr, _ := netlink.ParseAddr("198.51.100.2/24")
				if err := netlink.AddrAdd(l, addr); err != nil {
					t.Fatalf("%v", err)
				}
			}
		}
		var err error
		if ln, err = net.Listen("tcp", "198.51.100.2:8080"); err != nil {
			t.Fatalf("%v", err)
		}
	})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from outside to %s\n", r.RemoteAddr)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.defer_(func() { srv.Close() })
	return "http://198.51.100.2:8080/"
}

// Taps lists the tap devices in the scenario's namespace.
func (t *T) Taps() []string {
	var out []string
	t.inNetns(t.netns, func() {
		links, err := netlink.LinkList()
		if err != nil {
			t.Fatalf("listing links: %v", err)
		}
		for _, l := range links {
			if _, ok := l.(*netlink.Tuntap); ok {
				out = append(out, l.Attrs().Name)
			}
		}
	})
	slices.Sort(out)
	return out
}

// RuleComments lists the comments of the rules in every chain of the ip
// table in the scenario's namespace, sorted; none when it has no table.
func (t *T) RuleComments(table string) []string {
	return t.RuleCommentsOf(nftables.TableFamilyIPv4, table)
}

// RuleCommentsOf is RuleComments for a table of another family.
func (t *T) RuleCommentsOf(family nftables.TableFamily, table string) []string {
	var out []string
	t.inNetns(t.netns, func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatalf("%v", err)
		}
		chains, err := c.ListChainsOfTableFamily(family)
		if err != nil {
			t.Fatalf("listing nftables chains: %v", err)
		}
		for _, ch := range chains {
			if ch.Table.Name != table {
				continue
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				t.Fatalf("listing rules of %s: %v", ch.Name, err)
			}
			for _, r := range rules {
				s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
				out = append(out, ch.Name+": "+s)
			}
		}
	})
	slices.Sort(out)
	return out
}

// AddStray puts in the namespace what a dead VM of ID id could have left:
// its tap, and an nftables rule of its own in the table's nat-vms chain.
func (t *T) AddStray(table, id string) {
	t.inNetns(t.netns, func() {
		tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "bg-" + id[:12]}, Mode: netlink.TUNTAP_MODE_TAP}
		if err := netlink.LinkAdd(tap); err != nil {
			t.Fatalf("adding a stray tap: %v", err)
		}
		c, err := nftables.New()
		if err != nil {
			t.Fatalf("%v", err)
		}
		tbl := &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}
		c.AddRule(&nftables.Rule{Table: tbl, Chain: &nftables.Chain{Name: "nat-vms", Table: tbl},
			UserData: userdata.AppendString(nil, userdata.TypeComment, "banger vm="+id)})
		if err := c.Flush(); err != nil {
			t.Fatalf("adding a stray rule: %v", err)
		}
	})
}

// Lookup asks the DNS server at server (inside the scenario's namespace)
// for name's IPv4 addresses, as a host resolver routed to it would.
func (t *T) Lookup(server, name string) ([]string, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dialIn(t.netns, "udp", netip.AddrPortFrom(netip.MustParseAddr(server), 53).String())
	}}
	ctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, "ip4", name)
	var out []string
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out, err
}

// dialIn connects from inside the namespace ns; unlike inNetns it may run
// on any goroutine, and fails by returning the error.
func dialIn(ns, network, addr string) (c net.Conn, err error) {
	if err := onThreadIn(enterNamed(ns), func() { c, err = net.DialTimeout(network, addr, 10*time.Second) }); err != nil {
		return nil, err
	}
	return c, err
}

// DialInNetns opens a TCP connection from the scenario's namespace, as
// the host does to a VM, and returns the first line it reads.
func (t *T) DialInNetns(addr string) (string, error) {
	c, err := dialIn(t.netns, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}
