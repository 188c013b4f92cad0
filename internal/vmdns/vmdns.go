// Package vmdns is the daemon's DNS server on the bridge: it answers
// NAME.vm with a VM's address, for the guests and for a host whose
// resolver routes the vm zone to it, and passes other names to the host's
// upstream servers, but only for VMs allowed out (a sandboxed VM could
// otherwise talk to the world through DNS queries), and for a VM with an
// allow-list only the names on it: the addresses they resolve to are
// what its firewall then lets it reach (Config.Resolved), for the
// answer's TTL. Every question of a VM is told to Config.Observe.
package vmdns

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/time/rate"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/allowlist"
)

// Zone is the domain VM names live under.
const Zone = "vm."

// TTL of an answer: short, since a VM's address can go with it.
const TTL = 5

// How long an allow-listed VM may reach what a name resolved to: the
// record's TTL, but at least MinAllowTTL (programs connect a moment
// after they resolve, and some cache for tens of seconds) and at most
// MaxAllowTTL.
const (
	MinAllowTTL = time.Minute
	MaxAllowTTL = time.Hour
)

// Source is who asks: the host, or a VM and what it may reach.
type Source struct {
	VM     string // its ID; "" for the host, which may ask anything
	Egress string // api.EgressSandbox, EgressNAT or EgressAllowList
	Allow  allowlist.List
}

// Config wires a Server.
type Config struct {
	// Resolve is the address of the VM named name, if there is one.
	Resolve func(ctx context.Context, name string) (netip.Addr, bool)
	// Source says who src is (nil: everyone is the host).
	Source func(ctx context.Context, src netip.Addr) Source
	// Resolved lets the VM reach what a name on its allow-list resolved
	// to (on ports, all when none) for ttl; the answer reaches the guest
	// only once this returned.
	Resolved func(vm string, addrs []netip.Addr, ports []uint16, ttl time.Duration) error
	// Observe is told every question a VM asks outside the .vm zone.
	Observe func(vm string, e api.EgressEvent)
	// Local says whether a query from src is answered at all: the VMs'
	// network and the host. Nothing goes back to anyone else, so the
	// server is neither an open resolver nor a reflector (nil: all).
	Local    func(src netip.Addr) bool
	Upstream []netip.AddrPort
	// Bind makes the socket Listen serves (nil: net.ListenUDP; an
	// unprivileged daemon asks its root helper for port 53).
	Bind func(addr netip.AddrPort) (*net.UDPConn, error)
	// MaxInFlight bounds the queries answered at once (default 64); a
	// query past it is dropped, and its client asks again.
	MaxInFlight int
	// PerSource and Burst rate-limit each source address (default 50
	// queries a second, bursts of 100): one VM cannot take the server
	// from the others.
	PerSource rate.Limit
	Burst     int
	Log       *slog.Logger
}

// maxSources bounds the rate limiters kept; past it they start over.
const maxSources = 4096

// Server answers DNS queries on the addresses it listens on.
type Server struct {
	cfg Config

	mu    sync.Mutex
	conns map[netip.AddrPort]*net.UDPConn
	wg    sync.WaitGroup

	slots   chan struct{} // one per query being answered
	limMu   sync.Mutex
	limits  map[netip.Addr]*rate.Limiter
	dropped int // queries dropped (rate or slots), for the log

	memMu sync.Mutex
	// remembered: per VM, the names its allow-list let it resolve, for
	// Reallow after its list changes.
	remembered map[string]map[string]answer
}

// answer is what a name resolved to, and until when it may be reached.
type answer struct {
	addrs []netip.Addr
	until time.Time
}

// maxRemembered bounds the names remembered per VM.
const maxRemembered = 512

// New makes a server that listens nowhere yet.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64
	}
	if cfg.PerSource <= 0 {
		cfg.PerSource = 50
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 100
	}
	return &Server{cfg: cfg, conns: map[netip.AddrPort]*net.UDPConn{}, slots: make(chan struct{}, cfg.MaxInFlight),
		limits: map[netip.Addr]*rate.Limiter{}, remembered: map[string]map[string]answer{}}
}

// admit says whether a query from src is taken: from a local source,
// within its rate, with a slot free (then the caller frees it).
func (s *Server) admit(src netip.Addr) bool {
	if s.cfg.Local != nil && !s.cfg.Local(src) {
		return false
	}
	s.limMu.Lock()
	lim := s.limits[src]
	if lim == nil {
		if len(s.limits) >= maxSources {
			clear(s.limits)
		}
		lim = rate.NewLimiter(s.cfg.PerSource, s.cfg.Burst)
		s.limits[src] = lim
	}
	ok := lim.Allow()
	if ok {
		select {
		case s.slots <- struct{}{}:
		default:
			ok = false
		}
	}
	if !ok {
		if s.dropped++; s.dropped%1000 == 1 {
			s.cfg.Log.Warn("dns queries dropped: over a source's rate or the server's slots", "src", src, "dropped", s.dropped)
		}
	}
	s.limMu.Unlock()
	return ok
}

// Listen serves UDP on addr; listening again on an address is a no-op.
func (s *Server) Listen(addr netip.AddrPort) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		return errors.New("listening for DNS: the server is closed")
	}
	if _, ok := s.conns[addr]; ok {
		return nil
	}
	bind := s.cfg.Bind
	if bind == nil {
		bind = func(addr netip.AddrPort) (*net.UDPConn, error) {
			return net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		}
	}
	c, err := bind(addr)
	if err != nil {
		return fmt.Errorf("listening for DNS on %s: %w", addr, err)
	}
	s.conns[addr] = c
	s.wg.Go(func() { s.serve(c) })
	s.cfg.Log.Info("dns listening", "addr", addr, "zone", Zone)
	return nil
}

// Close stops serving and waits for the queries in flight.
func (s *Server) Close() error {
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) serve(c *net.UDPConn) {
	buf := make([]byte, 4096)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.cfg.Log.Warn("dns read", "err", err)
			}
			return
		}
		src := from.Addr().Unmap()
		if !s.admit(src) {
			continue
		}
		q := bytes.Clone(buf[:n])
		s.wg.Go(func() {
			defer func() { <-s.slots }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if reply := s.Answer(ctx, src, q); reply != nil {
				_, _ = c.WriteToUDPAddrPort(reply, from)
			}
		})
	}
}

// Answer is the reply to the query q from src, or nil when q is too
// broken to answer.
func (s *Server) Answer(ctx context.Context, src netip.Addr, q []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 || h.OpCode != 0 {
		return reply(h, nil, dnsmessage.RCodeFormatError, nil, false)
	}
	question := qs[0]
	if hasControl(question.Name) {
		// Control bytes would reach the egress log and every terminal
		// that shows it; no real name holds one.
		return reply(h, &question, dnsmessage.RCodeRefused, nil, false)
	}
	name := strings.ToLower(question.Name.String())
	if name == Zone || strings.HasSuffix(name, "."+Zone) {
		return s.answerZone(ctx, h, question, strings.TrimSuffix(name, "."+Zone))
	}
	who := Source{Egress: api.EgressNAT}
	if s.cfg.Source != nil {
		who = s.cfg.Source(ctx, src)
	}
	ev := api.EgressEvent{Time: time.Now(), Kind: api.EgressDNS, Name: strings.TrimSuffix(name, "."), Type: typeName(question.Type),
		Verdict: api.EgressDenied}
	observe := func() {
		if who.VM != "" && s.cfg.Observe != nil {
			s.cfg.Observe(who.VM, ev)
		}
	}
	var ports []uint16
	grant := false // the answer opens the firewall to its addresses
	switch who.Egress {
	case api.EgressNAT:
	case api.EgressAllowList:
		var anyPort, ok bool
		ports, anyPort, ok = who.Allow.Ports(name)
		switch {
		case !ok && !who.Allow.Open():
			ev.Reason = api.ReasonAllowList
			observe()
			return reply(h, &question, dnsmessage.RCodeNameError, nil, false)
		case !ok:
			// An open list reaches every address its deny rules do not
			// name, and a name it does not name is no exception to them.
		case anyPort:
			ports, grant = nil, true
		default:
			grant = true
		}
	default:
		ev.Reason = api.ReasonSandbox
		observe()
		return reply(h, &question, dnsmessage.RCodeRefused, nil, false)
	}
	r := s.forward(ctx, q)
	if r == nil {
		ev.Reason = api.ReasonUpstream
		observe()
		return reply(h, &question, dnsmessage.RCodeServerFailure, nil, false)
	}
	addrs, ttl := Addresses(r, question.Name)
	for _, a := range addrs {
		ev.Answers = append(ev.Answers, a.String())
	}
	if grant && len(addrs) > 0 && s.cfg.Resolved != nil {
		ttl = min(max(ttl, MinAllowTTL), MaxAllowTTL)
		if err := s.cfg.Resolved(who.VM, addrs, ports, ttl); err != nil {
			s.cfg.Log.Warn("allowing what a VM resolved", "vm", who.VM, "name", ev.Name, "err", err)
			ev.Reason = api.ReasonFirewall
			observe()
			return reply(h, &question, dnsmessage.RCodeServerFailure, nil, false)
		}
		s.remember(who.VM, ev.Name, addrs, time.Now().Add(ttl))
	}
	ev.Verdict = api.EgressAllowed
	observe()
	return r
}

// hasControl says whether a name holds a control byte: C0, DEL, or C1
// (0x80 to 0x9f, raw or as the second byte of its UTF-8 form).
func hasControl(n dnsmessage.Name) bool {
	for _, b := range n.Data[:n.Length] {
		if b < 0x20 || b == 0x7f || b >= 0x80 && b < 0xa0 {
			return true
		}
	}
	return false
}

// typeName is a question type as dig shows it.
func typeName(t dnsmessage.Type) string { return strings.TrimPrefix(t.String(), "Type") }

// Addresses are the IPv4 addresses a reply gives for name, following
// its CNAME chain within the answer section (records for other names
// are not the question's), and the smallest TTL along the way.
func Addresses(reply []byte, name dnsmessage.Name) ([]netip.Addr, time.Duration) {
	var m dnsmessage.Message
	if err := m.Unpack(reply); err != nil || m.RCode != dnsmessage.RCodeSuccess {
		return nil, 0
	}
	want := strings.ToLower(name.String())
	minTTL := uint32(MaxAllowTTL / time.Second)
	var out []netip.Addr
	// A chain is at most as long as the answer section; each pass
	// follows one link.
	for range len(m.Answers) + 1 {
		next := ""
		for _, a := range m.Answers {
			if strings.ToLower(a.Header.Name.String()) != want || a.Header.Class != dnsmessage.ClassINET {
				continue
			}
			switch b := a.Body.(type) {
			case *dnsmessage.AResource:
				addr := netip.AddrFrom4(b.A)
				if !slices.Contains(out, addr) {
					out = append(out, addr)
				}
				minTTL = min(minTTL, a.Header.TTL)
			case *dnsmessage.CNAMEResource:
				next = strings.ToLower(b.CNAME.String())
				minTTL = min(minTTL, a.Header.TTL)
			}
		}
		if next == "" || len(out) > 0 {
			break
		}
		want = next
	}
	return out, time.Duration(minTTL) * time.Second
}

// remember keeps what an allow-listed name resolved to, for Reallow.
func (s *Server) remember(vm, name string, addrs []netip.Addr, until time.Time) {
	s.memMu.Lock()
	defer s.memMu.Unlock()
	names := s.remembered[vm]
	if names == nil {
		names = map[string]answer{}
		s.remembered[vm] = names
	}
	if _, ok := names[name]; !ok && len(names) >= maxRemembered {
		// Full: the expired go, and one more if none had.
		for n, a := range names {
			if time.Now().After(a.until) || len(names) >= maxRemembered {
				delete(names, n)
			}
		}
	}
	names[name] = answer{addrs: addrs, until: until}
}

// Reallow lets a VM whose allow-list changed reach again, until their
// TTL ends, what the names its new list still allows resolved to: its
// firewall forgot them all with the change.
func (s *Server) Reallow(ctx context.Context, vm string, allow allowlist.List) {
	s.memMu.Lock()
	names := maps.Clone(s.remembered[vm])
	if len(allow) == 0 {
		delete(s.remembered, vm)
	}
	s.memMu.Unlock()
	for name, a := range names {
		ports, anyPort, ok := allow.Ports(name)
		left := time.Until(a.until)
		if !ok || left < time.Second || s.cfg.Resolved == nil {
			continue
		}
		if anyPort {
			ports = nil
		}
		if err := s.cfg.Resolved(vm, a.addrs, ports, left); err != nil {
			s.cfg.Log.Warn("allowing again what a VM resolved", "vm", vm, "name", name, "err", err)
		}
	}
}

// Forget drops what the server remembers of a VM.
func (s *Server) Forget(vm string) {
	s.memMu.Lock()
	delete(s.remembered, vm)
	s.memMu.Unlock()
}

// answerZone answers for NAME.vm: an A record when a VM has that name,
// no data for other types, NXDOMAIN for an unknown name.
func (s *Server) answerZone(ctx context.Context, h dnsmessage.Header, q dnsmessage.Question, label string) []byte {
	if label == Zone {
		return reply(h, &q, dnsmessage.RCodeSuccess, nil, true) // the apex: no records of its own
	}
	if strings.Contains(label, ".") {
		return reply(h, &q, dnsmessage.RCodeNameError, nil, true)
	}
	addr, ok := s.cfg.Resolve(ctx, label)
	if !ok {
		return reply(h, &q, dnsmessage.RCodeNameError, nil, true)
	}
	if q.Type != dnsmessage.TypeA && q.Type != dnsmessage.TypeALL {
		return reply(h, &q, dnsmessage.RCodeSuccess, nil, true)
	}
	return reply(h, &q, dnsmessage.RCodeSuccess, &dnsmessage.AResource{A: addr.As4()}, true)
}

func reply(h dnsmessage.Header, q *dnsmessage.Question, rcode dnsmessage.RCode, a *dnsmessage.AResource, authoritative bool) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired,
		RecursionAvailable: true, Authoritative: authoritative, RCode: rcode})
	b.EnableCompression()
	if q != nil {
		if err := b.StartQuestions(); err != nil {
			return nil
		}
		if err := b.Question(*q); err != nil {
			return nil
		}
		if a != nil {
			if err := b.StartAnswers(); err != nil {
				return nil
			}
			if err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: TTL}, *a); err != nil {
				return nil
			}
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// forward asks each upstream server in turn, returning the first reply.
func (s *Server) forward(ctx context.Context, q []byte) []byte {
	for _, up := range s.cfg.Upstream {
		r, err := exchange(ctx, up, q)
		if err == nil {
			return r
		}
		s.cfg.Log.Debug("dns upstream failed", "upstream", up, "err", err)
	}
	return nil
}

func exchange(ctx context.Context, up netip.AddrPort, q []byte) ([]byte, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", up.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline := time.Now().Add(3 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// Upstreams are the nameservers of a resolv.conf, on port 53, leaving
// out those in skip (the server's own addresses: asking itself would
// loop).
func Upstreams(resolvConf []byte, skip func(netip.Addr) bool) []netip.AddrPort {
	var out []netip.AddrPort
	sc := bufio.NewScanner(bytes.NewReader(resolvConf))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || (skip != nil && skip(a)) {
			continue
		}
		out = append(out, netip.AddrPortFrom(a, 53))
	}
	return out
}
