package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The firewall is one table, named after the bridge:
//
//	table ip banger-<bridge> {
//	  chain forward {   # filter, hook forward
//	    ct state established,related accept
//	    iifname <bridge> oifname <bridge> accept   # VM to VM
//	    iifname <bridge> jump nat-vms
//	    iifname <bridge> drop                      # the sandbox
//	    oifname <bridge> drop                      # nothing comes in
//	  }
//	  chain nat-vms { ip saddr <addr> accept  # one per VM with NAT }
//	  chain postrouting { # nat, hook postrouting
//	    ip saddr <addr> oifname != <bridge> masquerade  # one per VM with NAT
//	  }
//	}
//
//	table bridge banger-<bridge> {
//	  chain prerouting {  # filter, hook prerouting: frames from each tap
//	    iifname <tap> ether saddr != <mac> drop            # one set per VM
//	    iifname <tap> ether type ip ip saddr != <addr> drop
//	    iifname <tap> ether type arp arp saddr ip != <addr> drop
//	    iifname <tap> ether type != ip ether type != arp drop  # no IPv6, VLAN, other protocols
//	  }
//	}
//
// A per-VM rule carries the comment "banger vm=<ID>", which is how Detach
// and Sweep find it.
const (
	chainForward     = "forward"
	chainNATVMs      = "nat-vms"
	chainPostrouting = "postrouting"
	ownerPrefix      = "banger vm="
)

// TableName is the nftables table (family ip) of a bridge.
func TableName(bridge string) string { return "banger-" + bridge }

func (n *Network) table() *nftables.Table {
	return &nftables.Table{Name: TableName(n.cfg.Bridge), Family: nftables.TableFamilyIPv4}
}

func (n *Network) bridgeTable() *nftables.Table {
	return &nftables.Table{Name: TableName(n.cfg.Bridge), Family: nftables.TableFamilyBridge}
}

func (n *Network) prerouting() *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: "prerouting", Table: n.bridgeTable(), Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-200), Policy: &accept}
}

// ownedChains are the chains holding per-VM rules.
func (n *Network) ownedChains() []*nftables.Chain {
	_, natVMs, post := n.chains()
	return []*nftables.Chain{natVMs, post, n.prerouting()}
}

func (n *Network) chains() (forward, natVMs, post *nftables.Chain) {
	t := n.table()
	accept := nftables.ChainPolicyAccept
	forward = &nftables.Chain{Name: chainForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept}
	natVMs = &nftables.Chain{Name: chainNATVMs, Table: t}
	post = &nftables.Chain{Name: chainPostrouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept}
	return forward, natVMs, post
}

// ensureFirewall makes the tables and chains (adding an existing one
// changes nothing) and the forward chain's fixed rules unless it has them.
func (n *Network) ensureFirewall() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	forward, natVMs, post := n.chains()
	rules, _ := c.GetRules(n.table(), forward)
	c.AddTable(n.table())
	for _, ch := range []*nftables.Chain{forward, natVMs, post} {
		c.AddChain(ch)
	}
	c.AddTable(n.bridgeTable())
	c.AddChain(n.prerouting())
	if len(rules) == 0 {
		br := n.cfg.Bridge
		for _, exprs := range [][]expr.Any{
			append(ctEstablished(), accept()),
			append(append(ifname(expr.MetaKeyIIFNAME, br, expr.CmpOpEq), ifname(expr.MetaKeyOIFNAME, br, expr.CmpOpEq)...), accept()),
			append(ifname(expr.MetaKeyIIFNAME, br, expr.CmpOpEq), &expr.Verdict{Kind: expr.VerdictJump, Chain: chainNATVMs}),
			append(ifname(expr.MetaKeyIIFNAME, br, expr.CmpOpEq), &expr.Verdict{Kind: expr.VerdictDrop}),
			append(ifname(expr.MetaKeyOIFNAME, br, expr.CmpOpEq), &expr.Verdict{Kind: expr.VerdictDrop}),
		} {
			c.AddRule(&nftables.Rule{Table: n.table(), Chain: forward, Exprs: exprs, UserData: comment("banger")})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("creating the nftables tables %s: %w", TableName(n.cfg.Bridge), err)
	}
	return nil
}

// addNAT lets addr out, masqueraded, by two rules owned by vmID.
func (n *Network) addNAT(vmID string, addr netip.Addr) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	_, natVMs, post := n.chains()
	owner := comment(ownerPrefix + vmID)
	c.AddRule(&nftables.Rule{Table: n.table(), Chain: natVMs, UserData: owner,
		Exprs: append(saddr(addr), accept())})
	c.AddRule(&nftables.Rule{Table: n.table(), Chain: post, UserData: owner,
		Exprs: append(append(saddr(addr), ifname(expr.MetaKeyOIFNAME, n.cfg.Bridge, expr.CmpOpNeq)...), &expr.Masq{})})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("adding the NAT rules of vm %s: %w", vmID, err)
	}
	return nil
}

// addAntiSpoof keeps frames from tap to the VM's own MAC and address.
func (n *Network) addAntiSpoof(vmID, tap string, mac net.HardwareAddr, addr netip.Addr) error {
	if len(mac) != 6 {
		return fmt.Errorf("attaching vm %s: MAC %q is not an Ethernet address", vmID, mac)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	a := addr.As4()
	fromTap := ifname(expr.MetaKeyIIFNAME, tap, expr.CmpOpEq)
	etherTypeIs := func(op expr.CmpOp, t uint16) []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: op, Register: 1, Data: binaryutil.BigEndian.PutUint16(t)}}
	}
	etherType := func(t uint16) []expr.Any { return etherTypeIs(expr.CmpOpEq, t) }
	neq := func(base expr.PayloadBase, off uint32, data []byte) []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: uint32(len(data))},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: data}}
	}
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	for _, match := range [][]expr.Any{
		neq(expr.PayloadBaseLLHeader, 6, mac),                                              // ether saddr
		append(etherType(unix.ETH_P_IP), neq(expr.PayloadBaseNetworkHeader, 12, a[:])...),  // ip saddr
		append(etherType(unix.ETH_P_ARP), neq(expr.PayloadBaseNetworkHeader, 14, a[:])...), // arp saddr ip
		// Nothing but IPv4 and ARP: the firewall is IPv4's, so IPv6 (or a
		// VLAN tag) would pass it by.
		append(etherTypeIs(expr.CmpOpNeq, unix.ETH_P_IP), etherTypeIs(expr.CmpOpNeq, unix.ETH_P_ARP)...),
	} {
		c.AddRule(&nftables.Rule{Table: n.bridgeTable(), Chain: n.prerouting(), UserData: comment(ownerPrefix + vmID),
			Exprs: append(append(slices.Clone(fromTap), match...), drop)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("adding the anti-spoofing rules of vm %s: %w", vmID, err)
	}
	return nil
}

// deleteRules removes the per-VM rules whose owner match says to.
func (n *Network) deleteRules(match func(owner string) bool) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	var doomed int
	for _, ch := range n.ownedChains() {
		rules, err := c.GetRules(ch.Table, ch)
		if errors.Is(err, unix.ENOENT) {
			continue // no table yet: nothing to remove
		}
		if err != nil {
			return fmt.Errorf("listing nftables chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			if owner, ok := RuleOwner(r); ok && match(owner) {
				if err := c.DelRule(r); err != nil {
					return fmt.Errorf("removing an nftables rule of vm %s: %w", owner, err)
				}
				doomed++
			}
		}
	}
	if doomed == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("removing nftables rules: %w", err)
	}
	return nil
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

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

// ifname matches an interface name as nft does: NUL-padded to 16 bytes.
func ifname(key expr.MetaKey, name string, op expr.CmpOp) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: b}}
}

func saddr(a netip.Addr) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b[:]},
	}
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
