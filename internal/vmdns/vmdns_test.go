package vmdns

import (
	"context"
	"net"
	"net/netip"
	"slices"
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
