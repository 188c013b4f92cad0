//go:build linux

package guest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// bringUpNetwork raises loopback and, when the host passed one, the NIC
// with n's MAC: its address, default route and resolver. It returns the
// addresses configured.
func bringUpNetwork(n *proto.NetParams, hostname string) ([]string, error) {
	if err := linkUp("lo"); err != nil {
		return nil, fmt.Errorf("raising loopback: %w", err)
	}
	hostAddr := "127.0.1.1"
	var addrs []string
	if n != nil {
		link, err := linkByMAC(n.MAC, 10*time.Second)
		if err != nil {
			return nil, err
		}
		ipnet := &net.IPNet{IP: n.Address.Addr().AsSlice(), Mask: net.CIDRMask(n.Address.Bits(), n.Address.Addr().BitLen())}
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipnet}); err != nil {
			return nil, fmt.Errorf("setting %s on %s: %w", n.Address, link.Attrs().Name, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("raising %s: %w", link.Attrs().Name, err)
		}
		if n.Gateway.IsValid() {
			route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: n.Gateway.AsSlice()}
			if err := netlink.RouteReplace(route); err != nil {
				return nil, fmt.Errorf("adding the default route via %s: %w", n.Gateway, err)
			}
		}
		if len(n.DNS) > 0 {
			var b strings.Builder
			b.WriteString("# written by banger's agent at boot\n")
			for _, d := range n.DNS {
				fmt.Fprintf(&b, "nameserver %s\n", d)
			}
			if err := provide("/etc/resolv.conf", b.String()); err != nil {
				return nil, err
			}
		}
		hostAddr = n.Address.Addr().String()
		addrs = append(addrs, n.Address.String())
	}
	if hostname != "" {
		if err := writeHosts(hostname, hostAddr); err != nil {
			return nil, err
		}
	}
	return addrs, nil
}

// linkUp raises an interface with one ioctl: cheaper at boot than a
// netlink round of link dumps.
func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// linkByMAC waits for the NIC with mac: its driver may bind a moment
// after the modules load.
func linkByMAC(mac net.HardwareAddr, limit time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(limit)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("listing network interfaces: %w", err)
		}
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == mac.String() {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no network interface with MAC %s after %s", mac, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeHosts makes hostname resolve in the guest, as a Docker container's
// /etc/hosts does, keeping the image's own entries.
func writeHosts(hostname, addr string) error {
	old, err := os.ReadFile("/etc/hosts")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var b strings.Builder
	hasLocalhost := false
	for _, line := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		if strings.HasSuffix(line, "# banger") || line == "" {
			continue
		}
		if f := strings.Fields(line); len(f) > 1 && !strings.HasPrefix(f[0], "#") {
			for _, name := range f[1:] {
				hasLocalhost = hasLocalhost || name == "localhost"
			}
		}
		b.WriteString(line + "\n")
	}
	if !hasLocalhost {
		b.WriteString("127.0.0.1\tlocalhost # banger\n::1\tlocalhost # banger\n")
	}
	fmt.Fprintf(&b, "%s\t%s # banger\n", addr, hostname)
	if err := provide("/etc/hosts", b.String()); err != nil {
		return err
	}
	return provide("/etc/hostname", hostname+"\n")
}

// runDir holds the files provide bind-mounts into /etc.
const runDir = "/run/banger"

// provide puts content at path as Docker does for a container's hosts,
// hostname and resolv.conf: a file on tmpfs bind-mounted over the
// image's, which keeps the VM's disk untouched (no overlay copy-up and
// its sync on every boot). Where the image has no regular file to mount
// over, it writes one.
func provide(path, content string) error {
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() {
		return replaceFile(path, content)
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}
	src := filepath.Join(runDir, filepath.Base(path))
	if _, err := os.Stat(src); err == nil {
		// Provided before (a restored guest taking a new identity): the
		// mount shows the file, rewritten in place.
		return os.WriteFile(src, []byte(content), 0o644)
	}
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		return err
	}
	if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s: %w", path, err)
	}
	return nil
}

// replaceFile writes a regular file at path, replacing whatever is there:
// images often ship /etc/resolv.conf as a link into a resolver that does
// not run in a banger guest.
func replaceFile(path, content string) error {
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return err
	}
	tmp := path + ".banger-tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
