package nethelper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/roottest"
)

const (
	vmA   = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	macA  = "52:54:00:00:00:0a"
	addrA = "10.98.0.2"
)

// TestMain lets the test binary stand in for the helper (a process of
// its own, in a network namespace of its own: every thread of a helper
// acts on its namespace) and for the owner's daemon (run as the owner,
// it asks the helper what the helper test wants asked).
func TestMain(m *testing.M) {
	if socket := os.Getenv("NETHELPER_TEST_HELPER"); socket != "" {
		os.Exit(helperProcess(socket))
	}
	if socket := os.Getenv("NETHELPER_TEST_CLIENT"); socket != "" {
		os.Exit(ownerClient(socket))
	}
	os.Exit(m.Run())
}

// helperProcess serves the owner NETHELPER_TEST_OWNER (uid:gid) on
// socket, logging to stderr, until killed.
func helperProcess(socket string) int {
	var uid, gid int
	if _, err := fmt.Sscanf(os.Getenv("NETHELPER_TEST_OWNER"), "%d:%d", &uid, &gid); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lo, _ := netlink.LinkByName("lo")
	_ = netlink.LinkSetUp(lo)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err == nil {
		err = os.Chown(socket, uid, -1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	prefix := netip.MustParsePrefix("10.98.0.0/24")
	n, err := hostnet.New(hostnet.Config{Bridge: "bghelp0", Prefix: prefix, Owner: "helper test", TapUser: uint32(uid), TapGroup: uint32(gid)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s := &Server{Net: n, Bridge: "bghelp0", Prefix: prefix, Owner: uid, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	if err := s.Serve(context.Background(), ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// ownerClient makes the owner daemon's calls, one line of outcome each.
func ownerClient(socket string) int {
	ctx := context.Background()
	prefix := netip.MustParsePrefix("10.98.0.0/24")
	c, err := NewClient(ctx, socket, prefix, nil)
	if err != nil {
		fmt.Println("connect:", err)
		return 1
	}
	say := func(what string, err error) {
		var e *Error
		switch {
		case err == nil:
			fmt.Println(what + ": ok")
		case errors.As(err, &e) && e.Invalid:
			fmt.Println(what + ": refused: " + e.Message)
		default:
			fmt.Println(what + ": failed: " + err.Error())
		}
	}
	mac, _ := net.ParseMAC(macA)
	list, _ := allowlist.ParseList([]string{"example.com:443"})
	tap, err := c.Attach(hostnet.Attachment{ID: vmA, MAC: mac, Addr: netip.MustParseAddr(addrA), Policy: hostnet.Policy{NAT: true, Allow: list}})
	say("attach "+tap, err)
	dns, err := c.DNSSocket(netip.MustParseAddrPort("10.98.0.1:53"))
	if err == nil {
		say("dns_socket "+dns.LocalAddr().String(), nil)
		dns.Close()
	} else {
		say("dns_socket", err)
	}
	say("watch", c.Watch(ctx, func(hostnet.Attempt) {}))
	for range MaxWatches - 1 {
		_ = c.Watch(ctx, func(hostnet.Attempt) {})
	}
	say("a watcher past the cap", c.Watch(ctx, func(hostnet.Attempt) {}))
	// Connections that send nothing hold the helper's slots (until its
	// read deadline): past the cap one more is refused by name, the held
	// ones go on. The watchers hold slots too, for as long as they last,
	// and the helper admits in its own time: so more are held until a
	// call is refused, within a deadline (never, were there no cap).
	var held []net.Conn
	capErr := c.call(ctx, OpStatus, nil, nil)
	for deadline := time.Now().Add(10 * time.Second); !errors.Is(capErr, ErrRefused) && time.Now().Before(deadline); {
		if len(held) < MaxConns {
			if h, err := c.dial(ctx); err == nil {
				held = append(held, h)
			}
		} else {
			time.Sleep(10 * time.Millisecond)
		}
		capErr = c.call(ctx, OpStatus, nil, nil)
	}
	say("a connection past the cap", capErr)
	for _, h := range held {
		h.Close()
	}
	for deadline := time.Now().Add(10 * time.Second); c.call(ctx, OpStatus, nil, nil) != nil && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	say("allow_resolved", c.AllowResolved(vmA, []netip.Addr{netip.MustParseAddr("192.0.2.7")}, nil, time.Minute))
	// What a compromised daemon could send: each refused by name.
	raw := func(what, op string, params any) {
		var out json.RawMessage
		say(what, c.call(ctx, op, params, &out))
	}
	raw("a foreign interface", OpAttach, map[string]any{"id": vmA, "mac": macA, "addr": addrA, "tap": "eth0"})
	raw("a path", OpAttach, map[string]any{"id": vmA, "mac": macA, "addr": addrA, "path": "/etc/passwd"})
	raw("an address outside", OpAttach, Attachment{ID: vmA, MAC: macA, Addr: "10.99.0.2"})
	raw("the gateway", OpAttach, Attachment{ID: vmA, MAC: macA, Addr: "10.98.0.1"})
	raw("an id that climbs", OpDetach, VMRef{ID: "../../../../etc/passwd"})
	raw("a multicast MAC", OpAttach, Attachment{ID: vmA, MAC: "01:00:5e:00:00:01", Addr: addrA})
	raw("a list without NAT", OpSetPolicy, Attachment{ID: vmA, MAC: macA, Addr: addrA, Allow: []string{"github.com"}})
	raw("a bad rule", OpSetPolicy, Attachment{ID: vmA, MAC: macA, Addr: addrA, NAT: true, Allow: []string{"github.com:http"}})
	raw("a TTL of a year", OpAllowResolved, ResolvedParams{ID: vmA, Addrs: []string{"192.0.2.7"}, TTLSeconds: 365 * 86400})
	raw("an unknown operation", "exec", map[string]any{"argv": []string{"/bin/sh"}})
	raw("a sync of more VMs than addresses", OpSync, SyncParams{Running: make([]Attachment, 254)})
	say("detach", c.Detach(vmA))
	return 0
}

// TestHelper runs the helper as root in a network namespace of its own,
// and its client as a throwaway owner user: the owner's calls work (a
// tap the owner may open, the DNS socket handed over); anyone else, and
// every bad argument, is refused by name.
func TestHelper(t *testing.T) {
	roottest.Require(t, "it makes a user, a namespace, a bridge and taps")
	owner := throwawayUser(t)
	dir, err := os.MkdirTemp("", "nethelper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the owner reaches the socket; others only traverse
		t.Fatal(err)
	}
	self, err := os.ReadFile(os.Args[0]) // go test's own directory is root's alone
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "nethelper.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "helper.sock")
	logFile, err := os.Create(filepath.Join(dir, "helper.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	logged := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }
	helper := exec.Command(bin, "-test.run=^$")
	helper.Env = append(os.Environ(), "NETHELPER_TEST_HELPER="+socket, fmt.Sprintf("NETHELPER_TEST_OWNER=%d:%d", owner.UID, owner.GID))
	helper.Stdout, helper.Stderr = logFile, logFile
	helper.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() }) // its namespace goes with it
	// Listening, not only bound: a socket file exists between the two,
	// and a client that met that refusal took the helper for not up yet.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the helper did not listen:\n%s", logged())
		}
	}
	prefix := netip.MustParsePrefix("10.98.0.0/24")
	ctx := context.Background()

	// Root is not the owner: refused, by uid.
	if _, err := NewClient(ctx, socket, prefix, nil); err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "uid 0 may not use the network helper") {
		t.Fatalf("root's call: %v", err)
	}

	// The owner, in a process of its own, so the kernel vouches for its
	// uid.
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "NETHELPER_TEST_CLIENT="+socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(owner.UID), Gid: uint32(owner.GID)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the owner's client: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{
		"attach bg-aaaaaaaaaaaa: ok",
		"dns_socket 10.98.0.1:53: ok",
		"watch: ok",
		"a watcher past the cap: refused: 4 watchers of the firewall's log already",
		"a connection past the cap: refused: 32 connections at once already",
		"allow_resolved: ok",
		"a foreign interface: refused: attach: json: unknown field \"tap\"",
		"a path: refused: attach: json: unknown field \"path\"",
		"an address outside: refused: vm " + vmA + ": address \"10.99.0.2\" is not one a VM may have",
		"the gateway: refused: vm " + vmA + ": address \"10.98.0.1\"",
		"an id that climbs: refused: VM ID \"../../../../etc/passwd\"",
		"a multicast MAC: refused: vm " + vmA + ": MAC \"01:00:5e:00:00:01\"",
		"a list without NAT: refused: vm " + vmA + ": an allow-list without NAT",
		"a bad rule: refused: vm " + vmA + ": invalid allow rule",
		"a TTL of a year: refused: vm " + vmA + ": a TTL of 31536000 s",
		"an unknown operation: refused: no operation \"exec\"; the helper does status, attach",
		"a sync of more VMs than addresses: refused: sync: 254 running VMs, more than the 253 addresses of 10.98.0.0/24",
		"detach: ok",
	}
	if len(lines) != len(want) {
		t.Fatalf("the owner's client said:\n%s", out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("call %d: %q; want it to start %q", i, lines[i], w)
		}
	}
	// The bridge is in the helper's namespace, not this one, and the tap
	// is gone with its rules.
	if _, err := netlink.LinkByName("bghelp0"); err == nil {
		t.Error("the helper's bridge is in the test's namespace")
	}
	ns, err := netns.GetFromPid(helper.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	if _, err := nh.LinkByName("bghelp0"); err != nil {
		t.Errorf("no bridge in the helper's namespace: %v", err)
	}
	if _, err := nh.LinkByName(hostnet.TapName(vmA)); err == nil {
		t.Error("detach left the tap")
	}
	// Every request is logged with its caller.
	for _, w := range []string{"caller_uid=0", "caller_uid=" + strconv.Itoa(owner.UID), "op=attach", "op=exec"} {
		if !strings.Contains(logged(), w) {
			t.Errorf("the helper's log lacks %q:\n%s", w, logged())
		}
	}
}

// TestTapOwner: a tap made for the owner can be opened by the owner's
// VMM, which is not root.
func TestTapOwner(t *testing.T) {
	roottest.Require(t, "it makes a user, a namespace and a tap")
	owner := throwawayUser(t)
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	n, err := hostnet.New(hostnet.Config{Bridge: "bgown0", Prefix: netip.MustParsePrefix("10.97.0.0/24"), Owner: "test",
		TapUser: uint32(owner.UID), TapGroup: uint32(owner.GID)})
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC(macA)
	tap, err := n.Attach(hostnet.Attachment{ID: vmA, MAC: mac, Addr: netip.MustParseAddr("10.97.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	l, err := netlink.LinkByName(tap)
	if err != nil {
		t.Fatal(err)
	}
	if tt, ok := l.(*netlink.Tuntap); !ok || tt.Owner != uint32(owner.UID) {
		t.Fatalf("tap %s: %+v; want it owned by uid %d", tap, l, owner.UID)
	}
}

// throwawayUser makes a system user for the test, removed after it.
func throwawayUser(t *testing.T) roottest.User {
	t.Helper()
	u, remove, err := roottest.AddUser("bgt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	return u
}
