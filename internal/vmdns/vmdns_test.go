package vmdns

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

var (
	natVM     = netip.MustParseAddr("10.203.0.2")
	sandboxVM = netip.MustParseAddr("10.203.0.3")
)

func testServer(upstream []netip.AddrPort) *Server {
	return New(Config{
		Resolve: func(_ context.Context, name string) (netip.Addr, bool) {
			switch name {
			case "web":
				return natVM, true
			case "db":
				return sandboxVM, true
			}
			return netip.Addr{}, false
		},
		MayForward: func(_ context.Context, src netip.Addr) bool { return src == natVM },
		Upstream:   upstream,
	})
}

func query(t testing.TB, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x1234, RecursionDesired: true})
	_ = b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fakeUpstream answers every query with 192.0.2.7: the host's resolver,
// which a unit test must not reach.
func fakeUpstream(t *testing.T) netip.AddrPort {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if m.Unpack(buf[:n]) != nil {
				continue
			}
			m.Response = true
			m.Answers = []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: m.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
				Body: &dnsmessage.AResource{A: [4]byte{192, 0, 2, 7}}}}
			out, _ := m.Pack()
			_, _ = c.WriteToUDPAddrPort(out, from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestAnswer(t *testing.T) {
	up := fakeUpstream(t)
	dead := netip.MustParseAddrPort("127.0.0.1:1") // nothing listens: the exchange fails
	for _, tc := range []struct {
		name     string
		upstream []netip.AddrPort
		src      netip.Addr
		q        string
		typ      dnsmessage.Type
		rcode    dnsmessage.RCode
		want     []string
	}{
		{"a VM by name", nil, sandboxVM, "web.vm.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"10.203.0.2"}},
		{"names ignore case", nil, sandboxVM, "DB.Vm.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"10.203.0.3"}},
		{"no such VM", nil, sandboxVM, "nope.vm.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"a VM has no AAAA", nil, sandboxVM, "web.vm.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, nil},
		{"below a VM name", nil, sandboxVM, "x.web.vm.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"the zone's apex", nil, sandboxVM, "vm.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, nil},
		{"a sandbox may not ask out", []netip.AddrPort{up}, sandboxVM, "example.com.", dnsmessage.TypeA, dnsmessage.RCodeRefused, nil},
		{"a NAT VM asks upstream", []netip.AddrPort{dead, up}, natVM, "example.com.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"192.0.2.7"}},
		{"no upstream answers", []netip.AddrPort{dead}, natVM, "example.com.", dnsmessage.TypeA, dnsmessage.RCodeServerFailure, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testServer(tc.upstream)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out := s.Answer(ctx, tc.src, query(t, tc.q, tc.typ))
			var m dnsmessage.Message
			if err := m.Unpack(out); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if m.ID != 0x1234 || !m.Response || m.RCode != tc.rcode {
				t.Fatalf("reply header %+v; want id 0x1234, rcode %v", m.Header, tc.rcode)
			}
			var got []string
			for _, a := range m.Answers {
				if r, ok := a.Body.(*dnsmessage.AResource); ok {
					got = append(got, netip.AddrFrom4(r.A).String())
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("answers %v; want %v", got, tc.want)
			}
		})
	}
	s := testServer(nil)
	if out := s.Answer(context.Background(), natVM, []byte{1, 2, 3}); out != nil {
		t.Errorf("a truncated header got a reply: %x", out)
	}
}

// TestListen resolves through the server over real UDP, as a guest does.
func TestListen(t *testing.T) {
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().(*net.UDPAddr).AddrPort()
	probe.Close()
	s := testServer(nil)
	if err := s.Listen(addr); err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(addr); err != nil {
		t.Fatalf("listening twice on one address: %v", err)
	}
	defer s.Close()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr.String())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := r.LookupHost(ctx, "web.vm")
	if err != nil || !slices.Equal(got, []string{"10.203.0.2"}) {
		t.Fatalf("LookupHost(web.vm) = %v, %v", got, err)
	}
	if _, err := r.LookupHost(ctx, "nope.vm"); err == nil {
		t.Fatal("an unknown VM resolved")
	}
}

func TestUpstreams(t *testing.T) {
	conf := "# generated\nnameserver 10.203.0.1\nnameserver 192.0.2.53\nsearch example\nnameserver fe80::1%eth0\nnameserver bogus\n"
	got := Upstreams([]byte(conf), func(a netip.Addr) bool { return a.String() == "10.203.0.1" })
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53"), netip.MustParseAddrPort("[fe80::1%eth0]:53")}
	if !slices.Equal(got, want) {
		t.Errorf("Upstreams = %v; want %v", got, want)
	}
}

// FuzzAnswer feeds the server what a guest may send: any bytes. A reply,
// when there is one, must parse and carry the query's ID.
func FuzzAnswer(f *testing.F) {
	f.Add(query(f, "web.vm.", dnsmessage.TypeA))
	f.Add(query(f, "example.com.", dnsmessage.TypeMX))
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	s := testServer(nil)
	f.Fuzz(func(t *testing.T, q []byte) {
		out := s.Answer(context.Background(), natVM, q)
		if out == nil {
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(out); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if len(q) < 2 || m.ID != uint16(q[0])<<8|uint16(q[1]) {
			t.Fatalf("reply ID %#x for query %x", m.ID, q)
		}
	})
}

// TestServerContainment: the server answers only local sources; one
// source is rate-limited; the queries answered at once are bounded (no
// goroutine per packet without end).
func TestServerContainment(t *testing.T) {
	query := func(id uint16, name string) []byte {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
		_ = b.StartQuestions()
		_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
		q, _ := b.Finish()
		return q
	}
	start := func(cfg Config) (*Server, *net.UDPConn) {
		if cfg.Resolve == nil {
			cfg.Resolve = func(context.Context, string) (netip.Addr, bool) { return natVM, true }
		}
		s := New(cfg)
		addr := freeUDP(t)
		if err := s.Listen(addr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return s, c
	}
	answers := func(c *net.UDPConn, wait time.Duration) []uint16 {
		var ids []uint16
		buf := make([]byte, 512)
		_ = c.SetReadDeadline(time.Now().Add(wait))
		for {
			n, err := c.Read(buf)
			if err != nil {
				return ids
			}
			var p dnsmessage.Parser
			if h, err := p.Start(buf[:n]); err == nil {
				ids = append(ids, h.ID)
			}
		}
	}
	local := func(src netip.Addr) bool { return src.IsLoopback() }

	// A burst of 100 from one source: about the burst is answered.
	_, c := start(Config{Local: local, PerSource: 5, Burst: 10})
	for i := range 100 {
		_, _ = c.Write(query(uint16(i), "web.vm."))
	}
	if n := len(answers(c, 2*time.Second)); n < 5 || n > 20 {
		t.Fatalf("%d of 100 queries answered from one source; want about the burst of 10", n)
	}

	// Slow answers: at most MaxInFlight at once, the rest dropped.
	var mu sync.Mutex
	inFlight, most := 0, 0
	release := make(chan struct{})
	s, c := start(Config{Local: local, MaxInFlight: 8, PerSource: 1000, Burst: 1000,
		Resolve: func(ctx context.Context, _ string) (netip.Addr, bool) {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			mu.Unlock()
			select {
			case <-release:
			case <-ctx.Done():
			}
			mu.Lock()
			inFlight--
			mu.Unlock()
			return natVM, true
		}})
	for i := range 50 {
		_, _ = c.Write(query(uint16(i), "slow.vm."))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.limMu.Lock()
		dropped := s.dropped
		s.limMu.Unlock()
		if dropped >= 42 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 50 queries dropped with 8 slots", dropped)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	got := most
	mu.Unlock()
	close(release)
	if got > 8 {
		t.Fatalf("%d queries answered at once; want at most 8", got)
	}

	// Not local: nothing comes back.
	_, c = start(Config{Local: func(netip.Addr) bool { return false }})
	_, _ = c.Write(query(7, "web.vm."))
	if ids := answers(c, 500*time.Millisecond); len(ids) != 0 {
		t.Fatalf("a foreign source got answers %v", ids)
	}
}

func freeUDP(t *testing.T) netip.AddrPort {
	t.Helper()
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	return probe.LocalAddr().(*net.UDPAddr).AddrPort()
}
