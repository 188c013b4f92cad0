package hostnet

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func ipv4(proto byte, dst [4]byte, frag uint16, transport ...byte) []byte {
	h := []byte{0x45, 0, 0, 0, 0, 0, byte(frag >> 8), byte(frag), 64, proto, 0, 0, 10, 99, 0, 2, dst[0], dst[1], dst[2], dst[3]}
	return append(h, transport...)
}

func TestParseAttempt(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef"
	dst := [4]byte{198, 51, 100, 2}
	tcp443 := ipv4(unix.IPPROTO_TCP, dst, 0, 0x9c, 0x40, 0x01, 0xbb)
	for _, tc := range []struct {
		name    string
		prefix  string
		payload []byte
		hook    uint8
		want    Attempt
		ok      bool
	}{
		{"allowed tcp", logAllowed + id, tcp443, unix.NF_INET_FORWARD,
			Attempt{VM: id, Allowed: true, Proto: "tcp", Dst: netip.AddrFrom4(dst), Port: 443}, true},
		{"denied to the host", logDenied + id, ipv4(unix.IPPROTO_UDP, dst, 0, 0, 1, 0, 53), unix.NF_INET_LOCAL_IN,
			Attempt{VM: id, ToHost: true, Proto: "udp", Dst: netip.AddrFrom4(dst), Port: 53}, true},
		{"icmp", logDenied + id, ipv4(unix.IPPROTO_ICMP, dst, 0, 8, 0), unix.NF_INET_PRE_ROUTING,
			Attempt{VM: id, ToHost: true, Proto: "icmp", Dst: netip.AddrFrom4(dst)}, true},
		{"a later fragment has no ports", logDenied + id, ipv4(unix.IPPROTO_TCP, dst, 0x0010, 0x9c, 0x40, 0x01, 0xbb), unix.NF_INET_FORWARD,
			Attempt{VM: id, Proto: "tcp", Dst: netip.AddrFrom4(dst)}, true},
		{"ports cut off", logDenied + id, ipv4(unix.IPPROTO_TCP, dst, 0, 0x9c), unix.NF_INET_FORWARD,
			Attempt{VM: id, Proto: "tcp", Dst: netip.AddrFrom4(dst)}, true},
		{"other protocol", logDenied + id, ipv4(47, dst, 0), unix.NF_INET_FORWARD,
			Attempt{VM: id, Proto: "47", Dst: netip.AddrFrom4(dst)}, true},
		{"someone else's log", "other " + id, tcp443, 2, Attempt{}, false},
		{"a short id", logDenied + "0123", tcp443, 2, Attempt{}, false},
		{"an id with escapes", logDenied + "0123456789abcdef0123456789abcd\x1b[", tcp443, 2, Attempt{}, false},
		{"IPv6", logDenied + id, append([]byte{0x60}, make([]byte, 40)...), 2, Attempt{}, false},
		{"short", logDenied + id, tcp443[:19], 2, Attempt{}, false},
		{"header longer than the packet", logDenied + id, append([]byte{0x4f}, tcp443[1:]...), 2, Attempt{}, false},
		{"header shorter than possible", logDenied + id, append([]byte{0x44}, tcp443[1:]...), 2, Attempt{}, false},
	} {
		got, ok := ParseAttempt(tc.prefix, tc.payload, tc.hook)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: ParseAttempt = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzParseAttempt: a logged packet is what a guest sent; no input may
// panic, and an attempt names a well-formed VM ID.
func FuzzParseAttempt(f *testing.F) {
	f.Add(logAllowed+"0123456789abcdef0123456789abcdef", ipv4(unix.IPPROTO_TCP, [4]byte{1, 2, 3, 4}, 0, 0, 1, 0, 2), uint8(2))
	f.Add(logDenied+"0123456789abcdef0123456789abcdef", []byte{0x4f, 0}, uint8(0))
	f.Fuzz(func(t *testing.T, prefix string, payload []byte, hook uint8) {
		at, ok := ParseAttempt(prefix, payload, hook)
		if ok && (len(at.VM) != 32 || !at.Dst.Is4()) {
			t.Fatalf("ParseAttempt(%q, %x) = %+v", prefix, payload, at)
		}
	})
}
