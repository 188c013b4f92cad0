package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/test/networld"
)

// vmEgress: what each network mode lets a VM reach, in a world of the
// scenario's own (networld): an outside with web servers on two
// documentation addresses, a fake metadata service and a DNS server
// answering good.example and other.example; the host's own services on
// every address and on its loopback. A sandbox reaches none of them,
// IPv6 included, but the daemon's DNS; a NAT VM the outside only; an
// allow-listed VM its list only, changed at once by vm set; vm egress
// shows the attempts and --suggest the list that allows them; the policy
// holds across a daemon killed with SIGKILL; an open list (a deny rule)
// reaches all but what it denies; a delete leaves no rule,
// set or log; a user-mode VM with NAT cannot reach the host's loopback.
func vmEgress(t *T) {
	o := t.World()
	for _, a := range []string{networld.Web, networld.Other} {
		for _, p := range []string{"80", "443"} {
			if err := o.Serve(o.NS, a+":"+p, networld.Hello(a+":"+p)); err != nil {
				t.Fatalf("%v", err)
			}
		}
	}
	if err := o.Serve(o.NS, networld.Metadata+":80", networld.Hello("metadata")); err != nil {
		t.Fatalf("%v", err)
	}
	if err := o.DNS(map[string]netip.Addr{"good.example": netip.MustParseAddr(networld.Web), "other.example": netip.MustParseAddr(networld.Other)}); err != nil {
		t.Fatalf("%v", err)
	}
	t.UseResolver(o)
	// The host's services: on every address (the gateway, another one)
	// and on its loopback.
	const hostOther = "192.0.2.1"
	t.inNetns(t.Netns(), func() {
		lo, _ := netlink.LinkByName("lo")
		a, _ := netlink.ParseAddr(hostOther + "/32")
		if err := netlink.AddrAdd(lo, a); err != nil {
			t.Fatalf("%v", err)
		}
	})
	for addr, name := range map[string]string{"0.0.0.0:8080": "the host", "127.0.0.1:8081": "the host's loopback"} {
		if err := o.Serve(t.Netns(), addr, networld.Hello(name)); err != nil {
			t.Fatalf("%v", err)
		}
	}
	ref := t.bridgeBusybox("10.79.0.0/24")
	const table = "banger-banger0"

	small := []string{"--image", ref, "--cpus", "1", "--memory", "256M"}
	var s, n, l api.VM
	t.JSON(&s, append([]string{"vm", "create", "--name", "s"}, small...)...)
	t.JSON(&n, append([]string{"vm", "create", "--name", "n", "--nat"}, small...)...)
	t.JSON(&l, append([]string{"vm", "create", "--name", "l", "--allow", "good.example:80"}, small...)...)
	if s.Egress != api.EgressSandbox || n.Egress != api.EgressNAT || l.Egress != api.EgressAllowList || !slices.Equal(l.Allow, []string{"good.example:80"}) {
		t.Fatalf("egress: s %s, n %s, l %s %v", s.Egress, n.Egress, l.Egress, l.Allow)
	}
	t.Contains("vm show l", t.Must("vm", "show", "l").stdout, "allow-list (1 rule)", "good.example:80")

	web := func(host, port string) string { return "http://" + host + ":" + port + "/" }
	hostSide := []string{web("10.79.0.1", "8080"), web(hostOther, "8080"), web(networld.Uplink, "8080"), web(networld.Metadata, "80")}
	t.probe("the sandbox", "s", nil, append(hostSide, web(networld.Web, "80"), web(networld.Other, "80"), web("good.example", "80")))
	t.probe("the NAT VM", "n", []string{web(networld.Other, "443")}, hostSide)
	t.probe("the NAT VM by name", "n", []string{web("good.example", "80")}, nil)
	t.probe("the allow-listed VM", "l", []string{web("good.example", "80")},
		append(hostSide, web("good.example", "443"), web(networld.Other, "80"), web(networld.Web, "443"), web("other.example", "80")))
	// DNS: the sandbox gets VM names only; the list's names only.
	t.lookup("s", "n.vm", true)
	t.lookup("s", "good.example", false)
	t.lookup("n", "other.example", true)
	if out := t.lookup("l", "other.example", false); !strings.Contains(out, "NXDOMAIN") {
		t.Fatalf("a name off the list: %s; want NXDOMAIN", out)
	}
	// Nothing but IPv4 and ARP leaves a tap: an all-nodes ping is
	// answered by the guest alone, not by the host nor another VM.
	for _, vm := range []string{"s", "n"} {
		if r := t.Banger("vm", "exec", vm, "--", "/bin/busybox", "ping", "-6", "-c", "2", "-W", "2", "ff02::1%eth0"); strings.Contains(r.stdout, "DUP") {
			t.Fatalf("%s reached the host or another VM over IPv6: %s", vm, r)
		}
	}

	// What l tried, as the host saw it.
	events := t.egress("l")
	for _, want := range []string{
		"connect allowed tcp " + networld.Web + ":80 good.example",
		"connect denied tcp " + networld.Other + ":80  " + api.ReasonAllowList,
		"connect denied tcp " + networld.Web + ":443 good.example " + api.ReasonAllowList,
		"connect denied tcp 10.79.0.1:8080  " + api.ReasonHost,
		"connect denied tcp " + networld.Metadata + ":80  " + api.ReasonLinkLocal,
		"dns denied  :0 other.example " + api.ReasonAllowList,
		"dns allowed  :0 good.example",
	} {
		if !slices.Contains(events, want) {
			t.Fatalf("vm egress l lacks %q:\n%s", want, strings.Join(events, "\n"))
		}
	}
	t.Contains("vm egress l", t.Must("vm", "egress", "l").stdout, "denied", "other.example", "not on its allow-list")

	// A NAT VM's run, locked down to what it did.
	var sug api.VMEgressSuggestResult
	t.JSON(&sug, "vm", "egress", "n", "--suggest")
	if !slices.Equal(sug.Allow, []string{networld.Other + ":443", "good.example:80"}) || len(sug.Never) < 4 {
		t.Fatalf("suggested for n: %+v", sug)
	}
	set := []string{"vm", "set", "n"}
	for _, r := range sug.Allow {
		set = append(set, "--allow", r)
	}
	t.Must(set...)
	t.probe("the NAT VM, locked down", "n", []string{web("good.example", "80"), web(networld.Other, "443")},
		[]string{web(networld.Other, "80"), web(networld.Web, "443"), web("other.example", "443")})

	// vm set on a running VM takes effect at once.
	t.Must("vm", "set", "l", "--allow", "other.example:443")
	t.probe("the allow-listed VM, changed", "l", []string{web("other.example", "443")}, []string{web(networld.Web, "80"), web("good.example", "80")})

	// The daemon dies hard and comes back: the next daemon makes the
	// firewall again from the store, the same as it was.
	before := t.RuleComments(table)
	t.KillDaemon()
	t.StartDaemon()
	if after := t.RuleComments(table); !slices.Equal(after, before) {
		t.Fatalf("rules after a restart:\n%v\nbefore:\n%v", after, before)
	}
	t.probe("the allow-listed VM after a restart", "l", []string{web("other.example", "443")}, []string{web(networld.Web, "80"), web(networld.Other, "80")})
	t.probe("the sandbox after a restart", "s", nil, []string{web("10.79.0.1", "8080"), web(networld.Web, "80")})

	// An open list (E2B's denyOut): everything but its deny rule, a name
	// on it an exception; link-local and the host stay closed.
	t.Must("vm", "set", "n", "--allow", "!"+networld.Other, "--allow", "other.example:443")
	t.probe("the open-listed VM", "n", []string{web(networld.Web, "80"), web("good.example", "443"), web("other.example", "443")},
		append(hostSide, web(networld.Other, "80")))
	t.lookup("n", "good.example", true)
	if !slices.ContainsFunc(t.egress("n"), func(e string) bool {
		return strings.HasPrefix(e, "connect denied tcp "+networld.Other+":80 ") && strings.HasSuffix(e, api.ReasonDenyRule)
	}) {
		t.Fatalf("vm egress n does not say a deny rule denied %s:80:\n%s", networld.Other, strings.Join(t.egress("n"), "\n"))
	}

	// User-mode with NAT (passt): out, but never to the host's loopback.
	t.MustFail(1, "--allow needs the bridge network", append([]string{"vm", "create", "--name", "x", "--network", "user", "--allow", "good.example"}, small...)...)
	t.Must(append([]string{"vm", "create", "--name", "u", "--network", "user", "--nat"}, small...)...)
	t.probe("the user-mode VM", "u", []string{web(networld.Web, "8080")}, []string{web("10.0.2.2", "8081"), web("127.0.0.1", "8081")})
	t.MustFail(1, "only bridge VMs have an egress log", "vm", "egress", "u")

	// Deleted, a VM leaves no rule, chain, set or log.
	logs, _ := filepath.Glob(filepath.Join(t.Home(), "state", "vms", "*", "egress.log"))
	if len(logs) != 3 {
		t.Fatalf("egress logs %v; want one per bridge VM", logs)
	}
	t.Must("vm", "delete", "--force", "s", "n", "l", "u")
	if got := t.perVM(table); len(got) != 0 {
		t.Fatalf("left after delete: %v", got)
	}
	if logs, _ := filepath.Glob(filepath.Join(t.Home(), "state", "vms", "*")); len(logs) != 0 {
		t.Fatalf("VM state left after delete: %v", logs)
	}
	if taps := t.Taps(); len(taps) != 0 {
		t.Fatalf("taps left after delete: %v", taps)
	}
}

// bridgeBusybox starts the scenario's daemon on the bridge network cidr
// (its VMs' default), with the test kernel, and returns the busybox
// image's reference in the scenario's registry.
func (t *T) bridgeBusybox(cidr string) string {
	cfg := "[network]\nmode = \"bridge\"\ncidr = \"" + cidr + "\"\n"
	if err := os.WriteFile(filepath.Join(t.Home(), "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	ref := t.bootable() + "/smoke/busybox:bridge"
	t.Push(ref, t.busyboxImage())
	return ref
}

// probe fetches every URL from the VM at once (4 s each) and fails the
// scenario unless exactly those in ok answer.
func (t *T) probe(who, vm string, ok, no []string) {
	script := "for u in " + strings.Join(append(slices.Clone(ok), no...), " ") + `; do
  (if /bin/busybox timeout 4 /bin/busybox wget -qO- "$u" >/dev/null 2>&1; then echo "OK $u"; else echo "NO $u"; fi) &
done; wait`
	r := t.Must("vm", "exec", vm, "--", "/bin/busybox", "sh", "-c", script)
	for _, u := range ok {
		if !strings.Contains(r.stdout, "OK "+u) {
			t.Fatalf("%s does not reach %s:\n%s", who, u, r.stdout)
		}
	}
	for _, u := range no {
		if !strings.Contains(r.stdout, "NO "+u) {
			t.Fatalf("%s reaches %s:\n%s", who, u, r.stdout)
		}
	}
}

// lookup resolves name in the VM through its resolver (the daemon's DNS).
func (t *T) lookup(vm, name string, want bool) string {
	r := t.Banger("vm", "exec", vm, "--", "/bin/busybox", "nslookup", name)
	if (r.code == 0) != want {
		t.Fatalf("%s resolving %s: %s; want success %v", vm, name, r, want)
	}
	return r.stdout + r.stderr
}

// egress is `vm egress NAME --json`, one line an event:
// "KIND VERDICT PROTO DEST:PORT NAME REASON".
func (t *T) egress(vm string) []string {
	var res struct {
		Events []api.EgressEvent `json:"events"`
	}
	r := t.Must("vm", "egress", vm, "--json")
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	var out []string
	for _, e := range res.Events {
		out = append(out, strings.TrimSpace(e.Kind+" "+e.Verdict+" "+e.Proto+" "+e.Dest+":"+strconv.Itoa(e.Port)+" "+e.Name+" "+e.Reason))
	}
	return out
}

// perVM lists the per-VM rules, chains and sets of the scenario's
// tables.
func (t *T) perVM(table string) []string {
	var out []string
	for _, c := range append(t.RuleComments(table), t.RuleCommentsOf(nftables.TableFamilyBridge, table)...) {
		if strings.Contains(c, "banger vm=") {
			out = append(out, c)
		}
	}
	t.inNetns(t.netns, func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatalf("%v", err)
		}
		chains, _ := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
		for _, ch := range chains {
			if ch.Table.Name == table && len(ch.Name) == 15 && ch.Name[2] == '-' {
				out = append(out, "chain "+ch.Name)
			}
		}
		sets, _ := c.GetSets(&nftables.Table{Name: table, Family: nftables.TableFamilyIPv4})
		for _, s := range sets {
			out = append(out, "set "+s.Name)
		}
	})
	sort.Strings(out)
	return out
}
