// Package allowlist is a VM's egress allow-list: rules a user writes
// (`--allow github.com:443`, `*.npmjs.org`, `10.1.0.0/16`, `192.0.2.7:53`,
// `!10.0.0.0/8`), parsed into a canonical form, and the questions the
// firewall and the DNS server ask of them: which ports a name may be
// reached on, which address rules the firewall holds itself.
//
// A list is closed (only what it names) unless it holds a deny rule
// ("!" and an address or CIDR): then it is open, everything but what
// its deny rules name, and its other rules are exceptions to them —
// E2B's denyOut with allowOut taking precedence.
package allowlist

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Limits on one list: the firewall holds a rule per address rule and
// port, so a list stays small.
const (
	MaxRules = 256
	MaxPorts = 32 // ports of one rule
)

// Rule is one entry: a domain name (exact, or "*." and a domain for every
// name below it) or an IPv4 prefix, and the ports it opens (none: all);
// or, denying, an IPv4 prefix and the ports it closes.
type Rule struct {
	Name   string       // lower case, no trailing dot; "" for an address rule
	Prefix netip.Prefix // an address is a /32
	Ports  []uint16     // sorted, distinct
	Deny   bool         // "!": closes rather than opens; never a name
}

// ErrRule wraps every parse error.
var ErrRule = errors.New("invalid allow rule")

// Parse reads one rule: NAME, *.NAME, ADDRESS or CIDR, each optionally
// followed by :PORT or :PORT,PORT,...; or !ADDRESS or !CIDR, optionally
// with ports, to deny.
func Parse(s string) (Rule, error) {
	fail := func(why string) (Rule, error) {
		return Rule{}, fmt.Errorf("%w %q: %s; write a name (github.com), a wildcard (*.npmjs.org), an IPv4 address or CIDR, each optionally with :PORT[,PORT], or !ADDRESS or !CIDR to deny", ErrRule, s, why)
	}
	s = strings.TrimSpace(s)
	if strings.Count(s, ":") > 1 {
		return fail("only IPv4: a VM has no IPv6 route")
	}
	var r Rule
	rest, deny := strings.CutPrefix(s, "!")
	r.Deny = deny
	host, ports, hasPorts := strings.Cut(strings.TrimSpace(rest), ":")
	if hasPorts {
		seen := map[uint16]bool{}
		for p := range strings.SplitSeq(ports, ",") {
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil || n == 0 {
				return fail(fmt.Sprintf("port %q is not a number from 1 to 65535", p))
			}
			if !seen[uint16(n)] {
				seen[uint16(n)] = true
				r.Ports = append(r.Ports, uint16(n))
			}
		}
		if len(r.Ports) > MaxPorts {
			return fail(fmt.Sprintf("more than %d ports", MaxPorts))
		}
		slices.Sort(r.Ports)
	}
	if host == "" {
		return fail("nothing before the ports")
	}
	if strings.ContainsAny(host, "/") || isAddr(host) {
		p, err := netip.ParsePrefix(host)
		if err != nil {
			a, aerr := netip.ParseAddr(host)
			if aerr != nil {
				return fail("not an address or CIDR")
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.Addr().Is4() {
			return fail("only IPv4: a VM has no IPv6 route")
		}
		r.Prefix = p.Masked()
		return r, nil
	}
	if r.Deny {
		// A name's addresses are known only once it is resolved, and
		// a name has others: denying one would not deny it.
		return fail("a deny rule names an address or CIDR, not a name")
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if name == "*" {
		return fail("a wildcard for every name is NAT: use --nat")
	}
	if err := checkName(strings.TrimPrefix(name, "*.")); err != nil {
		return fail(err.Error())
	}
	if name == "vm" || strings.HasSuffix(name, ".vm") {
		return fail("NAME.vm is the VMs' own zone, always answered")
	}
	r.Name = name
	return r, nil
}

// isAddr says whether s looks like an IPv4 address rather than a name:
// all digits and dots (a name's last label is never numeric).
func isAddr(s string) bool { return strings.Trim(s, "0123456789.") == "" }

// checkName accepts a DNS name of letters, digits, '-' and '_' labels.
func checkName(name string) error {
	if len(name) > 253 {
		return errors.New("a name is at most 253 characters")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("every label of a name has 1 to 63 characters")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is not allowed in a name", c)
			}
		}
	}
	return nil
}

// String is the rule's canonical form, which Parse reads back.
func (r Rule) String() string {
	var b strings.Builder
	if r.Deny {
		b.WriteByte('!')
	}
	if r.Name != "" {
		b.WriteString(r.Name)
	} else if r.Prefix.IsSingleIP() {
		b.WriteString(r.Prefix.Addr().String())
	} else {
		b.WriteString(r.Prefix.String())
	}
	for i, p := range r.Ports {
		b.WriteByte(map[bool]byte{true: ':', false: ','}[i == 0])
		b.WriteString(strconv.Itoa(int(p)))
	}
	return b.String()
}

// MatchName says whether name (any case, trailing dot or not) is the
// rule's, or below its wildcard; the wildcard's own domain is not.
func (r Rule) MatchName(name string) bool {
	if r.Name == "" {
		return false
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if suffix, ok := strings.CutPrefix(r.Name, "*"); ok {
		return len(name) > len(suffix) && strings.HasSuffix(name, suffix)
	}
	return name == r.Name
}

// List is a VM's allow-list, canonical: rules in the order given, each
// once.
type List []Rule

// ParseList reads rules, dropping repeats.
func ParseList(rules []string) (List, error) {
	var l List
	seen := map[string]bool{}
	for _, s := range rules {
		r, err := Parse(s)
		if err != nil {
			return nil, err
		}
		if k := r.String(); !seen[k] {
			seen[k] = true
			l = append(l, r)
		}
	}
	if len(l) > MaxRules {
		return nil, fmt.Errorf("%w: %d rules; a list holds at most %d", ErrRule, len(l), MaxRules)
	}
	return l, nil
}

// Strings is the list in canonical form.
func (l List) Strings() []string {
	out := make([]string, len(l))
	for i, r := range l {
		out[i] = r.String()
	}
	return out
}

// Ports says whether a name may be resolved, and on which ports its
// addresses may then be reached: every port when a matching rule names
// none, else the union of the matching rules' ports.
func (l List) Ports(name string) (ports []uint16, anyPort, ok bool) {
	for _, r := range l {
		if !r.MatchName(name) {
			continue
		}
		ok = true
		if len(r.Ports) == 0 {
			anyPort = true
		}
		ports = append(ports, r.Ports...)
	}
	if anyPort {
		return nil, true, true
	}
	slices.Sort(ports)
	return slices.Compact(ports), false, ok
}

// Addrs are the address rules that allow, which the firewall holds
// itself.
func (l List) Addrs() List {
	var out List
	for _, r := range l {
		if r.Name == "" && !r.Deny {
			out = append(out, r)
		}
	}
	return out
}

// Denies are the deny rules, which the firewall holds after the rules
// that allow.
func (l List) Denies() List {
	var out List
	for _, r := range l {
		if r.Deny {
			out = append(out, r)
		}
	}
	return out
}

// Open says whether the list lets a VM reach everything its deny rules
// do not name (it has one), rather than only what it names.
func (l List) Open() bool { return slices.ContainsFunc(l, func(r Rule) bool { return r.Deny }) }

// Denied says whether a connection to addr on port proto/port is closed
// by a deny rule and opened by no address rule. Names the VM resolved
// are the firewall's to know; this is for saying why it was denied.
func (l List) Denied(addr netip.Addr, port uint16) bool {
	match := func(r Rule) bool {
		return r.Name == "" && r.Prefix.Contains(addr) && (len(r.Ports) == 0 || slices.Contains(r.Ports, port))
	}
	return slices.ContainsFunc(l.Denies(), match) && !slices.ContainsFunc(l.Addrs(), match)
}
