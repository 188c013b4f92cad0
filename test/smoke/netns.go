package main

import (
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/bangerdev/banger/test/networld"
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
	name, err := networld.NewNS("bs-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.defer_(func() { _ = netns.DeleteNamed(name) })
	t.netns = name
	return name
}

// inNetns runs f inside the namespace ns.
func (t *T) inNetns(ns string, f func()) {
	if err := networld.InNS(ns, func() error { f(); return nil }); err != nil {
		t.Fatalf("entering network namespace %s: %v", ns, err)
	}
}

// ListenInNetns listens on addr inside the scenario's namespace, where
// its daemon and VMs are.
func (t *T) ListenInNetns(addr string) net.Listener {
	ln, err := networld.Listen(t.netns, "tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, t.netns, err)
	}
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

// World gives the scenario's namespace a neighbour standing in for the
// internet (networld.Outside: the scenario's default route leads there),
// whose web server at 198.51.100.2:8080 answers "hello from outside".
func (t *T) World() *networld.Outside {
	o, err := networld.NewOutside(t.Netns())
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.defer_(o.Close)
	if err := o.Serve(o.NS, networld.Web+":8080", networld.Hello("outside")); err != nil {
		t.Fatalf("%v", err)
	}
	return o
}

// UseResolver makes the outside's DNS server (networld.Outside.DNS) the
// resolver of every later command in the scenario's namespace, and so of
// a daemon started after it.
func (t *T) UseResolver(o *networld.Outside) {
	if err := o.UseResolver(t.Netns(), networld.Web); err != nil {
		t.Fatalf("%v", err)
	}
	t.resolver = true
}

// Outside is World's web server's URL.
func (t *T) Outside() string {
	t.World()
	return "http://" + networld.Web + ":8080/"
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
// its tap, and an nftables rule of its own in the table's egress chain.
func (t *T) AddStray(table, id string) {
	t.inNetns(t.netns, func() {
		tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "bg-" + id[:12]}, Mode: netlink.TUNTAP_MODE_TAP}
		if err := netlink.LinkAdd(tap); err != nil {
			t.Fatalf("adding a stray tap: %v", err)
		}
		// Marked as the daemon marks its taps: its VM's ID, then the
		// bridge's own mark.
		br, err := netlink.LinkByName("banger0")
		if err != nil {
			t.Fatalf("finding the bridge: %v", err)
		}
		if err := netlink.LinkSetAlias(tap, "banger tap "+id+" "+br.Attrs().Alias); err != nil {
			t.Fatalf("marking a stray tap: %v", err)
		}
		c, err := nftables.New()
		if err != nil {
			t.Fatalf("%v", err)
		}
		tbl := &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}
		c.AddRule(&nftables.Rule{Table: tbl, Chain: &nftables.Chain{Name: "egress", Table: tbl},
			UserData: userdata.AppendString(nil, userdata.TypeComment, "banger vm="+id)})
		if err := c.Flush(); err != nil {
			t.Fatalf("adding a stray rule: %v", err)
		}
	})
}

// AddForeignTap makes a tap named as a VM's would be (bg- and 12 hex
// digits) that is not banger's: unmarked, on no bridge.
func (t *T) AddForeignTap(name string) {
	t.inNetns(t.netns, func() {
		if err := netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TAP}); err != nil {
			t.Fatalf("adding a foreign tap: %v", err)
		}
	})
}

// DelLink removes a link from the scenario's namespace.
func (t *T) DelLink(name string) {
	t.inNetns(t.netns, func() {
		l, err := netlink.LinkByName(name)
		if err == nil {
			err = netlink.LinkDel(l)
		}
		if err != nil {
			t.Fatalf("removing %s: %v", name, err)
		}
	})
}

// Lookup asks the DNS server at server (inside the scenario's namespace)
// for name's IPv4 addresses, as a host resolver routed to it would.
func (t *T) Lookup(server, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
	defer cancel()
	return networld.Lookup(ctx, t.netns, server, name)
}

// DialInNetns opens a TCP connection from the scenario's namespace, as
// the host does to a VM, and returns the first line it reads.
func (t *T) DialInNetns(addr string) (string, error) {
	c, err := networld.Dial(t.netns, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}
