package peer

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// ErrNoSocket: the kernel's socket table has no such connection (the
// peer hung up already, or is not on this host).
var ErrNoSocket = errors.New("no such socket")

// TCPOwner is the uid that owns the TCP socket whose local address is
// local and whose remote address is remote, from the kernel's socket
// table of this process's network namespace (/proc/self/net/tcp and
// tcp6). For a loopback connection accepted at remote from local, it is
// who connected: any local user can reach a listener on 127.0.0.1, and
// this is how a listener tells them apart.
func TCPOwner(local, remote netip.AddrPort) (uint32, error) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue // no IPv6 here
		}
		uid, err := findTCP(f, local, remote)
		f.Close()
		if !errors.Is(err, ErrNoSocket) {
			return uid, err
		}
	}
	return 0, fmt.Errorf("%w: %s → %s", ErrNoSocket, local, remote)
}

// maxTableLine bounds a line of the table (the kernel's are about 150
// bytes).
const maxTableLine = 4096

// findTCP looks local → remote up in a table as /proc/net/tcp writes
// it: "sl local rem st tx:rx tr:when retrnsmt uid timeout inode …", the
// addresses in hex as the kernel holds them in memory, 32 bits at a
// time, then ":PORT" in hex.
func findTCP(r io.Reader, local, remote netip.AddrPort) (uint32, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxTableLine)
	for first := true; sc.Scan(); first = false {
		if first {
			continue // the header
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		l, lok := parseSockAddr(f[1])
		rm, rok := parseSockAddr(f[2])
		if !lok || !rok || l != local || rm != remote {
			continue
		}
		uid, err := strconv.ParseUint(f[7], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("reading the socket table: uid %q", f[7])
		}
		return uint32(uid), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading the socket table: %w", err)
	}
	return 0, ErrNoSocket
}

// parseSockAddr reads "0100007F:1F90" (IPv4) or 32 hex digits and a port
// (IPv6), unmapping an IPv4-mapped address.
func parseSockAddr(s string) (netip.AddrPort, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || (len(a) != 8 && len(a) != 32) || len(p) != 4 {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	// Each 32-bit word was printed as the host reads it from memory.
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), true
}
