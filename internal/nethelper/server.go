package nethelper

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/hostnet"
)

// Network is what the helper does to the host (a *hostnet.Network).
type Network interface {
	Ours() bool
	Attach(a hostnet.Attachment) (string, error)
	SetPolicy(a hostnet.Attachment) error
	Detach(vmID string) error
	Sync(running []hostnet.Attachment) ([]string, error)
	AllowResolved(vmID string, addrs []netip.Addr, ports []uint16, ttl time.Duration) error
	Watch(ctx context.Context, seen func(hostnet.Attempt)) error
}

// Server answers the owner's daemon.
type Server struct {
	Net    Network
	Bridge string
	Prefix netip.Prefix // the bridge network, from the helper's own configuration
	// Owner is the only uid served: the daemon's.
	Owner int
	// ListenDNS binds the socket dns_socket hands over (default: UDP on
	// the gateway, port 53).
	ListenDNS func(addr netip.AddrPort) (*net.UDPConn, error)
	Log       *slog.Logger

	watchOnce sync.Once
	watchErr  error
	subMu     sync.Mutex
	subs      map[chan hostnet.Attempt]struct{}

	connMu  sync.Mutex
	conns   int // connections being served
	watches int // of them, watchers of the firewall's log
}

// Limits on what one request may carry, and on the helper's own state:
// connections served at once (a daemon makes a few), watchers of the
// firewall's log among them (a daemon keeps one).
const (
	maxResolvedAddrs = 64
	maxResolvedPorts = allowlist.MaxPorts
	MaxConns         = 32
	MaxWatches       = 4
)

// Serve answers connections on ln until ctx ends. Each connection is
// one request from a caller whose uid the kernel vouches for.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go s.serveConn(ctx, c)
	}
}

// caller is who is on the other end of c, as the kernel says.
func caller(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// admit counts a connection in, or says why it is refused; watch counts
// a watcher (admitted already).
func (s *Server) admit(watch bool) (release func(), err error) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	switch {
	case !watch && s.conns >= MaxConns:
		return nil, refuse("%d connections at once already, the most the helper serves; try again", MaxConns)
	case watch && s.watches >= MaxWatches:
		return nil, refuse("%d watchers of the firewall's log already, the most the helper serves", MaxWatches)
	}
	if watch {
		s.watches++
		return func() { s.connMu.Lock(); s.watches--; s.connMu.Unlock() }, nil
	}
	s.conns++
	return func() { s.connMu.Lock(); s.conns--; s.connMu.Unlock() }, nil
}

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	cred, err := caller(c)
	if err != nil {
		s.Log.Warn("a connection without peer credentials", "err", err)
		return
	}
	log := s.Log.With("caller_uid", cred.Uid, "caller_pid", cred.Pid)
	if int(cred.Uid) != s.Owner { // before reading a byte of what it sends
		s.reply(c, log, "?", nil, refuse("uid %d may not use the network helper; only its owner (uid %d) may", cred.Uid, s.Owner))
		return
	}
	release, err := s.admit(false)
	if err != nil {
		s.reply(c, log, "?", nil, err)
		return
	}
	defer release()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	line, err := readLine(r)
	if err != nil {
		log.Warn("reading a request", "err", err)
		return
	}
	var req Request
	if err := decodeStrict(line, &req); err != nil {
		s.reply(c, log, "?", nil, refuse("a request that is not one: %v", err))
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if req.Op == OpWatch {
		if err := decodeStrict(req.Params, &struct{}{}); err != nil {
			s.reply(c, log, req.Op, nil, refuse("%s: %v", req.Op, err))
			return
		}
		done, err := s.admit(true)
		if err != nil {
			s.reply(c, log, req.Op, nil, err)
			return
		}
		defer done()
		s.watch(ctx, c, r, log)
		return
	}
	result, err := s.handle(req)
	if err == nil && req.Op == OpDNSSocket {
		s.handDNS(c, log)
		return
	}
	s.reply(c, log, req.Op, result, err)
}

// refuse is an invalid request's error.
func refuse(format string, args ...any) error {
	return &Error{Invalid: true, Message: fmt.Sprintf(format, args...)}
}

func (s *Server) reply(c *net.UnixConn, log *slog.Logger, op string, result any, err error) {
	var resp Response
	switch e := err.(type) {
	case nil:
		raw, merr := json.Marshal(result)
		if merr != nil {
			resp.Error = &Error{Message: merr.Error()}
			break
		}
		resp.Result = raw
		log.Info("request served", "op", op)
	case *Error:
		resp.Error = e
		log.Warn("request refused", "op", op, "err", e.Message)
	default:
		resp.Error = &Error{Message: err.Error()}
		log.Warn("request failed", "op", op, "err", err)
	}
	b, _ := json.Marshal(resp)
	_, _ = c.Write(append(b, '\n'))
}

// handle runs one checked request.
func (s *Server) handle(req Request) (any, error) {
	switch req.Op {
	case OpStatus:
		if err := decodeStrict(req.Params, &struct{}{}); err != nil {
			return nil, refuse("%s: %v", req.Op, err)
		}
		return StatusResult{Bridge: s.Bridge, Prefix: s.Prefix.String(), Ours: s.Net.Ours()}, nil
	case OpAttach, OpSetPolicy:
		var p Attachment
		if err := decodeStrict(req.Params, &p); err != nil {
			return nil, refuse("%s: %v", req.Op, err)
		}
		a, err := s.attachment(p)
		if err != nil {
			return nil, err
		}
		if req.Op == OpSetPolicy {
			return struct{}{}, s.Net.SetPolicy(a)
		}
		tap, err := s.Net.Attach(a)
		return AttachResult{Tap: tap}, err
	case OpDetach:
		var p VMRef
		if err := decodeStrict(req.Params, &p); err != nil {
			return nil, refuse("%s: %v", req.Op, err)
		}
		if err := checkID(p.ID); err != nil {
			return nil, err
		}
		return struct{}{}, s.Net.Detach(p.ID)
	case OpSync:
		var p SyncParams
		if err := decodeStrict(req.Params, &p); err != nil {
			return nil, refuse("%s: %v", req.Op, err)
		}
		if max := hostnet.RangeSize(s.Prefix); len(p.Running) > max {
			return nil, refuse("%s: %d running VMs, more than the %d addresses of %s", req.Op, len(p.Running), max, s.Prefix)
		}
		var running []hostnet.Attachment
		for _, r := range p.Running {
			a, err := s.attachment(r)
			if err != nil {
				return nil, err
			}
			running = append(running, a)
		}
		removed, err := s.Net.Sync(running)
		return SyncResult{Removed: removed}, err
	case OpAllowResolved:
		var p ResolvedParams
		if err := decodeStrict(req.Params, &p); err != nil {
			return nil, refuse("%s: %v", req.Op, err)
		}
		addrs, ttl, err := checkResolved(p)
		if err != nil {
			return nil, err
		}
		return struct{}{}, s.Net.AllowResolved(p.ID, addrs, p.Ports, ttl)
	case OpDNSSocket:
		if err := decodeStrict(req.Params, &struct{}{}); err != nil {
			return nil, refuse("%s: %v", req.Op, err)
		}
		return struct{}{}, nil
	}
	return nil, refuse("no operation %q; the helper does %s", req.Op, strings.Join(Ops(), ", "))
}

var vmID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func checkID(id string) error {
	if !vmID.MatchString(id) {
		return refuse("VM ID %q: 32 lower-case hex digits", id)
	}
	return nil
}

// attachment checks a VM's every field against the helper's own
// network: its ID's shape (the tap's name comes from it), a unicast MAC,
// an address a VM may lease, a list that parses.
func (s *Server) attachment(p Attachment) (hostnet.Attachment, error) {
	if err := checkID(p.ID); err != nil {
		return hostnet.Attachment{}, err
	}
	mac, err := net.ParseMAC(p.MAC)
	if err != nil || len(mac) != 6 || mac[0]&1 != 0 || slices.Equal(mac, make(net.HardwareAddr, 6)) {
		return hostnet.Attachment{}, refuse("vm %s: MAC %q: a unicast Ethernet address", p.ID, p.MAC)
	}
	addr, err := netip.ParseAddr(p.Addr)
	first, last := hostnet.RangeOf(s.Prefix)
	if err != nil || !addr.Is4() || addr.Less(first) || last.Less(addr) {
		return hostnet.Attachment{}, refuse("vm %s: address %q is not one a VM may have on %s (%s to %s)", p.ID, p.Addr, s.Prefix, first, last)
	}
	allow, err := allowlist.ParseList(p.Allow)
	if err != nil {
		return hostnet.Attachment{}, refuse("vm %s: %v", p.ID, err)
	}
	if len(allow) > 0 && !p.NAT {
		return hostnet.Attachment{}, refuse("vm %s: an allow-list without NAT", p.ID)
	}
	return hostnet.Attachment{ID: p.ID, MAC: mac, Addr: addr, Policy: hostnet.Policy{NAT: p.NAT, Allow: allow, Isolate: p.Isolate}}, nil
}

func checkResolved(p ResolvedParams) ([]netip.Addr, time.Duration, error) {
	if err := checkID(p.ID); err != nil {
		return nil, 0, err
	}
	if len(p.Addrs) == 0 || len(p.Addrs) > maxResolvedAddrs {
		return nil, 0, refuse("vm %s: %d addresses; 1 to %d", p.ID, len(p.Addrs), maxResolvedAddrs)
	}
	if len(p.Ports) > maxResolvedPorts || slices.Contains(p.Ports, 0) {
		return nil, 0, refuse("vm %s: ports %v: at most %d, none 0", p.ID, p.Ports, maxResolvedPorts)
	}
	ttl := time.Duration(p.TTLSeconds) * time.Second
	if ttl < time.Second || ttl > 24*time.Hour {
		return nil, 0, refuse("vm %s: a TTL of %d s: 1 s to a day", p.ID, p.TTLSeconds)
	}
	var addrs []netip.Addr
	for _, a := range p.Addrs {
		addr, err := netip.ParseAddr(a)
		if err != nil || !addr.Is4() {
			return nil, 0, refuse("vm %s: %q is not an IPv4 address", p.ID, a)
		}
		addrs = append(addrs, addr)
	}
	return addrs, ttl, nil
}

// handDNS binds the gateway's port 53 and hands the socket over.
func (s *Server) handDNS(c *net.UnixConn, log *slog.Logger) {
	listen := s.ListenDNS
	if listen == nil {
		listen = func(addr netip.AddrPort) (*net.UDPConn, error) {
			return net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		}
	}
	addr := netip.AddrPortFrom(hostnet.GatewayOf(s.Prefix), 53)
	conn, err := listen(addr)
	if err != nil {
		s.reply(c, log, OpDNSSocket, nil, fmt.Errorf("binding %s: %w", addr, err))
		return
	}
	defer conn.Close()
	f, err := conn.File()
	if err != nil {
		s.reply(c, log, OpDNSSocket, nil, err)
		return
	}
	defer f.Close()
	b, _ := json.Marshal(Response{Result: json.RawMessage("{}")})
	if _, _, err := c.WriteMsgUnix(append(b, '\n'), syscall.UnixRights(int(f.Fd())), nil); err != nil {
		log.Warn("handing over the DNS socket", "err", err)
		return
	}
	log.Info("request served", "op", OpDNSSocket, "addr", addr)
}

// watch sends the firewall's log to the caller until it hangs up. One
// reader of the log serves every watcher (an NFLOG group has one).
func (s *Server) watch(ctx context.Context, c *net.UnixConn, r *bufio.Reader, log *slog.Logger) {
	s.watchOnce.Do(func() {
		s.subs = map[chan hostnet.Attempt]struct{}{}
		s.watchErr = s.Net.Watch(ctx, func(a hostnet.Attempt) {
			s.subMu.Lock()
			defer s.subMu.Unlock()
			for ch := range s.subs {
				select {
				case ch <- a:
				default: // a watcher that does not keep up loses attempts, not the helper
				}
			}
		})
	})
	if s.watchErr != nil {
		s.reply(c, log, OpWatch, nil, s.watchErr)
		return
	}
	ch := make(chan hostnet.Attempt, 256)
	s.subMu.Lock()
	s.subs[ch] = struct{}{}
	s.subMu.Unlock()
	defer func() {
		s.subMu.Lock()
		delete(s.subs, ch)
		s.subMu.Unlock()
	}()
	s.reply(c, log, OpWatch, struct{}{}, nil)
	gone := make(chan struct{})
	go func() { // the caller sends nothing more: any read's end is its hang-up
		_, _ = r.ReadByte()
		close(gone)
	}()
	enc := json.NewEncoder(c)
	for {
		select {
		case <-gone:
			return
		case <-ctx.Done():
			return
		case a := <-ch:
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := enc.Encode(Attempt{VM: a.VM, Time: a.Time.UnixNano(), Allowed: a.Allowed, ToHost: a.ToHost,
				Proto: a.Proto, Dst: a.Dst.String(), Port: a.Port}); err != nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Warn("sending an attempt", "err", err)
				}
				return
			}
		}
	}
}
