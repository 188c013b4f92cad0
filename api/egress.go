package api

import "time"

// VMEgressParams are the params of MethodVMEgress.
type VMEgressParams struct {
	Name   string `json:"name"`
	Follow bool   `json:"follow,omitempty"` // keep sending what it tries
}

// Kinds of egress events.
const (
	EgressDNS     = "dns"     // a name asked of the daemon's DNS server
	EgressConnect = "connect" // a new connection (or datagram flow)
)

// Verdicts of egress events.
const (
	EgressAllowed = "allowed"
	EgressDenied  = "denied"
)

// Why an attempt was denied (EgressEvent.Reason).
const (
	ReasonHost      = "the host (only the daemon's DNS is open to VMs)"
	ReasonLinkLocal = "link-local (cloud metadata)"
	ReasonNATDeny   = "network.nat_deny"
	ReasonSandbox   = "no NAT (sandbox)"
	ReasonAllowList = "not on its allow-list"
	ReasonDenyRule  = "a deny rule of its list"
	ReasonUpstream  = "no upstream server answered"
	ReasonFirewall  = "its firewall could not take the answer"
)

// EgressEvent is one outbound attempt of a VM, as the host saw it: by
// its DNS server or its firewall, never as the guest tells it.
type EgressEvent struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`    // EgressDNS or EgressConnect
	Verdict string    `json:"verdict"` // EgressAllowed or EgressDenied
	// Reason says why an attempt was denied.
	Reason string `json:"reason,omitempty"`
	Proto  string `json:"proto,omitempty"` // tcp, udp, icmp, or a number
	Dest   string `json:"dest,omitempty"`  // the address it went to
	Port   int    `json:"port,omitempty"`
	// Name is the DNS question, or for a connection the name the VM
	// resolved its address from, when the daemon's DNS answered it.
	Name    string   `json:"name,omitempty"`
	Type    string   `json:"type,omitempty"`    // the question's type: A, AAAA, …
	Answers []string `json:"answers,omitempty"` // the addresses answered
}

// VMEgressSuggestResult answers MethodVMEgressSuggest.
type VMEgressSuggestResult struct {
	Name string `json:"name"`
	// Allow is the allow-list that would have allowed every connection
	// and name seen (`banger vm set NAME --allow RULE…`).
	Allow []string `json:"allow"`
	// Never lists what no allow-list opens (the host, link-local,
	// network.nat_deny), each with why.
	Never []string `json:"never,omitempty"`
}
