package hostnet

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The firewall is two tables named after the bridge. K is a VM's key
// (the first 12 characters of its ID), X its address, G the NFLOG group:
//
//	table ip banger-<bridge> {
//	  chain prerouting {   # filter, hook prerouting, before any DNAT (mangle)
//	    iifname <br> fib daddr type local jump to-host
//	    iifname <br> fib daddr type local drop   # every host address, before DNAT can hide it
//	  }
//	  chain input {        # filter, hook input: broadcast and multicast too
//	    iifname <br> jump to-host
//	    iifname <br> drop
//	  }
//	  chain to-host {
//	    ct state established,related accept      # replies to what the host opened
//	    ip daddr <gateway> udp dport 53 accept   # the daemon's DNS, nothing else
//	    ip saddr X goto no-K                     # per VM: logged
//	  }
//	  chain forward {      # filter, hook forward
//	    meta iifgroup != <group> meta oifgroup != <group> drop   # only if banger switched forwarding on
//	    iifname <br> oifname <br> jump isolation
//	    iifname <br> oifname <br> accept         # VM to VM
//	    oifname <br> ct state established,related accept
//	    oifname <br> drop                        # nothing comes in unasked
//	    iifname <br> ct state established,related accept
//	    iifname <br> jump egress
//	    iifname <br> drop
//	  }
//	  chain isolation { ip saddr X drop; ip daddr X drop }   # per VM with --isolate
//	  chain egress { ip saddr X goto vm-K }                  # per VM
//	  chain vm-K {         # per VM: its policy
//	    ip daddr 169.254.0.0/16 goto no-K; ip daddr <each of network.nat_deny> goto no-K
//	    goto ok-K                                # NAT
//	    meta l4proto . ip daddr . th dport @p-K goto ok-K    # allow-list: names, with ports
//	    ip daddr @a-K goto ok-K                              # names, any port
//	    [meta l4proto tcp|udp] ip daddr <prefix> [th dport <port>] goto ok-K   # address rules
//	    goto no-K                                # the sandbox; what the list does not name
//	  }
//	  chain ok-K { limit 20/s burst 50 log group G prefix "bg a <ID>"; accept }
//	  chain no-K { limit 20/s burst 50 log group G prefix "bg d <ID>"; drop }
//	  set a-K { ipv4_addr; timeout }; set p-K { inet_proto . ipv4_addr . inet_service; timeout }
//	  chain postrouting {  # nat, hook postrouting
//	    ip saddr X oifname != <br> masquerade    # per VM with NAT
//	  }
//	}
//	table bridge banger-<bridge> {
//	  chain prerouting {   # frames as they leave a VM's tap: no spoofing
//	    iifname <tap> ether saddr != <mac> drop; … ip saddr != X drop; … arp saddr ip != X drop
//	    iifname <tap> ether type != ip ether type != arp drop   # no IPv6, VLAN, other protocols
//	  }
//	  chain forward { iifname <tap> drop; oifname <tap> drop }   # per VM with --isolate
//	}
//
// Per-VM rules carry the comment "banger vm=<ID>"; per-VM chains and sets
// are named by K. Detach and Sync find them so.
const (
	ownerPrefix = "banger vm="
	// layoutTag marks the fixed rules of this layout: a table without it
	// is an older banger's, rebuilt.
	layoutTag = "banger v2"
	// forwardingTag marks the rule that keeps the host from routing
	// between its other interfaces, added when banger switched IPv4
	// forwarding on.
	forwardingTag = "banger forwarding"

	chainPrerouting  = "prerouting"
	chainInput       = "input"
	chainToHost      = "to-host"
	chainForward     = "forward"
	chainIsolation   = "isolation"
	chainEgress      = "egress"
	chainPostrouting = "postrouting"

	// BridgeGroup is the interface group of banger's bridges, so the
	// forwarding rule tells them from the host's other interfaces.
	BridgeGroup = 0xba26e7

	// The per-VM log budget: new connections logged per second (and a
	// burst); past it they are decided but not logged.
	logRate, logBurst = 20, 50
	// maxResolved bounds the addresses (and address-port pairs) a VM's
	// allow-list sets hold.
	maxResolved = 4096
)

// linkLocal is never reached by a VM: cloud metadata services live there.
var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

// Log prefixes: what the firewall did with a VM's new connection.
const (
	logAllowed = "bg a "
	logDenied  = "bg d "
)

// TableName is the nftables table (family ip and bridge) of a bridge.
func TableName(bridge string) string { return "banger-" + bridge }

// LogGroup is the NFLOG group a bridge's firewall logs to: fixed per
// bridge, so a restarted daemon listens where the rules it finds log.
func LogGroup(bridge string) uint16 {
	h := fnv.New32a()
	h.Write([]byte(bridge))
	return uint16(1000 + h.Sum32()%60000)
}

// key is a VM's short name in chain and set names.
func key(vmID string) string {
	if len(vmID) > 12 {
		return vmID[:12]
	}
	return vmID
}

func (n *Network) table() *nftables.Table {
	return &nftables.Table{Name: TableName(n.cfg.Bridge), Family: nftables.TableFamilyIPv4}
}

func (n *Network) bridgeTable() *nftables.Table {
	return &nftables.Table{Name: TableName(n.cfg.Bridge), Family: nftables.TableFamilyBridge}
}

func base(t *nftables.Table, name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept}
}

func regular(t *nftables.Table, name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: t}
}

// fixedChains are the chains made once, in creation order.
func (n *Network) fixedChains() []*nftables.Chain {
	t, b := n.table(), n.bridgeTable()
	return []*nftables.Chain{
		regular(t, chainToHost), regular(t, chainIsolation), regular(t, chainEgress),
		base(t, chainPrerouting, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityMangle),
		base(t, chainInput, nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter),
		base(t, chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter),
		base(t, chainPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
		base(b, chainPrerouting, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRef(-200)),
		base(b, chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter),
	}
}

// ownedChains are the fixed chains that hold per-VM rules.
func (n *Network) ownedChains() []*nftables.Chain {
	t, b := n.table(), n.bridgeTable()
	return []*nftables.Chain{regular(t, chainToHost), regular(t, chainIsolation), regular(t, chainEgress),
		regular(t, chainPostrouting), regular(b, chainPrerouting), regular(b, chainForward)}
}

// ensureFirewall makes the tables, their chains and fixed rules, unless
// they are there in this layout; an older layout is removed first (the
// rules of running VMs are then made again by Sync or Attach).
func (n *Network) ensureFirewall(c *nftables.Conn) error {
	t := n.table()
	rules, err := c.GetRules(t, regular(t, chainForward))
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("reading the nftables table %s: %w", t.Name, err)
	}
	for _, r := range rules {
		if s, _ := userdata.GetString(r.UserData, userdata.TypeComment); s == layoutTag {
			return nil
		}
	}
	if len(rules) > 0 {
		n.cfg.Log.Info("replacing an older banger's nftables tables", "table", t.Name)
		c.DelTable(t)
		c.DelTable(n.bridgeTable())
		if err := c.Flush(); err != nil {
			return fmt.Errorf("removing the older nftables tables %s: %w", t.Name, err)
		}
	}
	c.AddTable(t)
	c.AddTable(n.bridgeTable())
	for _, ch := range n.fixedChains() {
		c.AddChain(ch)
	}
	br := n.cfg.Bridge
	fromBr := ifname(expr.MetaKeyIIFNAME, br, expr.CmpOpEq)
	toBr := ifname(expr.MetaKeyOIFNAME, br, expr.CmpOpEq)
	local := append(slices.Clone(fromBr), &expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)})
	gw := n.Gateway().As4()
	fixed := map[string][][]expr.Any{
		chainPrerouting: {
			join(local, jump(chainToHost)),
			join(local, drop()),
		},
		chainInput: {
			join(fromBr, jump(chainToHost)),
			join(fromBr, drop()),
		},
		chainToHost: {
			join(ctEstablished(), accept()),
			join(daddr(netip.PrefixFrom(netip.AddrFrom4(gw), 32)), l4proto(unix.IPPROTO_UDP), dport(53), accept()),
		},
		chainForward: {
			join(fromBr, toBr, jump(chainIsolation)),
			join(fromBr, toBr, accept()),
			join(toBr, ctEstablished(), accept()),
			join(toBr, drop()),
			join(fromBr, ctEstablished(), accept()),
			join(fromBr, jump(chainEgress)),
			join(fromBr, drop()),
		},
	}
	for _, ch := range n.fixedChains() {
		if ch.Table.Family != nftables.TableFamilyIPv4 {
			continue
		}
		for _, exprs := range fixed[ch.Name] {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: comment(layoutTag)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("creating the nftables tables %s: %w", t.Name, err)
	}
	return nil
}

// keepForwardingContained adds, once, the rule that drops what the host
// would route between interfaces other than banger's bridges: forwarding
// was off until banger switched it on, so nothing else was routed.
func (n *Network) keepForwardingContained(c *nftables.Conn) error {
	t := n.table()
	fwd := regular(t, chainForward)
	rules, err := c.GetRules(t, fwd)
	if err != nil {
		return fmt.Errorf("reading the forward chain: %w", err)
	}
	for _, r := range rules {
		if s, _ := userdata.GetString(r.UserData, userdata.TypeComment); s == forwardingTag {
			return nil
		}
	}
	group := binaryutil.NativeEndian.PutUint32(BridgeGroup)
	c.InsertRule(&nftables.Rule{Table: t, Chain: fwd, UserData: comment(forwardingTag), Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFGROUP, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: group},
		&expr.Meta{Key: expr.MetaKeyOIFGROUP, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: group},
		drop(),
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("adding the forwarding rule: %w", err)
	}
	return nil
}

// vmChains are a VM's own chains: its policy, and the logged verdicts.
func (n *Network) vmChains(vmID string) (policy, ok, no *nftables.Chain) {
	t, k := n.table(), key(vmID)
	return regular(t, "vm-"+k), regular(t, "ok-"+k), regular(t, "no-"+k)
}

// vmSets are the addresses a VM's allow-list names resolved to: any
// port, and protocol-address-port triples.
func (n *Network) vmSets(vmID string) (anyPort, ports *nftables.Set) {
	t, k := n.table(), key(vmID)
	return &nftables.Set{Table: t, Name: "a-" + k, KeyType: nftables.TypeIPAddr, HasTimeout: true, Size: maxResolved},
		&nftables.Set{Table: t, Name: "p-" + k, HasTimeout: true, Size: maxResolved, Concatenation: true,
			KeyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeIPAddr, nftables.TypeInetService)}
}

// addVM queues every rule, chain and set of the VM a (sets are kept if
// they exist); the caller flushes.
func (n *Network) addVM(c *nftables.Conn, a Attachment) error {
	if len(a.MAC) != 6 {
		return fmt.Errorf("attaching vm %s: MAC %q is not an Ethernet address", a.ID, a.MAC)
	}
	t, bt := n.table(), n.bridgeTable()
	owner := comment(ownerPrefix + a.ID)
	add := func(tbl *nftables.Table, chain string, exprs ...[]expr.Any) {
		for _, e := range exprs {
			c.AddRule(&nftables.Rule{Table: tbl, Chain: regular(tbl, chain), Exprs: e, UserData: owner})
		}
	}
	// addrRule sends what r matches (its prefix, on its ports) on to.
	addrRule := func(chain string, r allowlist.Rule, to string) {
		if len(r.Ports) == 0 {
			add(t, chain, join(daddr(r.Prefix), goTo(to)))
			return
		}
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			for _, p := range r.Ports {
				add(t, chain, join(daddr(r.Prefix), l4proto(proto), dport(p), goTo(to)))
			}
		}
	}
	tap := ifname(expr.MetaKeyIIFNAME, TapName(a.ID), expr.CmpOpEq)
	addr := netip.PrefixFrom(a.Addr, 32)
	a4 := a.Addr.As4()
	add(bt, chainPrerouting,
		join(tap, neq(expr.PayloadBaseLLHeader, 6, a.MAC), drop()),
		join(tap, etherType(expr.CmpOpEq, unix.ETH_P_IP), neq(expr.PayloadBaseNetworkHeader, 12, a4[:]), drop()),
		join(tap, etherType(expr.CmpOpEq, unix.ETH_P_ARP), neq(expr.PayloadBaseNetworkHeader, 14, a4[:]), drop()),
		// Nothing but IPv4 and ARP: the firewall is IPv4's, so IPv6 (or
		// a VLAN tag) would pass it by.
		join(tap, etherType(expr.CmpOpNeq, unix.ETH_P_IP), etherType(expr.CmpOpNeq, unix.ETH_P_ARP), drop()))
	if a.Policy.Isolate {
		add(bt, chainForward, join(tap, drop()), join(ifname(expr.MetaKeyOIFNAME, TapName(a.ID), expr.CmpOpEq), drop()))
		add(t, chainIsolation, join(saddr(addr), drop()), join(daddr(addr), drop()))
	}

	policy, ok, no := n.vmChains(a.ID)
	for _, ch := range []*nftables.Chain{policy, ok, no} {
		c.AddChain(ch)
		c.FlushChain(ch)
	}
	group := LogGroup(n.cfg.Bridge)
	add(t, ok.Name, logged(group, logAllowed+a.ID), []expr.Any{accept()})
	add(t, no.Name, logged(group, logDenied+a.ID), []expr.Any{drop()})
	add(t, chainToHost, join(saddr(addr), goTo(no.Name)))
	add(t, chainEgress, join(saddr(addr), goTo(policy.Name)))

	for _, p := range append([]netip.Prefix{linkLocal}, n.cfg.Deny...) {
		add(t, policy.Name, join(daddr(p), goTo(no.Name)))
	}
	anyPort, ports := n.vmSets(a.ID)
	switch {
	case !a.Policy.NAT:
	case len(a.Policy.Allow) == 0:
		add(t, policy.Name, []expr.Any{goTo(ok.Name)})
	default:
		for _, s := range []*nftables.Set{anyPort, ports} {
			if err := c.AddSet(s, nil); err != nil {
				return fmt.Errorf("adding the set %s: %w", s.Name, err)
			}
		}
		add(t, policy.Name,
			[]expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 8},
				&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Lookup{SourceRegister: 8, SetName: ports.Name, SetID: ports.ID},
				goTo(ok.Name),
			},
			[]expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Lookup{SourceRegister: 1, SetName: anyPort.Name, SetID: anyPort.ID},
				goTo(ok.Name),
			})
		// What the list allows first: in an open list those are the
		// exceptions to its deny rules, which come next, and then
		// everything else is allowed.
		for _, r := range a.Policy.Allow.Addrs() {
			addrRule(policy.Name, r, ok.Name)
		}
		if a.Policy.Allow.Open() {
			for _, r := range a.Policy.Allow.Denies() {
				addrRule(policy.Name, r, no.Name)
			}
			add(t, policy.Name, []expr.Any{goTo(ok.Name)})
		}
	}
	add(t, policy.Name, []expr.Any{goTo(no.Name)})
	if a.Policy.NAT {
		add(t, chainPostrouting, join(saddr(addr), ifname(expr.MetaKeyOIFNAME, n.cfg.Bridge, expr.CmpOpNeq), []expr.Any{&expr.Masq{}}))
	}
	return nil
}

// removeRules queues the deletion of the per-VM rules in the fixed
// chains whose owner match says to, and returns those owners.
func (n *Network) removeRules(c *nftables.Conn, match func(owner string) bool) ([]string, error) {
	var owners []string
	for _, ch := range n.ownedChains() {
		rules, err := c.GetRules(ch.Table, ch)
		if errors.Is(err, unix.ENOENT) {
			continue // no table yet: nothing to remove
		}
		if err != nil {
			return nil, fmt.Errorf("listing nftables chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			if owner, ok := RuleOwner(r); ok && match(owner) {
				if err := c.DelRule(r); err != nil {
					return nil, fmt.Errorf("removing an nftables rule of vm %s: %w", owner, err)
				}
				if !slices.Contains(owners, owner) {
					owners = append(owners, owner)
				}
			}
		}
	}
	return owners, nil
}

// removeVMObjects queues the deletion of the per-VM chains and sets whose
// key match says to (after the rules that jump to them), and lists them.
func (n *Network) removeVMObjects(c *nftables.Conn, match func(key string) bool) ([]string, error) {
	t := n.table()
	var removed []string
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	var doomed []*nftables.Chain
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		if k, ok := vmObject(ch.Name, "vm-", "ok-", "no-"); ok && match(k) {
			c.FlushChain(ch)
			doomed = append(doomed, ch)
		}
	}
	for _, ch := range doomed {
		c.DelChain(ch)
		removed = append(removed, "nftables chain "+ch.Name)
	}
	all, err := c.GetSets(t)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("listing nftables sets: %w", err)
	}
	for _, s := range all {
		if k, ok := vmObject(s.Name, "a-", "p-"); ok && match(k) {
			c.DelSet(s)
			removed = append(removed, "nftables set "+s.Name)
		}
	}
	return removed, nil
}

// vmObject is the VM key in a per-VM chain's or set's name.
func vmObject(name string, prefixes ...string) (string, bool) {
	for _, p := range prefixes {
		if k, ok := strings.CutPrefix(name, p); ok && len(k) == 12 {
			return k, true
		}
	}
	return "", false
}

// RuleOwner is the VM ID a per-VM rule belongs to.
func RuleOwner(r *nftables.Rule) (string, bool) {
	s, ok := userdata.GetString(r.UserData, userdata.TypeComment)
	if !ok || !strings.HasPrefix(s, ownerPrefix) {
		return "", false
	}
	return strings.TrimPrefix(s, ownerPrefix), true
}

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

func join(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch p := p.(type) {
		case []expr.Any:
			out = append(out, p...)
		case expr.Any:
			out = append(out, p)
		}
	}
	return out
}

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }
func drop() expr.Any   { return &expr.Verdict{Kind: expr.VerdictDrop} }
func jump(chain string) expr.Any {
	return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}
}
func goTo(chain string) expr.Any { return &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain} }

// logged sends the packet's headers to the NFLOG group with prefix,
// within the rule's own rate.
func logged(group uint16, prefix string) []expr.Any {
	return []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: logRate, Unit: expr.LimitTimeSecond, Burst: logBurst},
		&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_SNAPLEN,
			Group: group, Snaplen: snaplen, Data: []byte(prefix)},
	}
}

// ifname matches an interface name as nft does: NUL-padded to 16 bytes.
func ifname(key expr.MetaKey, name string, op expr.CmpOp) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: b}}
}

func saddr(p netip.Prefix) []expr.Any { return prefixMatch(12, p) }
func daddr(p netip.Prefix) []expr.Any { return prefixMatch(16, p) }

// prefixMatch matches the IPv4 address at offset of the network header
// against p.
func prefixMatch(offset uint32, p netip.Prefix) []expr.Any {
	a := p.Masked().Addr().As4()
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}}
	if p.Bits() < 32 {
		mask := net.CIDRMask(p.Bits(), 32)
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)})
	}
	return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]})
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}}}
}

func dport(p uint16) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)}}
}

func etherType(op expr.CmpOp, t uint16) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: op, Register: 1, Data: binaryutil.BigEndian.PutUint16(t)}}
}

func neq(base expr.PayloadBase, off uint32, data []byte) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: uint32(len(data))},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: data}}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}
