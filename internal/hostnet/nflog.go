package hostnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/florianl/go-nflog/v2"
	"golang.org/x/sys/unix"
)

// snaplen is what the firewall copies of a logged packet: the IPv4
// header (at most 60 bytes) and the transport header's ports.
const snaplen = 64

// Attempt is a new connection a VM opened, as its firewall decided it.
type Attempt struct {
	VM      string // its ID
	Time    time.Time
	Allowed bool
	// ToHost: it was addressed to the host itself (the firewall's
	// prerouting or input path), not routed beyond.
	ToHost bool
	Proto  string // tcp, udp, icmp, or the protocol's number
	Dst    netip.Addr
	Port   uint16 // 0 for protocols without ports
}

// Watch reads the firewall's log until ctx ends, telling seen each
// attempt. The socket is opened in the calling thread's network
// namespace, where the firewall is; an error says why the log cannot be
// read (another program holds the group, no nfnetlink_log).
func (n *Network) Watch(ctx context.Context, seen func(Attempt)) error {
	nf, err := nflog.Open(&nflog.Config{Group: LogGroup(n.cfg.Bridge), Copymode: nflog.CopyPacket, Bufsize: snaplen})
	if err != nil {
		return fmt.Errorf("opening the firewall's log (NFLOG group %d): %w", LogGroup(n.cfg.Bridge), err)
	}
	// A flood is dropped by the kernel (ENOBUFS), never queued here.
	_ = nf.Con.SetReadBuffer(1 << 20)
	hook := func(a nflog.Attribute) int {
		if a.Prefix == nil || a.Payload == nil {
			return 0
		}
		var hook uint8 = 255
		if a.Hook != nil {
			hook = *a.Hook
		}
		at, ok := ParseAttempt(*a.Prefix, *a.Payload, hook)
		if !ok {
			return 0
		}
		at.Time = time.Now()
		if a.Timestamp != nil && !a.Timestamp.IsZero() {
			at.Time = *a.Timestamp
		}
		seen(at)
		return 0
	}
	errFn := func(err error) int {
		if ctx.Err() == nil && !errors.Is(err, unix.ENOBUFS) {
			n.cfg.Log.Debug("reading the firewall's log", "err", err)
		}
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, errFn); err != nil {
		nf.Close()
		return fmt.Errorf("reading the firewall's log: %w", err)
	}
	go func() {
		<-ctx.Done()
		nf.Close()
	}()
	return nil
}

// ParseAttempt reads a logged packet: the rule's prefix names the verdict
// and the VM, the payload is the packet from its network header on (the
// guest wrote it: every length is checked), hook the netfilter hook that
// logged it.
func ParseAttempt(prefix string, payload []byte, hook uint8) (Attempt, bool) {
	var at Attempt
	switch {
	case strings.HasPrefix(prefix, logAllowed):
		at.Allowed, at.VM = true, strings.TrimPrefix(prefix, logAllowed)
	case strings.HasPrefix(prefix, logDenied):
		at.VM = strings.TrimPrefix(prefix, logDenied)
	default:
		return Attempt{}, false
	}
	if len(at.VM) != 32 || strings.Trim(at.VM, "0123456789abcdef") != "" {
		return Attempt{}, false
	}
	if len(payload) < 20 || payload[0]>>4 != 4 {
		return Attempt{}, false
	}
	ihl := int(payload[0]&0x0f) * 4
	if ihl < 20 || len(payload) < ihl {
		return Attempt{}, false
	}
	at.ToHost = hook == unix.NF_INET_PRE_ROUTING || hook == unix.NF_INET_LOCAL_IN
	at.Dst = netip.AddrFrom4([4]byte(payload[16:20]))
	proto := payload[9]
	switch proto {
	case unix.IPPROTO_TCP:
		at.Proto = "tcp"
	case unix.IPPROTO_UDP:
		at.Proto = "udp"
	case unix.IPPROTO_ICMP:
		at.Proto = "icmp"
	default:
		at.Proto = fmt.Sprint(proto)
	}
	// Ports only from a first fragment that holds them.
	first := binary.BigEndian.Uint16(payload[6:8])&0x1fff == 0
	if (proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_UDP) && first && len(payload) >= ihl+4 {
		at.Port = binary.BigEndian.Uint16(payload[ihl+2 : ihl+4])
	}
	return at, true
}
