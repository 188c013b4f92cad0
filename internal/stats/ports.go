package stats

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/peer"
	"github.com/bangerdev/banger/internal/termsafe"
)

// Ports lists the listening ports of the VM req names, each TCP port
// probed for HTTPS and HTTP; with req.Forward, each TCP port also gets a
// listener on the host's loopback that carries connections to it through
// the agent.
func (s *Service) Ports(ctx context.Context, req api.VMPortsParams) (api.VMPortsResult, error) {
	name, forward := req.Name, req.Forward
	t, err := s.cfg.VMs.Target(ctx, name)
	if err != nil {
		return api.VMPortsResult{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	a, err := s.cfg.VMs.Agent(cctx, name)
	if err != nil {
		return api.VMPortsResult{}, s.agentErr(name, err)
	}
	socks, err := a.Ports(cctx)
	if err != nil {
		return api.VMPortsResult{}, s.agentErr(name, err)
	}
	ports := Dedupe(socks)
	if len(ports) > maxPorts {
		s.cfg.Log.Warn("a guest lists more ports than are shown", "vm", name, "ports", len(ports), "shown", maxPorts)
		ports = ports[:maxPorts]
	}
	var wg sync.WaitGroup
	probed := 0
	for i := range ports {
		p := &ports[i]
		if p.Proto != "tcp" {
			p.Scheme = "udp"
			continue
		}
		if probed++; probed > maxProbes {
			p.Scheme = "tcp" // not probed: a guest cannot make the host dial without end
			continue
		}
		if forward {
			if err := s.forward(ctx, t, p.Port, guestAddr(*p), "127.0.0.1:"+strconv.Itoa(p.Port), []uint32{s.requester(ctx)}); err != nil {
				return api.VMPortsResult{}, err
			}
		}
		p.Forward = s.forwardAddr(t.ID, p.Port)
		direct := directAddr(t, *p)
		wg.Go(func() {
			dial := func(ctx context.Context) (net.Conn, error) {
				if direct.IsValid() {
					var d net.Dialer
					return d.DialContext(ctx, "tcp", direct.String())
				}
				return a.Dial(ctx, guestAddr(*p))
			}
			p.Scheme = Probe(ctx, dial)
			switch {
			case direct.IsValid() && p.Scheme != "tcp":
				p.URL = p.Scheme + "://" + direct.String()
			case p.Forward != "" && p.Scheme != "tcp":
				p.URL = p.Scheme + "://" + p.Forward
			case direct.IsValid():
				p.URL = "tcp://" + direct.String()
			case p.Forward != "":
				p.URL = "tcp://" + p.Forward
			}
		})
	}
	wg.Wait()
	return api.VMPortsResult{Name: name, Ports: ports}, nil
}

// Bounds on what one ports call does for a guest's list: ports shown,
// TCP ports probed (and forwarded), addresses kept per port.
const (
	maxPorts     = 1024
	maxProbes    = 64
	maxAddresses = 16
	maxProcess   = 64 // a process name's bytes (Linux's comm is 16)
)

// valid says whether a guest's socket is one the host can describe: a
// known protocol, a port number, an IP address.
func valid(s proto.Socket) bool {
	switch s.Proto {
	case "tcp", "tcp6", "udp", "udp6":
	default:
		return false
	}
	if s.Port < 1 || s.Port > 65535 || s.PID < 0 {
		return false
	}
	_, err := netip.ParseAddr(s.Addr)
	return err == nil
}

// Dedupe folds a guest's sockets into ports: one per protocol and port
// number, whatever the address families and binds. What the guest
// reports is checked first: sockets that are not valid are left out,
// process names cut and stripped of control characters.
func Dedupe(socks []proto.Socket) []api.VMPort {
	type key struct {
		proto string
		port  int
	}
	byKey := map[key]*api.VMPort{}
	for _, s := range socks {
		if !valid(s) {
			continue
		}
		s.Process = processName(s.Process)
		k := key{strings.TrimSuffix(s.Proto, "6"), s.Port}
		p := byKey[k]
		if p == nil {
			p = &api.VMPort{Proto: k.proto, Port: k.port}
			byKey[k] = p
		}
		addr := s.Addr
		if a, err := netip.ParseAddr(addr); err == nil && a.IsUnspecified() {
			addr = "*"
		}
		if !slices.Contains(p.Addresses, addr) && len(p.Addresses) < maxAddresses {
			p.Addresses = append(p.Addresses, addr)
		}
		if p.Process == "" && s.Process != "" {
			p.Process, p.PID = s.Process, s.PID
		}
	}
	out := make([]api.VMPort, 0, len(byKey))
	for _, p := range byKey {
		if slices.Contains(p.Addresses, "*") {
			p.Addresses = []string{"*"}
		}
		slices.Sort(p.Addresses)
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b api.VMPort) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
	})
	return out
}

// processName is a guest's process name as the host shows it: at most
// maxProcess bytes of printable text.
func processName(s string) string {
	s = strings.Map(func(r rune) rune {
		if termsafe.IsControl(r) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
	if len(s) > maxProcess {
		s = strings.ToValidUTF8(s[:maxProcess], "")
	}
	return s
}

// directAddr is where the host reaches p without the agent: the VM's
// bridge address, when p listens there.
func directAddr(t Target, p api.VMPort) netip.AddrPort {
	if !t.Addr.IsValid() {
		return netip.AddrPort{}
	}
	if slices.Contains(p.Addresses, "*") || slices.Contains(p.Addresses, t.Addr.String()) {
		return netip.AddrPortFrom(t.Addr, uint16(p.Port))
	}
	return netip.AddrPort{}
}

// guestAddr is the address the agent dials inside the guest for p.
func guestAddr(p api.VMPort) string {
	host := "127.0.0.1"
	if !slices.Contains(p.Addresses, "*") && !slices.Contains(p.Addresses, host) && len(p.Addresses) > 0 {
		host = p.Addresses[0]
	}
	return net.JoinHostPort(host, strconv.Itoa(p.Port))
}

// probeTimeout bounds each probe's handshake or first answer.
const probeTimeout = 2 * time.Second

// Probe says what a TCP port speaks: https when a TLS handshake
// completes (any certificate: this is detection, not trust), http when a
// request gets an HTTP status line, else tcp.
func Probe(ctx context.Context, dial func(context.Context) (net.Conn, error)) string {
	try := func(f func(net.Conn) bool) bool {
		ctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		c, err := dial(ctx)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(probeTimeout))
		return f(c)
	}
	if try(func(c net.Conn) bool {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // detection only: nothing is sent over it
		hctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		return tc.HandshakeContext(hctx) == nil
	}) {
		return "https"
	}
	if try(func(c net.Conn) bool {
		if _, err := io.WriteString(c, "HEAD / HTTP/1.0\r\nHost: localhost\r\n\r\n"); err != nil {
			return false
		}
		b := make([]byte, 5)
		_, err := io.ReadFull(c, b)
		return err == nil && bytes.Equal(b, []byte("HTTP/"))
	}) {
		return "http"
	}
	return "tcp"
}

// forward is a loopback listener carrying connections to a guest port,
// for the uids that asked for it (and root): any local user may connect
// to 127.0.0.1, so each connection's owner is looked up in the kernel's
// socket table and any other is closed.
type forward struct {
	ln   net.Listener
	addr string
	uids map[uint32]bool // under Service.mu
}

// requester is the uid a request came from: its caller, or the daemon's
// own user for its own work.
func (s *Service) requester(ctx context.Context) uint32 {
	if c, ok := peer.FromContext(ctx); ok {
		return c.UID
	}
	return s.cfg.Self
}

// admits says whether a connection to f may go on: root's, or one of
// the uids that asked for f. One whose owner cannot be told is closed.
func (s *Service) admits(f *forward, c net.Conn) (uint32, bool, error) {
	local, lok := c.RemoteAddr().(*net.TCPAddr) // the peer's socket: its local end is our remote
	remote, rok := c.LocalAddr().(*net.TCPAddr)
	if !lok || !rok {
		return 0, false, errors.New("not a TCP connection")
	}
	uid, err := peer.TCPOwner(local.AddrPort(), remote.AddrPort())
	if err != nil {
		return 0, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return uid, uid == 0 || f.uids[uid], nil
}

func (s *Service) forwardAddr(id string, port int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.forwards[id][port]; f != nil {
		return f.addr
	}
	return ""
}

// forward opens a loopback listener for a guest port, unless one is
// open, and keeps it: on hostAddr when that is a loopback address, not a
// privileged port (a guest chooses its port numbers; a root daemon must
// not take 22 or 53 of the host's for it) and free, else on any free
// port of 127.0.0.1, said in the log.
func (s *Service) forward(ctx context.Context, t Target, port int, target, hostAddr string, uids []uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(uids) == 0 {
		uids = []uint32{s.cfg.Self}
	}
	if f := s.forwards[t.ID][port]; f != nil {
		added := false
		for _, u := range uids {
			added = added || !f.uids[u]
			f.uids[u] = true
		}
		if added {
			s.saveForward(ctx, t, port, target, f)
		}
		return nil
	}
	var ln net.Listener
	err := errors.New("not a loopback address above 1023")
	if ap, perr := netip.ParseAddrPort(hostAddr); perr == nil && ap.Addr().IsLoopback() && ap.Port() >= 1024 {
		ln, err = net.Listen("tcp", hostAddr)
	}
	if err != nil {
		s.cfg.Log.Info("forwarding a guest port elsewhere", "vm", t.Name, "port", port, "wanted", hostAddr, "why", err)
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return fmt.Errorf("forwarding port %d of vm %s: %w", port, t.Name, err)
		}
	}
	f := &forward{ln: ln, addr: ln.Addr().String(), uids: map[uint32]bool{}}
	for _, u := range uids {
		f.uids[u] = true
	}
	if s.forwards[t.ID] == nil {
		s.forwards[t.ID] = map[int]*forward{}
	}
	s.forwards[t.ID][port] = f
	s.saveForward(ctx, t, port, target, f)
	s.cfg.Log.Info("forwarding a guest port", "vm", t.Name, "port", port, "host", f.addr, "uids", uids)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				if uid, ok, err := s.admits(f, c); !ok {
					s.cfg.Log.Warn("a forward refused a connection", "vm", t.Name, "port", port, "host", f.addr, "uid", uid, "err", err)
					c.Close()
					return
				}
				// The agent is asked per connection: its link may be redialed.
				s.carry(t.Name, c, target)
			}()
		}
	}()
	return nil
}

// saveForward keeps f (under s.mu).
func (s *Service) saveForward(ctx context.Context, t Target, port int, target string, f *forward) {
	if s.cfg.Forwards == nil {
		return
	}
	uids := slices.Sorted(maps.Keys(f.uids))
	if err := s.cfg.Forwards.Save(ctx, Forward{VMID: t.ID, GuestPort: port, GuestAddr: target, HostAddr: f.addr, UIDs: uids}); err != nil {
		s.cfg.Log.Warn("keeping a forward", "vm", t.Name, "port", port, "err", err)
	}
}

// restoreForwards opens again the kept forwards of running VMs, on the
// same host addresses; those of VMs that stopped meanwhile go.
func (s *Service) restoreForwards(ctx context.Context) {
	if s.cfg.Forwards == nil {
		return
	}
	kept, err := s.cfg.Forwards.All(ctx)
	if err != nil {
		s.cfg.Log.Warn("reading kept forwards", "err", err)
		return
	}
	targets, err := s.cfg.VMs.Running(ctx)
	if err != nil {
		return
	}
	suspended, err := s.suspended(ctx)
	if err != nil {
		return
	}
	targets = append(targets, suspended...)
	byID := map[string]Target{}
	for _, t := range targets {
		byID[t.ID] = t
	}
	for _, f := range kept {
		t, ok := byID[f.VMID]
		if !ok {
			_ = s.cfg.Forwards.Drop(ctx, f.VMID)
			continue
		}
		if err := s.forward(ctx, t, f.GuestPort, f.GuestAddr, f.HostAddr, f.UIDs); err != nil {
			s.cfg.Log.Warn("reopening a forward", "vm", t.Name, "port", f.GuestPort, "err", err)
		}
	}
}

// carry joins one forwarded connection to its guest port.
func (s *Service) carry(name string, c net.Conn, target string) {
	defer c.Close()
	end := s.Session(name)
	defer end()
	// A suspended VM is resumed first (Wake).
	ctx, cancel := context.WithTimeout(context.Background(), wakeTimeout)
	a, err := s.cfg.VMs.Wake(ctx, name)
	var g net.Conn
	if err == nil {
		g, err = a.Dial(ctx, target)
	}
	cancel()
	if err != nil {
		s.cfg.Log.Debug("forwarded connection failed", "vm", name, "target", target, "err", err)
		return
	}
	defer g.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(g, c)
		close(done)
	}()
	_, _ = io.Copy(c, g)
	c.Close()
	<-done
}

// closeForwards closes the forwards of the VMs doomed says to; with
// forget, they are no longer kept either (the VM stopped), while at
// shutdown they are, for the next daemon.
func (s *Service) closeForwards(ctx context.Context, doomed func(id string) bool, forget bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, fs := range s.forwards {
		if !doomed(id) {
			continue
		}
		for _, f := range fs {
			f.ln.Close()
		}
		delete(s.forwards, id)
		if forget && s.cfg.Forwards != nil {
			if err := s.cfg.Forwards.Drop(ctx, id); err != nil {
				s.cfg.Log.Warn("dropping kept forwards", "vm", id, "err", err)
			}
		}
	}
}
