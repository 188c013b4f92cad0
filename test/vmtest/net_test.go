package vmtest

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/roottest"
	"github.com/bangerdev/banger/internal/sshkey"
	"github.com/bangerdev/banger/internal/vmm"
)

func userKey(t *testing.T) ssh.Signer {
	t.Helper()
	s, err := sshkey.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// freePort finds a loopback port for a forward.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (v *vm) info(t *testing.T) proto.InfoResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var info proto.InfoResult
	if err := v.client.Call(ctx, proto.MethodInfo, nil, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// sshOverAgent connects to the guest's SSH server through the agent link.
func (v *vm) sshOverAgent(t *testing.T, key ssh.Signer, hostKey ssh.PublicKey) *ssh.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := v.client.DialSSH(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, "agent", &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)}, HostKeyCallback: ssh.FixedHostKey(hostKey),
	})
	if err != nil {
		t.Fatalf("ssh over the agent channel: %v", err)
	}
	c := ssh.NewClient(sc, chans, reqs)
	t.Cleanup(func() { c.Close() })
	return c
}

// withOutside moves the test's thread (and so the VMM and passt it
// starts) into a network namespace of its own, whose only way out is a
// veth to a second namespace standing in for the internet: a web server
// at 198.51.100.2:8080 answering "hello from outside". Nothing leaves
// the two.
func withOutside(t *testing.T) string {
	t.Helper()
	roottest.Require(t, "it makes network namespaces")
	runtime.LockOSThread() // never unlocked: the thread ends with the test
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	var out netns.NsHandle
	var err error
	done := make(chan struct{})
	go func() { // a thread of its own makes the outside, then ends
		defer close(done)
		runtime.LockOSThread()
		out, err = netns.New()
	}()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	lo, _ := netlink.LinkByName("lo")
	must(netlink.LinkSetUp(lo))
	must(netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "outside0"}))
	peer, _ := netlink.LinkByName("outside0")
	must(netlink.LinkSetNsFd(peer, int(out)))
	up, _ := netlink.LinkByName("up0")
	a, _ := netlink.ParseAddr("198.51.100.1/24")
	must(netlink.AddrAdd(up, a))
	must(netlink.LinkSetUp(up))
	must(netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP("198.51.100.2")}))
	var ln net.Listener
	done = make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err = netns.Set(out); err != nil {
			return
		}
		l, _ := netlink.LinkByName("outside0")
		a, _ := netlink.ParseAddr("198.51.100.2/24")
		if err = netlink.AddrAdd(l, a); err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err == nil {
			ln, err = net.Listen("tcp", "198.51.100.2:8080")
		}
	}()
	<-done
	must(err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello from outside") }),
		ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://198.51.100.2:8080/"
}

// TestNetworkSSHAndVsock boots a guest on the user-mode network with NAT
// (passt) and checks what the agent set up from the host's parameters:
// address, route, resolver, hosts; the guest reaching the outside but
// not a service on the host's loopback (QEMU's own user networking maps
// it to 10.0.2.2); the agent's SSH server through the agent channel and
// through a forwarded port; and the agent's vsock listener, through vsock
// loopback.
func TestNetworkSSHAndVsock(t *testing.T) {
	outside := withOutside(t)
	key := userKey(t)
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	sshPort := freePort(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "hello from the host's loopback")
	}))
	defer web.Close()
	webPort := web.Listener.Addr().(*net.TCPAddr).Port

	v := startVM(t, opts{kernel: shared.Vmlinux, image: shared.Images["busybox"], wantAgent: true,
		params: proto.BootParams{Hostname: "netvm", SSHKeys: []ssh.PublicKey{key.PublicKey()}, Net: &proto.NetParams{
			MAC: mac, Address: netip.MustParsePrefix("10.0.2.15/24"), Gateway: netip.MustParseAddr("10.0.2.2"),
			DNS: []netip.Addr{netip.MustParseAddr("10.0.2.3")},
		}},
		nic: &vmm.NIC{User: true, Outbound: true, MAC: mac.String(), Forwards: []vmm.Forward{{Proto: "tcp", HostPort: sshPort, GuestPort: proto.SSHPort}}},
	})

	info := v.info(t)
	if len(info.Addresses) != 1 || info.Addresses[0] != "10.0.2.15/24" {
		t.Fatalf("guest addresses = %v", info.Addresses)
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(info.SSHHostKey))
	if err != nil {
		t.Fatalf("the agent's host key %q: %v", info.SSHHostKey, err)
	}

	out, code := v.exec(t, "cat", "/etc/resolv.conf", "/etc/hosts", "/etc/hostname")
	for _, want := range []string{"nameserver 10.0.2.3", "10.0.2.15\tnetvm", "127.0.0.1\tlocalhost", "netvm\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("guest /etc lacks %q (exit %d):\n%s", want, code, out)
		}
	}
	out, code = v.exec(t, "/bin/busybox", "wget", "-qO-", outside)
	if code != 0 || out != "hello from outside" {
		t.Fatalf("guest -> outside with NAT = %q (exit %d)", out, code)
	}
	// The host's loopback is not the guest's: not at the gateway, nor
	// anywhere else.
	for _, addr := range []string{"10.0.2.2", "127.0.0.1", "10.0.2.3"} {
		out, code = v.exec(t, "/bin/busybox", "timeout", "5", "/bin/busybox", "wget", "-qO-", fmt.Sprintf("http://%s:%d/", addr, webPort))
		if code == 0 || strings.Contains(out, "loopback") {
			t.Errorf("guest -> %s:%d reached the host's loopback: %q (exit %d)", addr, webPort, out, code)
		}
	}

	// SSH through the agent channel: a terminal session, then sftp.
	c := v.sshOverAgent(t, key, hostKey)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm", 33, 99, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	b, err := s.Output("/bin/busybox stty size; uname -n")
	if err != nil || !strings.Contains(string(b), "33 99") || !strings.Contains(string(b), "netvm") {
		t.Fatalf("ssh session with a terminal = %q, %v", b, err)
	}
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("0123456789"), 50000)
	f, err := sc.Create("/root-upload")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(payload); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sc.Close()
	out, code = v.exec(t, "/bin/busybox", "md5sum", "/root-upload")
	if code != 0 || !strings.HasPrefix(out, md5hex(payload)) {
		t.Fatalf("sftp upload: guest md5 %q, want %s", out, md5hex(payload))
	}

	// SSH over the guest network, through the forwarded port.
	nc, err := ssh.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", sshPort), &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)}, HostKeyCallback: ssh.FixedHostKey(hostKey), Timeout: time.Minute,
	})
	if err != nil {
		t.Fatalf("ssh over the network: %v", err)
	}
	defer nc.Close()
	s, err = nc.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var so bytes.Buffer
	s.Stdout = &so
	err = s.Run("echo $((40+2)); exit 9")
	var exit *ssh.ExitError
	if !errors.As(err, &exit) || exit.ExitStatus() != 9 || so.String() != "42\n" {
		t.Fatalf("ssh over the network = %q, %v", so.String(), err)
	}
	// A key banger did not authorise is refused.
	if c, err := ssh.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", sshPort), &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(userKey(t))}, HostKeyCallback: ssh.FixedHostKey(hostKey), Timeout: time.Minute,
	}); err == nil {
		c.Close()
		t.Fatal("an unknown key got in")
	}

	// The agent's vsock listener, from inside the guest.
	out, code = v.exec(t, "/proc/1/exe", "vsock-ping")
	if code != 0 || !strings.Contains(out, "agent answered over vsock 1:1024") {
		t.Fatalf("vsock-ping = %q (exit %d)", out, code)
	}
	v.shutdown(t)
}

// TestSSHWithoutShell: an image without a shell still takes ssh commands,
// as words, and refuses an interactive shell with the reason.
func TestSSHWithoutShell(t *testing.T) {
	key := userKey(t)
	v := startVM(t, opts{kernel: shared.Vmlinux, image: shared.Images["no-shell"], wantAgent: true,
		params: proto.BootParams{Hostname: "bare", SSHKeys: []ssh.PublicKey{key.PublicKey()}}})
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(v.info(t).SSHHostKey))
	if err != nil {
		t.Fatal(err)
	}
	c := v.sshOverAgent(t, key, hostKey)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Output("/busybox echo no shell needed")
	if err != nil || string(b) != "no shell needed\n" {
		t.Fatalf("ssh command without a shell = %q, %v", b, err)
	}
	s, err = c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	s.Stderr = &stderr
	s.Stdin = strings.NewReader("")
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	err = s.Wait()
	var exit *ssh.ExitError
	if !errors.As(err, &exit) || exit.ExitStatus() != 127 || !strings.Contains(stderr.String(), "no shell") {
		t.Fatalf("shell without one = %v, %q", err, stderr.String())
	}
	v.shutdown(t)
}

func md5hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}
