// Package vmdns is the daemon's DNS server on the bridge: it answers
// NAME.vm with a VM's address, for the guests and for a host whose
// resolver routes the vm zone to it, and passes other names to the host's
// upstream servers, but only for VMs allowed out (a sandboxed VM could
// otherwise talk to the world through DNS queries).
package vmdns

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/time/rate"
)

// Zone is the domain VM names live under.
const Zone = "vm."

// TTL of an answer: short, since a VM's address can go with it.
const TTL = 5

// Config wires a Server.
type Config struct {
	// Resolve is the address of the VM named name, if there is one.
	Resolve func(ctx context.Context, name string) (netip.Addr, bool)
	// MayForward says whether a query from src may go upstream.
	MayForward func(ctx context.Context, src netip.Addr) bool
	// Local says whether a query from src is answered at all: the VMs'
	// network and the host. Nothing goes back to anyone else, so the
	// server is neither an open resolver nor a reflector (nil: all).
	Local    func(src netip.Addr) bool
	Upstream []netip.AddrPort
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
}

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
		limits: map[netip.Addr]*rate.Limiter{}}
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
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
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
	name := strings.ToLower(question.Name.String())
	if name == Zone || strings.HasSuffix(name, "."+Zone) {
		return s.answerZone(ctx, h, question, strings.TrimSuffix(name, "."+Zone))
	}
	if s.cfg.MayForward == nil || !s.cfg.MayForward(ctx, src) {
		return reply(h, &question, dnsmessage.RCodeRefused, nil, false)
	}
	if r := s.forward(ctx, q); r != nil {
		return r
	}
	return reply(h, &question, dnsmessage.RCodeServerFailure, nil, false)
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
