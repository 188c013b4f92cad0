// Package networld builds the network the smoke suite and the network
// benchmark put a daemon in: beside a namespace of the caller's (the
// "host"), a second one standing in for the internet, joined by a veth
// pair, with web servers on documentation addresses, a fake cloud
// metadata service on 169.254.169.254 and a small DNS server. Nothing
// it makes reaches beyond the two namespaces.
package networld

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/dns/dnsmessage"
)

// The outside's addresses.
const (
	Uplink   = "198.51.100.1" // the host's end of the veth (TEST-NET-2)
	Web      = "198.51.100.2" // the outside's end: web servers, its DNS server
	Other    = "203.0.113.10" // a second outside address (TEST-NET-3)
	Metadata = "169.254.169.254"
)

// InNS runs f on a thread inside the named namespace, then moves the
// thread back. Sockets f opens stay in that namespace.
func InNS(ns string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("opening network namespace %s: %w", ns, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return err
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // a thread stuck in the namespace must not run other code
		}
	}()
	return f()
}

// NewNS makes a named namespace with lo up; its name starts with prefix.
func NewNS(prefix string) (string, error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return "", err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name) // and moves the thread into it
	if err != nil {
		return "", fmt.Errorf("making network namespace %s: %w", name, err)
	}
	h.Close()
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if serr := netns.Set(orig); serr != nil {
		panic(serr)
	}
	if err != nil {
		_ = netns.DeleteNamed(name)
		return "", err
	}
	return name, nil
}

// Listen listens on addr inside the namespace ns.
func Listen(ns, network, addr string) (ln net.Listener, err error) {
	err = InNS(ns, func() error {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// Dial connects from inside the namespace ns.
func Dial(ns, network, addr string) (c net.Conn, err error) {
	err = InNS(ns, func() error {
		c, err = net.DialTimeout(network, addr, 10*time.Second)
		return err
	})
	return c, err
}

// Outside is the stand-in internet beside a host namespace.
type Outside struct {
	NS   string
	host string

	mu      sync.Mutex
	closers []func()
}

// NewOutside joins a new namespace to host by a veth pair: the host
// gets Uplink/24 and its default route through the outside, which
// holds Web (on the veth), Other and Metadata (on its lo).
func NewOutside(host string) (*Outside, error) {
	ns, err := NewNS("bo-")
	if err != nil {
		return nil, err
	}
	o := &Outside{NS: ns, host: host}
	o.closers = append(o.closers, func() { _ = netns.DeleteNamed(ns) })
	err = InNS(host, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "outside"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("making a veth pair: %w", err)
		}
		if err := addrUp(veth, Uplink+"/24"); err != nil {
			return err
		}
		peer, err := netlink.LinkByName("outside")
		if err != nil {
			return err
		}
		h, err := netns.GetFromName(ns)
		if err != nil {
			return err
		}
		defer h.Close()
		if err := netlink.LinkSetNsFd(peer, int(h)); err != nil {
			return fmt.Errorf("moving the veth peer: %w", err)
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: veth.Attrs().Index, Gw: net.ParseIP(Web)})
	})
	if err == nil {
		err = InNS(ns, func() error {
			l, err := netlink.LinkByName("outside")
			if err != nil {
				return err
			}
			if err := addrUp(l, Web+"/24"); err != nil {
				return err
			}
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			for _, a := range []string{Other, Metadata} {
				if err := addrUp(lo, a+"/32"); err != nil {
					return err
				}
			}
			return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(Uplink)})
		})
	}
	if err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

func addrUp(l netlink.Link, cidr string) error {
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("adding %s to %s: %w", cidr, l.Attrs().Name, err)
	}
	return netlink.LinkSetUp(l)
}

func (o *Outside) onClose(f func()) {
	o.mu.Lock()
	o.closers = append(o.closers, f)
	o.mu.Unlock()
}

// Close stops the servers and removes the namespace (the veth goes
// with it).
func (o *Outside) Close() {
	o.mu.Lock()
	fs := o.closers
	o.closers = nil
	o.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// Serve answers HTTP on addr in the namespace ns (the outside's, or the
// host's) until Close.
func (o *Outside) Serve(ns, addr string, h http.Handler) error {
	ln, err := Listen(ns, "tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	o.onClose(func() { srv.Close() })
	return nil
}

// Hello answers "hello from NAME to REMOTE-ADDR".
func Hello(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s to %s\n", name, r.RemoteAddr)
	})
}

// DNS serves names on Web:53 (UDP) in the outside: an A record, TTL 60,
// for each name (lower case, no trailing dot); NXDOMAIN for others.
func (o *Outside) DNS(names map[string]netip.Addr) error {
	var pc net.PacketConn
	err := InNS(o.NS, func() (err error) {
		pc, err = net.ListenPacket("udp", Web+":53")
		return err
	})
	if err != nil {
		return err
	}
	o.onClose(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := answer(buf[:n], names); out != nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	}()
	return nil
}

func answer(q []byte, names map[string]netip.Addr) []byte {
	var m dnsmessage.Message
	if m.Unpack(q) != nil || len(m.Questions) != 1 {
		return nil
	}
	m.Response, m.RecursionAvailable = true, true
	q0 := m.Questions[0]
	a, ok := names[strings.TrimSuffix(strings.ToLower(q0.Name.String()), ".")]
	switch {
	case !ok:
		m.RCode = dnsmessage.RCodeNameError
	case q0.Type == dnsmessage.TypeA:
		m.Answers = []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: q0.Name, Type: dnsmessage.TypeA,
			Class: dnsmessage.ClassINET, TTL: 60}, Body: &dnsmessage.AResource{A: a.As4()}}}
	}
	out, _ := m.Pack()
	return out
}

// UseResolver makes server the resolver of programs that `ip netns exec`
// runs in ns (it bind-mounts /etc/netns/NS/resolv.conf), until Close.
func (o *Outside) UseResolver(ns, server string) error {
	dir := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	o.onClose(func() { _ = os.RemoveAll(dir) })
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+server+"\n"), 0o644)
}

// Lookup asks the DNS server at server, from inside ns, for name's IPv4
// addresses.
func Lookup(ctx context.Context, ns, server, name string) ([]string, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return Dial(ns, "udp", net.JoinHostPort(server, "53"))
	}}
	addrs, err := r.LookupNetIP(ctx, "ip4", name)
	var out []string
	for _, a := range addrs {
		out = append(out, a.String())
	}
	if err == nil && len(out) == 0 {
		err = errors.New("no addresses")
	}
	return out, err
}
