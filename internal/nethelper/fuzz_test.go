package nethelper

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/hostnet"
)

// fakeNet stands in for the host's network: it records what the helper
// asked of it and fails the fuzz test on any argument the helper should
// have refused.
type fakeNet struct {
	t      *testing.T
	prefix netip.Prefix
	mu     sync.Mutex
	calls  int
}

var fuzzID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func (n *fakeNet) check(a hostnet.Attachment) {
	first, last := hostnet.RangeOf(n.prefix)
	if !fuzzID.MatchString(a.ID) || len(a.MAC) != 6 || a.MAC[0]&1 != 0 || a.Addr.Less(first) || last.Less(a.Addr) {
		n.t.Errorf("the helper passed on %+v", a)
	}
	if len(a.Policy.Allow) > 0 && !a.Policy.NAT {
		n.t.Errorf("an allow-list without NAT passed: %+v", a)
	}
}

func (n *fakeNet) count() { n.mu.Lock(); n.calls++; n.mu.Unlock() }

func (n *fakeNet) Ours() bool { return true }
func (n *fakeNet) Attach(a hostnet.Attachment) (string, error) {
	n.check(a)
	n.count()
	return hostnet.TapName(a.ID), nil
}
func (n *fakeNet) SetPolicy(a hostnet.Attachment) error { n.check(a); n.count(); return nil }
func (n *fakeNet) Detach(id string) error {
	if !fuzzID.MatchString(id) {
		n.t.Errorf("detach of %q passed", id)
	}
	n.count()
	return nil
}
func (n *fakeNet) Sync(running []hostnet.Attachment) ([]string, error) {
	if len(running) > hostnet.RangeSize(n.prefix) {
		n.t.Errorf("a sync of %d VMs passed", len(running))
	}
	for _, a := range running {
		n.check(a)
	}
	n.count()
	return nil, nil
}
func (n *fakeNet) AllowResolved(id string, addrs []netip.Addr, ports []uint16, ttl time.Duration) error {
	if !fuzzID.MatchString(id) || len(addrs) == 0 || len(addrs) > maxResolvedAddrs || ttl < time.Second || ttl > 24*time.Hour {
		n.t.Errorf("allow_resolved %q %v %v %s passed", id, addrs, ports, ttl)
	}
	n.count()
	return nil
}
func (n *fakeNet) Watch(ctx context.Context, seen func(hostnet.Attempt)) error { return nil }

// FuzzServe sends any bytes as a request to the helper's connection
// handler, over a real socket pair (the kernel vouches for the caller:
// this test's uid, the helper's owner here), against a fake network:
// no panic, an answer (or a hang-up) within a deadline, one JSON line
// when it answers, and nothing reaches the network that the helper
// should have refused.
func FuzzServe(f *testing.F) {
	for _, seed := range []string{
		`{"op":"status"}`,
		`{"op":"attach","params":{"id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","mac":"52:54:00:00:00:0a","addr":"10.98.0.2","nat":true,"allow":["example.com:443"]}}`,
		`{"op":"set_policy","params":{"id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","mac":"52:54:00:00:00:0a","addr":"10.98.0.2","isolate":true}}`,
		`{"op":"detach","params":{"id":"../../etc/passwd"}}`,
		`{"op":"sync","params":{"running":[{"id":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","mac":"52:54:00:00:00:0b","addr":"10.98.0.3"}]}}`,
		`{"op":"allow_resolved","params":{"id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","addrs":["192.0.2.7"],"ports":[443],"ttl_seconds":60}}`,
		`{"op":"dns_socket"}`,
		`{"op":"watch"}`,
		`{"op":"exec","params":{"argv":["/bin/sh"]}}`,
		`{"op":"attach","params":{"id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","mac":"01:00:5e:00:00:01","addr":"10.98.0.1","tap":"eth0"}}`,
	} {
		f.Add([]byte(seed + "\n"))
	}
	prefix := netip.MustParsePrefix("10.98.0.0/24")
	f.Fuzz(func(t *testing.T, data []byte) {
		fn := &fakeNet{t: t, prefix: prefix}
		s := &Server{Net: fn, Bridge: "bgfuzz0", Prefix: prefix, Owner: os.Getuid(), Log: slog.New(slog.DiscardHandler),
			ListenDNS: func(netip.AddrPort) (*net.UDPConn, error) {
				return net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			}}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		conn := func(fd int) *net.UnixConn {
			f := os.NewFile(uintptr(fd), "pair")
			defer f.Close()
			c, err := net.FileConn(f)
			if err != nil {
				t.Fatal(err)
			}
			return c.(*net.UnixConn)
		}
		server, client := conn(fds[0]), conn(fds[1])
		defer client.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan struct{})
		go func() {
			s.serveConn(ctx, server)
			close(done)
		}()
		_ = client.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = client.Write(data)
		_ = client.CloseWrite()
		line, err := bufio.NewReader(client).ReadBytes('\n')
		if err != nil && err != io.EOF {
			t.Fatalf("reading the answer: %v", err)
		}
		if len(line) > 0 {
			var resp Response
			if err := json.Unmarshal(line, &resp); err != nil {
				t.Fatalf("the answer is not one: %q: %v", line, err)
			}
		}
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("the helper still holds the connection for %q", data)
		}
	})
}
