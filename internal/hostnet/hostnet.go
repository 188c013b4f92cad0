// Package hostnet is the bridge network of a root daemon: one Linux
// bridge holding the gateway address, one tap per running VM enslaved to
// it, and nftables tables that contain them: a VM reaches the host only
// for the daemon's DNS, other VMs unless either is isolated, and beyond
// the host only with NAT (never link-local nor a denied destination),
// restricted to its allow-list when it has one; every new connection it
// opens is logged, allowed or denied, to an NFLOG group (Watch).
//
// It works in the network namespace of the calling thread and starts no
// goroutines but Watch's reader (whose socket is opened first), so a test
// that moved its locked thread into a namespace of its own keeps
// everything there.
package hostnet

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/allowlist"
)

// TapPrefix starts the name of every tap hostnet makes.
const TapPrefix = "bg-"

// TapName is the tap of the VM whose ID is vmID: the prefix and the ID's
// first 12 characters, within Linux's 15.
func TapName(vmID string) string {
	if len(vmID) > 12 {
		vmID = vmID[:12]
	}
	return TapPrefix + vmID
}

// Config names the bridge and its network.
type Config struct {
	Bridge string
	Prefix netip.Prefix // IPv4; the bridge takes its first address
	// Owner marks the bridge as this daemon's (its link alias): another
	// daemon's bridge of the same name is refused, and never swept.
	Owner string
	// Deny are destinations no VM reaches, NAT or allow-list, on top of
	// link-local (169.254.0.0/16, cloud metadata), which is always denied
	// (network.nat_deny).
	Deny []netip.Prefix
	// TapUser and TapGroup may open the taps (TUNSETOWNER, TUNSETGROUP):
	// the daemon's user, whose VMM opens them, when the daemon is not
	// root (0: root alone).
	TapUser, TapGroup uint32
	// OnUp, when set, is told the gateway address each time Attach has
	// found or made the bridge (the .vm DNS server listens there); it must
	// be idempotent.
	OnUp func(gateway netip.Addr)
	Log  *slog.Logger
}

// Policy is what a VM may reach beyond the bridge.
type Policy struct {
	NAT bool // it may open connections out (masqueraded)
	// Allow, with NAT, restricts those to its address rules and to the
	// addresses its names resolved to (AllowResolved); empty: anywhere
	// but the denied destinations.
	Allow allowlist.List
	// Isolate keeps it from the other VMs on the bridge, both ways.
	Isolate bool
}

// Attachment is a VM on the bridge.
type Attachment struct {
	ID     string
	MAC    net.HardwareAddr
	Addr   netip.Addr
	Policy Policy
}

// Network manages one bridge.
type Network struct {
	cfg Config
	mu  sync.Mutex // one change at a time: Attach, Detach, SetPolicy and Sync read then write

	resolvedMu sync.Mutex
	resolved   map[string]map[string]time.Time // per VM key: set element → when it expires
}

// New checks cfg; nothing on the host changes until a VM attaches.
func New(cfg Config) (*Network, error) {
	p := cfg.Prefix.Masked()
	if !p.Addr().Is4() || p.Bits() > 29 || p.Bits() < 8 {
		return nil, fmt.Errorf("bridge network %s: use an IPv4 prefix between /8 and /29", cfg.Prefix)
	}
	if cfg.Bridge == "" || len(cfg.Bridge) > 15 {
		return nil, fmt.Errorf("bridge name %q: use 1 to 15 characters", cfg.Bridge)
	}
	if cfg.Owner == "" {
		return nil, fmt.Errorf("bridge %s: no owner", cfg.Bridge)
	}
	for _, d := range cfg.Deny {
		if !d.Addr().Is4() {
			return nil, fmt.Errorf("denied destination %s: only IPv4", d)
		}
	}
	cfg.Prefix = p
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Network{cfg: cfg, resolved: map[string]map[string]time.Time{}}, nil
}

// Prefix is the bridge's network.
func (n *Network) Prefix() netip.Prefix { return n.cfg.Prefix }

// Gateway is the bridge's own address: the VMs' gateway and DNS server.
func (n *Network) Gateway() netip.Addr { return GatewayOf(n.cfg.Prefix) }

// GatewayOf is the gateway of the bridge network p: its first address.
func GatewayOf(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// Ours says whether the bridge exists and is this daemon's: one a
// previous run made, which VMs still use.
func (n *Network) Ours() bool {
	br, err := netlink.LinkByName(n.cfg.Bridge)
	return err == nil && br.Type() == "bridge" && br.Attrs().Alias == n.alias()
}

// Range is the first and last address a VM may lease.
func (n *Network) Range() (first, last netip.Addr) { return RangeOf(n.cfg.Prefix) }

// RangeOf is the first and last address a VM may lease on the bridge
// network p: after the gateway, before the broadcast address.
func RangeOf(p netip.Prefix) (first, last netip.Addr) {
	p = p.Masked()
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	bcast := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	return GatewayOf(p).Next(), bcast.Prev()
}

// Attach gives the VM a tap on the bridge, making the bridge and the
// firewall first if need be, and its rules: anti-spoofing (its MAC and
// address only) and its policy. It returns the tap's name. A failure
// leaves no tap and no rule.
func (n *Network) Attach(a Attachment) (tap string, err error) {
	if !n.cfg.Prefix.Contains(a.Addr) {
		return "", fmt.Errorf("attaching vm %s: address %s is outside the bridge network %s", a.ID, a.Addr, n.cfg.Prefix)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	br, err := n.ensureBridge()
	if err != nil {
		return "", err
	}
	if n.cfg.OnUp != nil {
		n.cfg.OnUp(n.Gateway())
	}
	c, err := nftables.New()
	if err != nil {
		return "", fmt.Errorf("opening nftables: %w", err)
	}
	if err := n.ensureFirewall(c); err != nil {
		return "", err
	}
	tap = TapName(a.ID)
	defer func() {
		if err != nil {
			_ = n.detach(a.ID)
		}
	}()
	// A tap or rules of this VM are leftovers of its last run.
	if err := n.detach(a.ID); err != nil {
		return "", err
	}
	// Still there: not this VM's to take (TUNSETIFF would attach to it,
	// another daemon's tap included, rather than fail).
	if l, err := netlink.LinkByName(tap); err == nil {
		return "", fmt.Errorf("attaching vm %s: interface %s exists: %s", a.ID, tap, n.notOurs(l, a.ID))
	}
	if taps, err := n.ownTaps(); err != nil {
		return "", err
	} else if len(taps) >= RangeSize(n.cfg.Prefix) {
		return "", fmt.Errorf("attaching vm %s: %w: the bridge network holds %d taps already, one for each address a VM may lease", a.ID, ErrFull, len(taps))
	}
	t := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: tap, MasterIndex: br.Attrs().Index},
		Mode:      netlink.TUNTAP_MODE_TAP,
		// As QEMU and Firecracker open it: no packet info, virtio-net headers.
		Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_ONE_QUEUE,
		Owner: n.cfg.TapUser, Group: n.cfg.TapGroup,
	}
	if err := netlink.LinkAdd(t); err != nil {
		return "", fmt.Errorf("creating tap %s: %w", tap, err)
	}
	// Marked with the VM's whole ID (a tap's name holds 12 of its 32
	// digits): what is removed later is this VM's tap and no other.
	if err := netlink.LinkSetAlias(t, n.tapAlias(a.ID)); err != nil {
		_ = netlink.LinkDel(t)
		return "", fmt.Errorf("marking tap %s as vm %s's: %w", tap, a.ID, err)
	}
	if err := netlink.LinkSetUp(t); err != nil {
		return "", fmt.Errorf("bringing tap %s up: %w", tap, err)
	}
	if a.Policy.NAT {
		if err := n.enableForwarding(c); err != nil {
			return "", err
		}
	}
	if err := n.addVM(c, a); err != nil {
		return "", err
	}
	if err := c.Flush(); err != nil {
		return "", fmt.Errorf("adding the nftables rules of vm %s: %w", a.ID, err)
	}
	n.cfg.Log.Debug("vm attached to the bridge", "vm", a.ID, "tap", tap, "mac", a.MAC, "addr", a.Addr, "nat", a.Policy.NAT,
		"allow", len(a.Policy.Allow), "isolate", a.Policy.Isolate)
	return tap, nil
}

// SetPolicy replaces a running VM's policy at once, in one nftables
// transaction: what its names resolved to is forgotten (the DNS server
// adds back what the new list still allows), and its connections are
// cut, so none outlives a policy that no longer allows it.
func (n *Network) SetPolicy(a Attachment) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	if a.Policy.NAT {
		if err := n.enableForwarding(c); err != nil {
			return err
		}
	}
	if _, err := n.removeRules(c, func(owner string) bool { return owner == a.ID }); err != nil {
		return err
	}
	sets, err := c.GetSets(n.table())
	if err != nil {
		return fmt.Errorf("listing nftables sets: %w", err)
	}
	for _, s := range sets {
		if k, ok := vmObject(s.Name, "a-", "p-"); ok && k == key(a.ID) {
			c.FlushSet(s)
		}
	}
	if err := n.addVM(c, a); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("changing the nftables rules of vm %s: %w", a.ID, err)
	}
	n.forget(a.ID)
	filter := &netlink.ConntrackFilter{}
	if err := filter.AddIP(netlink.ConntrackOrigSrcIP, a.Addr.AsSlice()); err != nil {
		return err
	}
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filter); err != nil {
		return fmt.Errorf("ending the connections of vm %s: %w", a.ID, err)
	}
	n.cfg.Log.Info("vm policy changed", "vm", a.ID, "nat", a.Policy.NAT, "allow", len(a.Policy.Allow), "isolate", a.Policy.Isolate)
	return nil
}

// Detach removes the VM's tap, its rules, chains and sets; what is
// already gone is fine.
func (n *Network) Detach(vmID string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.detach(vmID)
}

func (n *Network) detach(vmID string) error {
	var errs []error
	tap := TapName(vmID)
	if l, err := netlink.LinkByName(tap); err == nil {
		if why := n.notOurs(l, vmID); why != "" {
			// Another daemon's (its VM's ID starts the same), or not
			// banger's at all: left alone.
			n.cfg.Log.Warn("leaving a tap of the VM's name alone", "tap", tap, "vm", vmID, "why", why)
		} else if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("removing tap %s: %w", tap, err))
		}
	}
	k := key(vmID)
	if _, err := n.removeAll(func(owner string) bool { return owner == vmID }, func(got string) bool { return got == k }); err != nil {
		errs = append(errs, err)
	}
	n.forget(vmID)
	return errors.Join(errs...)
}

// removeAll removes, in one transaction, the per-VM rules whose owner
// matches and the per-VM chains and sets whose key does.
func (n *Network) removeAll(owner, k func(string) bool) ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	owners, err := n.removeRules(c, owner)
	if err != nil {
		return nil, err
	}
	objects, err := n.removeVMObjects(c, k)
	if err != nil {
		return nil, err
	}
	if len(owners) == 0 && len(objects) == 0 {
		return nil, nil
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("removing nftables rules: %w", err)
	}
	var removed []string
	for _, o := range owners {
		removed = append(removed, "nftables rules of vm "+o)
	}
	return append(removed, objects...), nil
}

// Sync is the bridge network as a restarted daemon finds it: the VMs in
// running get their rules, chains and sets made again from their
// records (what their names resolved to is kept), and the taps on this
// bridge and every per-VM rule, chain and set of any other VM (one that
// stopped while no daemon ran) are removed. Without the bridge it does
// nothing.
func (n *Network) Sync(running []Attachment) (removed []string, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	br, err := netlink.LinkByName(n.cfg.Bridge)
	if err != nil || br.Attrs().Alias != n.alias() {
		return nil, nil // none yet, another daemon's, or not banger's at all
	}
	keepTap, keepID, keepKey := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, a := range running {
		keepTap[TapName(a.ID)], keepID[a.ID], keepKey[key(a.ID)] = true, true, true
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if _, tuntap := l.(*netlink.Tuntap); !tuntap || !strings.HasPrefix(a.Name, TapPrefix) {
			continue
		}
		id, ok := n.tapVM(l, br.Attrs().Index)
		switch {
		case !ok:
			continue // another daemon's, or not banger's at all
		case id == "" && keepTap[a.Name]:
			// A running VM's tap from before taps were marked: marked now.
			for _, r := range running {
				if TapName(r.ID) == a.Name {
					if err := netlink.LinkSetAlias(l, n.tapAlias(r.ID)); err != nil {
						return removed, fmt.Errorf("marking tap %s as vm %s's: %w", a.Name, r.ID, err)
					}
				}
			}
			continue
		case id != "" && keepID[id]:
			continue
		}
		if err := netlink.LinkDel(l); err != nil {
			return removed, fmt.Errorf("removing the leftover tap %s: %w", a.Name, err)
		}
		removed = append(removed, "tap "+a.Name)
	}
	c, err := nftables.New()
	if err != nil {
		return removed, fmt.Errorf("opening nftables: %w", err)
	}
	if err := n.ensureFirewall(c); err != nil {
		return removed, err
	}
	gone, err := n.removeAll(func(owner string) bool { return !keepID[owner] }, func(k string) bool { return !keepKey[k] })
	removed = append(removed, gone...)
	if err != nil {
		return removed, err
	}
	// The running VMs' rules, made again in one transaction (their own
	// chains are flushed by addVM): an older daemon's table, or one
	// changed by hand, is put right.
	if _, err := n.removeRules(c, func(owner string) bool { return keepID[owner] }); err != nil {
		return removed, err
	}
	for _, a := range running {
		if err := n.addVM(c, a); err != nil {
			return removed, err
		}
	}
	if err := c.Flush(); err != nil {
		return removed, fmt.Errorf("making the running VMs' nftables rules again: %w", err)
	}
	return removed, nil
}

const aliasPrefix = "banger "

func (n *Network) alias() string { return aliasPrefix + n.cfg.Owner }

// tapAliasPrefix starts the alias of every tap hostnet makes: then the
// VM's whole ID, then the bridge's alias (whose daemon made it).
const tapAliasPrefix = "banger tap "

func (n *Network) tapAlias(vmID string) string { return tapAliasPrefix + vmID + " " + n.alias() }

// ErrFull: the bridge network holds as many taps as it has addresses.
var ErrFull = errors.New("no room")

// tapVM says whether l is a tap this network may change, and whose:
// a tuntap owned by the taps' user, marked by this network (its VM's
// ID, then), or unmarked but on this network's bridge (made before taps
// were marked: ID ""), and on no other bridge.
func (n *Network) tapVM(l netlink.Link, bridgeIndex int) (id string, ok bool) {
	t, tuntap := l.(*netlink.Tuntap)
	if !tuntap || t.Owner != n.cfg.TapUser {
		return "", false
	}
	a := l.Attrs()
	if a.MasterIndex != 0 && a.MasterIndex != bridgeIndex {
		return "", false
	}
	if a.Alias == "" {
		return "", bridgeIndex != 0 && a.MasterIndex == bridgeIndex
	}
	rest, ok := strings.CutPrefix(a.Alias, tapAliasPrefix)
	id, owner, _ := strings.Cut(rest, " ")
	if !ok || owner != n.alias() || len(id) != 32 || TapName(id) != a.Name {
		return "", false
	}
	return id, true
}

// notOurs says why l, found by the name of vm vmID's tap, is not that
// VM's tap on this network ("": it is).
func (n *Network) notOurs(l netlink.Link, vmID string) string {
	brIndex := 0
	if br, err := netlink.LinkByName(n.cfg.Bridge); err == nil && br.Attrs().Alias == n.alias() {
		brIndex = br.Attrs().Index
	}
	id, ok := n.tapVM(l, brIndex)
	switch {
	case !ok:
		owner := -1
		if t, isTap := l.(*netlink.Tuntap); isTap {
			owner = int(t.Owner)
		}
		return fmt.Sprintf("a %s with alias %q, owner %d, master %d: not a tap of this network's", l.Type(), l.Attrs().Alias, owner, l.Attrs().MasterIndex)
	case id != "" && id != vmID:
		return "vm " + id + "'s tap"
	}
	return ""
}

// ownTaps lists the taps this network made (or, unmarked, holds on its
// bridge).
func (n *Network) ownTaps() ([]string, error) {
	brIndex := 0
	if br, err := netlink.LinkByName(n.cfg.Bridge); err == nil && br.Attrs().Alias == n.alias() {
		brIndex = br.Attrs().Index
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var taps []string
	for _, l := range links {
		if _, ok := n.tapVM(l, brIndex); ok && strings.HasPrefix(l.Attrs().Name, TapPrefix) {
			taps = append(taps, l.Attrs().Name)
		}
	}
	return taps, nil
}

// RangeSize is how many addresses VMs may lease on the bridge network p
// (RangeOf): the most taps and running VMs it holds.
func RangeSize(p netip.Prefix) int {
	return 1<<(32-p.Masked().Bits()) - 3 // less the network, the gateway and the broadcast addresses
}

// ensureBridge returns the bridge, made and given the gateway address if
// missing. A network that overlaps another interface's is refused: its
// VMs would shadow real hosts.
func (n *Network) ensureBridge() (netlink.Link, error) {
	gw := netip.PrefixFrom(n.Gateway(), n.cfg.Prefix.Bits())
	addrs, err := netlink.AddrList(nil, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	br, err := netlink.LinkByName(n.cfg.Bridge)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		br = nil
	case err != nil:
		return nil, fmt.Errorf("finding bridge %s: %w", n.cfg.Bridge, err)
	case br.Type() != "bridge":
		return nil, fmt.Errorf("interface %s is a %s, not a bridge; set network.bridge in config.toml to a free name", n.cfg.Bridge, br.Type())
	case br.Attrs().Alias != n.alias():
		owner := "something other than banger"
		if a := br.Attrs().Alias; strings.HasPrefix(a, aliasPrefix) {
			owner = "another banger daemon (" + strings.TrimPrefix(a, aliasPrefix) + ")"
		}
		return nil, fmt.Errorf("bridge %s belongs to %s; set network.bridge in config.toml to a free name", n.cfg.Bridge, owner)
	}
	hasGW := false
	for _, a := range addrs {
		p, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok || a.IPNet == nil {
			continue
		}
		bits, _ := a.Mask.Size()
		theirs := netip.PrefixFrom(p, bits)
		if br != nil && a.LinkIndex == br.Attrs().Index {
			hasGW = hasGW || theirs == gw
			continue
		}
		if theirs.Overlaps(n.cfg.Prefix) {
			name := fmt.Sprint(a.LinkIndex)
			if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			return nil, fmt.Errorf("the bridge network %s overlaps %s on %s; set network.cidr in config.toml to a free range", n.cfg.Prefix, theirs, name)
		}
	}
	if br == nil {
		// A MAC of its own: otherwise the bridge takes its lowest port's,
		// and a VM leaving changes it under the other guests' ARP caches.
		mac := make(net.HardwareAddr, 6)
		_, _ = rand.Read(mac)
		mac[0] = mac[0]&0xfc | 0x02 // unicast, locally administered
		br = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.cfg.Bridge, HardwareAddr: mac}}
		if err := netlink.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("creating bridge %s: %w", n.cfg.Bridge, err)
		}
		if br, err = netlink.LinkByName(n.cfg.Bridge); err != nil {
			return nil, fmt.Errorf("finding bridge %s: %w", n.cfg.Bridge, err)
		}
		if err := netlink.LinkSetAlias(br, n.alias()); err != nil {
			_ = netlink.LinkDel(br)
			return nil, fmt.Errorf("marking bridge %s as banger's: %w", n.cfg.Bridge, err)
		}
		n.cfg.Log.Info("bridge created", "bridge", n.cfg.Bridge, "gateway", gw)
	}
	if !hasGW {
		a, err := netlink.ParseAddr(gw.String())
		if err != nil {
			return nil, err
		}
		if err := netlink.AddrAdd(br, a); err != nil {
			return nil, fmt.Errorf("giving bridge %s the address %s: %w", n.cfg.Bridge, gw, err)
		}
	}
	if br.Attrs().Group != BridgeGroup {
		if err := netlink.LinkSetGroup(br, BridgeGroup); err != nil {
			return nil, fmt.Errorf("putting bridge %s in banger's interface group: %w", n.cfg.Bridge, err)
		}
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bringing bridge %s up: %w", n.cfg.Bridge, err)
	}
	return br, nil
}

// enableForwarding lets the kernel route, which NAT needs; like Docker,
// banger leaves it on. When it was off, the host routed nothing, so a
// rule keeps it routing nothing but banger's bridges' traffic.
func (n *Network) enableForwarding(c *nftables.Conn) error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := n.keepForwardingContained(c); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enabling IPv4 forwarding for NAT: %w", err)
	}
	n.cfg.Log.Info("IPv4 forwarding switched on; the host routes nothing else than its VMs' traffic")
	return nil
}

// Handover gives the bridge of another banger daemon, one from accepts
// by its owner, to cfg.Owner: what VMs left on it (taps, rules, chains,
// sets) is swept first. An install does it when the owner's helper takes
// over a root daemon's network whose VMs are all stopped; the firewall's
// tables stay in place all along, so forwarding stays contained. It
// reports whether there was such a bridge.
func Handover(cfg Config, from func(owner string) bool) (bool, error) {
	br, err := netlink.LinkByName(cfg.Bridge)
	if err != nil {
		return false, nil
	}
	alias := br.Attrs().Alias
	old, ok := strings.CutPrefix(alias, aliasPrefix)
	if br.Type() != "bridge" || !ok || old == cfg.Owner || !from(old) {
		return false, nil
	}
	prev := cfg
	prev.Owner = old
	n, err := New(prev)
	if err != nil {
		return false, err
	}
	if _, err := n.Sync(nil); err != nil {
		return false, fmt.Errorf("sweeping bridge %s: %w", cfg.Bridge, err)
	}
	if err := netlink.LinkSetAlias(br, aliasPrefix+cfg.Owner); err != nil {
		return false, fmt.Errorf("handing bridge %s over: %w", cfg.Bridge, err)
	}
	return true, nil
}
