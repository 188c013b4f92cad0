package peer

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// TestTCPOwner: a connection made by this process is this uid's, in the
// kernel's own table; one that is not there is ErrNoSocket.
func TestTCPOwner(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		uid, err := TCPOwner(s.RemoteAddr().(*net.TCPAddr).AddrPort(), s.LocalAddr().(*net.TCPAddr).AddrPort())
		if err != nil || uid != uint32(os.Getuid()) {
			t.Fatalf("%s: TCPOwner = %d, %v; want %d", network, uid, err, os.Getuid())
		}
	}
	if _, err := TCPOwner(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")); !errors.Is(err, ErrNoSocket) {
		t.Fatalf("a connection that is not there: %v", err)
	}
}

// TestFindTCP reads the table as the kernel writes it, on this host's
// byte order (x86: little-endian).
func TestFindTCP(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0 100 0 0 10 0
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1002        0 101 1 0 20 4 30 10 -1
   2: 0000000000000000FFFF00000100007F:D432 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  1003        0 102 1
   3: garbage
`
	for _, tc := range []struct {
		local, remote string
		uid           uint32
		err           error
	}{
		{"127.0.0.1:54321", "127.0.0.1:8080", 1002, nil},
		{"127.0.0.1:54322", "127.0.0.1:8080", 1003, nil},
		{"127.0.0.1:54323", "127.0.0.1:8080", 0, ErrNoSocket},
	} {
		uid, err := findTCP(strings.NewReader(table), netip.MustParseAddrPort(tc.local), netip.MustParseAddrPort(tc.remote))
		if uid != tc.uid || !errors.Is(err, tc.err) {
			t.Errorf("%s → %s: %d, %v; want %d, %v", tc.local, tc.remote, uid, err, tc.uid, tc.err)
		}
	}
}
