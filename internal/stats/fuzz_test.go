package stats

import (
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/termsafe"
)

// FuzzDedupe hands Dedupe any socket list a guest might send: no panic;
// every port it keeps is a real one (tcp or udp, 1 to 65535), once, in
// order, with at most maxAddresses addresses, each "*" or an IP address,
// and a process name of at most maxProcess bytes of printable text.
func FuzzDedupe(f *testing.F) {
	seed := func(socks ...proto.Socket) {
		b, _ := json.Marshal(socks)
		f.Add(b)
	}
	seed(proto.Socket{Proto: "tcp", Addr: "0.0.0.0", Port: 80, Process: "nginx", PID: 7},
		proto.Socket{Proto: "tcp6", Addr: "::", Port: 80}, proto.Socket{Proto: "udp", Addr: "127.0.0.1", Port: 53})
	seed(proto.Socket{Proto: "tcp", Addr: "10.0.0.1", Port: 70000, Process: "x\x1b]0;owned\x07" + strings.Repeat("y", 300)})
	seed(proto.Socket{Proto: "sctp", Addr: "not an address", Port: -1, PID: -5})
	f.Fuzz(func(t *testing.T, data []byte) {
		var socks []proto.Socket
		if json.Unmarshal(data, &socks) != nil {
			return
		}
		ports := Dedupe(socks)
		if !slices.IsSortedFunc(ports, func(a, b api.VMPort) int {
			return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
		}) {
			t.Fatalf("not in order: %+v", ports)
		}
		for i, p := range ports {
			if p.Proto != "tcp" && p.Proto != "udp" || p.Port < 1 || p.Port > 65535 {
				t.Fatalf("kept %+v", p)
			}
			if i > 0 && ports[i-1].Proto == p.Proto && ports[i-1].Port == p.Port {
				t.Fatalf("twice: %+v", p)
			}
			if len(p.Addresses) == 0 || len(p.Addresses) > maxAddresses {
				t.Fatalf("%d addresses: %+v", len(p.Addresses), p)
			}
			for _, a := range p.Addresses {
				if _, err := netip.ParseAddr(a); a != "*" && err != nil {
					t.Fatalf("address %q", a)
				}
			}
			if len(p.Process) > maxProcess || !utf8.ValidString(p.Process) || strings.ContainsFunc(p.Process, termsafe.IsControl) {
				t.Fatalf("process %q", p.Process)
			}
		}
	})
}

// FuzzProbe has Probe talk to a port that answers with any bytes (a
// guest's server, through the agent): no panic, an answer within the
// probe's deadlines, and never https (no handshake completes with
// bytes that are not a TLS server's).
func FuzzProbe(f *testing.F) {
	f.Add([]byte("HTTP/1.0 200 OK\r\n\r\n"))
	f.Add([]byte("\x16\x03\x03\x00\x2a\x02\x00\x00\x26\x03\x03"))
	f.Add([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, answer []byte) {
		dial := func(ctx context.Context) (net.Conn, error) {
			client, server := net.Pipe()
			go func() {
				defer server.Close()
				_ = server.SetDeadline(time.Now().Add(probeTimeout))
				go func() { _, _ = io.Copy(io.Discard, server) }()
				_, _ = server.Write(answer)
			}()
			return client, nil
		}
		start := time.Now()
		got := Probe(context.Background(), dial)
		if got != "http" && got != "tcp" {
			t.Fatalf("Probe = %q for %q", got, answer)
		}
		if got == "http" && !strings.HasPrefix(string(answer), "HTTP/") {
			t.Fatalf("http for %q", answer)
		}
		if took := time.Since(start); took > 3*probeTimeout {
			t.Fatalf("the probe took %s", took)
		}
	})
}
