package vmdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/allowlist"
)

var (
	natVM     = netip.MustParseAddr("10.203.0.2")
	sandboxVM = netip.MustParseAddr("10.203.0.3")
	listVM    = netip.MustParseAddr("10.203.0.4")
	openVM    = netip.MustParseAddr("10.203.0.5")
)

// sources: natVM has NAT, listVM an allow-list, openVM an open one
// (a deny rule and an exception), the rest a sandbox.
func sources(_ context.Context, src netip.Addr) Source {
	switch src {
	case natVM:
		return Source{VM: "nat", Egress: api.EgressNAT}
	case listVM:
		l, _ := allowlist.ParseList([]string{"example.com:443", "*.example.org"})
		return Source{VM: "list", Egress: api.EgressAllowList, Allow: l}
	case openVM:
		l, _ := allowlist.ParseList([]string{"!10.0.0.0/8", "example.com:443"})
		return Source{VM: "open", Egress: api.EgressAllowList, Allow: l}
	}
	return Source{VM: "sandbox", Egress: api.EgressSandbox}
}

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
		Source:   sources,
		Upstream: upstream,
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
		{"a listed name goes upstream", []netip.AddrPort{up}, listVM, "Example.COM.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"192.0.2.7"}},
		{"a wildcard's name goes upstream", []netip.AddrPort{up}, listVM, "a.b.example.org.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"192.0.2.7"}},
		{"a name off the list does not exist", []netip.AddrPort{up}, listVM, "example.net.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"a wildcard's own domain is off it", []netip.AddrPort{up}, listVM, "example.org.", dnsmessage.TypeTXT, dnsmessage.RCodeNameError, nil},
		{"VM names for a listed VM", nil, listVM, "web.vm.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"10.203.0.2"}},
		{"a name with an escape sequence", []netip.AddrPort{up}, natVM, "ev\x1b]0;pwned\x07il.example.com.", dnsmessage.TypeA, dnsmessage.RCodeRefused, nil},
		{"a name with DEL", []netip.AddrPort{up}, natVM, "a\x7fb.example.com.", dnsmessage.TypeA, dnsmessage.RCodeRefused, nil},
		{"a name with C1 (CSI)", []netip.AddrPort{up}, listVM, "a\u009b2J.example.com.", dnsmessage.TypeA, dnsmessage.RCodeRefused, nil},
		{"a name with a raw C1 byte", []netip.AddrPort{up}, natVM, "a\x9bb.example.com.", dnsmessage.TypeA, dnsmessage.RCodeRefused, nil},
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

func TestAddresses(t *testing.T) {
	name := dnsmessage.MustNewName("www.example.com.")
	rr := func(owner string, ttl uint32, body dnsmessage.ResourceBody) dnsmessage.Resource {
		h := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(owner), Class: dnsmessage.ClassINET, TTL: ttl}
		return dnsmessage.Resource{Header: h, Body: body}
	}
	a := func(s string) *dnsmessage.AResource { return &dnsmessage.AResource{A: netip.MustParseAddr(s).As4()} }
	cname := func(s string) *dnsmessage.CNAMEResource {
		return &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(s)}
	}
	for _, tc := range []struct {
		name    string
		answers []dnsmessage.Resource
		rcode   dnsmessage.RCode
		want    []string
		ttl     time.Duration
	}{
		{"direct", []dnsmessage.Resource{rr("www.example.com.", 300, a("192.0.2.1")), rr("WWW.example.com.", 200, a("192.0.2.2"))},
			0, []string{"192.0.2.1", "192.0.2.2"}, 200 * time.Second},
		{"a chain", []dnsmessage.Resource{rr("www.example.com.", 30, cname("cdn.example.net.")), rr("cdn.example.net.", 300, cname("edge.example.net.")),
			rr("edge.example.net.", 20, a("192.0.2.3"))}, 0, []string{"192.0.2.3"}, 20 * time.Second},
		{"records for other names are not ours", []dnsmessage.Resource{rr("evil.example.", 30, a("192.0.2.66")), rr("www.example.com.", 60, a("192.0.2.4"))},
			0, []string{"192.0.2.4"}, time.Minute},
		{"a chain that loops", []dnsmessage.Resource{rr("www.example.com.", 30, cname("x.example.")), rr("x.example.", 30, cname("www.example.com."))},
			0, nil, 30 * time.Second},
		{"an error", []dnsmessage.Resource{rr("www.example.com.", 30, a("192.0.2.5"))}, dnsmessage.RCodeNameError, nil, 0},
	} {
		m := dnsmessage.Message{Header: dnsmessage.Header{Response: true, RCode: tc.rcode}, Answers: tc.answers,
			Questions: []dnsmessage.Question{{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
		for i := range m.Answers {
			m.Answers[i].Header.Type = map[bool]dnsmessage.Type{true: dnsmessage.TypeA, false: dnsmessage.TypeCNAME}[isA(m.Answers[i].Body)]
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		addrs, ttl := Addresses(b, name)
		var got []string
		for _, a := range addrs {
			got = append(got, a.String())
		}
		if !slices.Equal(got, tc.want) || (tc.want != nil && ttl != tc.ttl) {
			t.Errorf("%s: Addresses = %v, %v; want %v, %v", tc.name, got, ttl, tc.want, tc.ttl)
		}
	}
}

func isA(b dnsmessage.ResourceBody) bool { _, ok := b.(*dnsmessage.AResource); return ok }

// FuzzAddresses: an upstream's reply comes from the network; no reply
// may panic the reader, and a loop ends.
func FuzzAddresses(f *testing.F) {
	f.Add(query(f, "example.com.", dnsmessage.TypeA))
	f.Fuzz(func(t *testing.T, reply []byte) {
		addrs, _ := Addresses(reply, dnsmessage.MustNewName("example.com."))
		if len(addrs) > len(reply) {
			t.Fatalf("%d addresses from %d bytes", len(addrs), len(reply))
		}
	})
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

// TestAllowList: an allow-listed VM's answers reach it only once its
// firewall took their addresses, on the list's ports, for a TTL within
// bounds; every question is observed with its verdict; a list change
// gives back what the new list still allows.
func TestAllowList(t *testing.T) {
	up := fakeUpstream(t)
	type grant struct {
		vm    string
		addrs []netip.Addr
		ports []uint16
		ttl   time.Duration
	}
	var mu sync.Mutex
	var grants []grant
	var seen []api.EgressEvent
	fail := false
	s := New(Config{
		Resolve: func(context.Context, string) (netip.Addr, bool) { return netip.Addr{}, false },
		Source:  sources, Upstream: []netip.AddrPort{up},
		Resolved: func(vm string, addrs []netip.Addr, ports []uint16, ttl time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return errors.New("the set is full")
			}
			grants = append(grants, grant{vm, addrs, ports, ttl})
			return nil
		},
		Observe: func(vm string, e api.EgressEvent) {
			mu.Lock()
			defer mu.Unlock()
			if vm == "" || e.Time.IsZero() || e.Kind != api.EgressDNS {
				t.Errorf("odd event of %q: %+v", vm, e)
			}
			seen = append(seen, e)
		},
	})
	ctx := context.Background()
	rcode := func(src netip.Addr, name string) dnsmessage.RCode {
		var m dnsmessage.Message
		if err := m.Unpack(s.Answer(ctx, src, query(t, name, dnsmessage.TypeA))); err != nil {
			t.Fatal(err)
		}
		return m.RCode
	}
	for _, tc := range []struct {
		src  netip.Addr
		name string
		want dnsmessage.RCode
	}{
		{listVM, "example.com.", dnsmessage.RCodeSuccess},
		{listVM, "www.example.org.", dnsmessage.RCodeSuccess},
		{listVM, "evil.example.", dnsmessage.RCodeNameError},
		{natVM, "evil.example.", dnsmessage.RCodeSuccess},
		{sandboxVM, "example.com.", dnsmessage.RCodeRefused},
		{listVM, "web.vm.", dnsmessage.RCodeNameError}, // the zone: no event
	} {
		if got := rcode(tc.src, tc.name); got != tc.want {
			t.Errorf("%s asks %s: %v; want %v", tc.src, tc.name, got, tc.want)
		}
	}
	a := []netip.Addr{netip.MustParseAddr("192.0.2.7")}
	mu.Lock()
	want := []grant{{"list", a, []uint16{443}, MinAllowTTL}, {"list", a, nil, MinAllowTTL}}
	same := func(x, y grant) bool {
		return x.vm == y.vm && slices.Equal(x.addrs, y.addrs) && slices.Equal(x.ports, y.ports) && x.ttl == y.ttl
	}
	if len(grants) != 2 || !same(grants[0], want[0]) || !same(grants[1], want[1]) {
		t.Errorf("grants = %+v; want %+v (the upstream's TTL of 60 s, at least the floor)", grants, want)
	}
	var verdicts []string
	for _, e := range seen {
		verdicts = append(verdicts, e.Name+" "+e.Verdict+" "+e.Reason)
	}
	if !slices.Equal(verdicts, []string{"example.com allowed ", "www.example.org allowed ", "evil.example denied not on its allow-list",
		"evil.example allowed ", "example.com denied no NAT (sandbox)"}) {
		t.Errorf("observed %q", verdicts)
	}
	if len(seen) > 0 && (seen[0].Type != "A" || !slices.Equal(seen[0].Answers, []string{"192.0.2.7"})) {
		t.Errorf("first event %+v", seen[0])
	}
	// A firewall that cannot take an answer withholds it.
	fail, grants = true, nil
	mu.Unlock()
	if got := rcode(listVM, "example.com."); got != dnsmessage.RCodeServerFailure {
		t.Errorf("an answer the firewall refused: %v; want SERVFAIL", got)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	// The list changes: example.com stays (now any port), the wildcard
	// goes.
	l, _ := allowlist.ParseList([]string{"example.com"})
	s.Reallow(ctx, "list", l)
	mu.Lock()
	if len(grants) != 1 || grants[0].vm != "list" || grants[0].ports != nil || grants[0].ttl > MinAllowTTL || grants[0].ttl < MinAllowTTL-10*time.Second {
		t.Errorf("after the change, grants = %+v; want example.com's address on every port for what is left of its TTL", grants)
	}
	mu.Unlock()
}

// TestOpenList: a VM whose list has a deny rule has every name
// answered, but only the names its list names open its firewall (as
// exceptions to the deny rules); the rest reach what the deny rules
// leave open.
func TestOpenList(t *testing.T) {
	up := fakeUpstream(t)
	var mu sync.Mutex
	var granted []string
	var seen []string
	s := New(Config{
		Resolve: func(context.Context, string) (netip.Addr, bool) { return netip.Addr{}, false },
		Source:  sources, Upstream: []netip.AddrPort{up},
		Resolved: func(vm string, addrs []netip.Addr, ports []uint16, ttl time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			granted = append(granted, fmt.Sprintln(vm, addrs, ports))
			return nil
		},
		Observe: func(vm string, e api.EgressEvent) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, vm+" "+e.Name+" "+e.Verdict)
		},
	})
	ctx := context.Background()
	for _, name := range []string{"example.com.", "evil.example."} {
		var m dnsmessage.Message
		if err := m.Unpack(s.Answer(ctx, openVM, query(t, name, dnsmessage.TypeA))); err != nil {
			t.Fatal(err)
		}
		if m.RCode != dnsmessage.RCodeSuccess {
			t.Errorf("the open-listed VM asks %s: %v; want an answer", name, m.RCode)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(granted, []string{"open [192.0.2.7] [443]\n"}) {
		t.Errorf("granted %q; want only example.com's address on :443", granted)
	}
	if !slices.Equal(seen, []string{"open example.com allowed", "open evil.example allowed"}) {
		t.Errorf("observed %q", seen)
	}
}
