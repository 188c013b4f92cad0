//go:build linux

package guest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/sshkey"
)

// maxEntropy bounds what the host may hand the random pool at once
// (RNDADDENTROPY takes at most a page).
const maxEntropy = 512

// identify makes a guest restored from a saved state its VM's: the
// clock and the random pool first (what follows draws from them), then
// the machine-id, hostname, NIC and SSH keys, the host key new.
func (g *guest) identify(p proto.IdentityParams) (proto.IdentityResult, error) {
	var r proto.IdentityResult
	bp, err := proto.ParseBootParams(p.Boot)
	if err != nil {
		return r, err
	}
	if p.MachineID != "" && !proto.ValidMachineID(p.MachineID) {
		return r, fmt.Errorf("machine id %q is not 32 hex digits", p.MachineID)
	}
	if len(p.Entropy) < 32 || len(p.Entropy) > maxEntropy {
		return r, fmt.Errorf("%d bytes of entropy: the host gives 32 to %d", len(p.Entropy), maxEntropy)
	}
	if p.UnixNano > 0 {
		ts := unix.NsecToTimespec(p.UnixNano)
		if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
			return r, fmt.Errorf("setting the clock: %w", err)
		}
	}
	if err := reseed(p.Entropy); err != nil {
		return r, err
	}
	if p.MachineID != "" {
		if err := provide("/etc/machine-id", p.MachineID+"\n"); err != nil {
			return r, fmt.Errorf("writing the machine id: %w", err)
		}
	}
	if bp.Hostname != "" {
		if err := unix.Sethostname([]byte(bp.Hostname)); err != nil {
			return r, fmt.Errorf("setting the hostname: %w", err)
		}
	}
	if bp.Net != nil {
		if err := renameNIC(bp.Net); err != nil {
			return r, err
		}
	}
	addrs, err := bringUpNetwork(bp.Net, bp.Hostname)
	if err != nil {
		return r, err
	}
	// On the console, which starts empty for a restored VM: how its
	// kernel booted (once, for the saved state), and that it was restored.
	printTimings(g.timings)
	fmt.Fprintf(os.Stderr, "banger-agent: restored from a saved state as %q\n", bp.Hostname)
	<-g.sshReady
	g.mu.Lock()
	defer g.mu.Unlock()
	g.params.Hostname, g.params.SSHKeys, g.params.Net, g.params.MachineID = bp.Hostname, bp.SSHKeys, bp.Net, p.MachineID
	g.addrs = addrs
	if g.sshSrv == nil {
		return r, nil
	}
	hk := g.sshSigner
	if p.NewHostKey {
		if hk, err = sshkey.Create(hostKeyPath); err != nil {
			return r, fmt.Errorf("making a new SSH host key: %w", err)
		}
	}
	g.sshSrv.Reconfigure(hk, bp.SSHKeys)
	g.sshSigner = hk
	g.hostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk.PublicKey())))
	r.SSHHostKey = g.hostKey
	return r, nil
}

// reseed mixes b into the kernel's random pool, credited, and reseeds
// its generator at once: a restored guest's pool is its template's, and
// without this every clone would draw the same numbers until the
// kernel reseeds on its own.
func reseed(b []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseeding the random pool: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	req := make([]byte, 8+len(b))
	*(*int32)(unsafe.Pointer(&req[0])) = int32(len(b) * 8)
	*(*int32)(unsafe.Pointer(&req[4])) = int32(len(b))
	copy(req[8:], b)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		return fmt.Errorf("reseeding the random pool: RNDADDENTROPY: %w", e)
	}
	// Kernels before 4.17 have no RNDRESEEDCRNG: the credited entropy
	// above reaches their generator at its next reseed.
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 && !errors.Is(e, unix.EINVAL) && !errors.Is(e, unix.ENOTTY) {
		return fmt.Errorf("reseeding the random pool: RNDRESEEDCRNG: %w", e)
	}
	return nil
}

// renameNIC gives the guest's one NIC the VM's MAC: a restored guest's
// NIC has its template's (or its original's, for a fork), and the
// host's rules pass only the VM's own. Its old addresses go.
func renameNIC(n *proto.NetParams) error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("listing network interfaces: %w", err)
	}
	var nic netlink.Link
	for _, l := range links {
		if a := l.Attrs(); l.Type() == "device" && len(a.HardwareAddr) == 6 && a.Flags&net.FlagLoopback == 0 {
			if nic != nil {
				return errors.New("more than one network interface: which is the VM's is unclear")
			}
			nic = l
		}
	}
	if nic == nil {
		return errors.New("no network interface to give the VM's MAC")
	}
	if nic.Attrs().HardwareAddr.String() == n.MAC.String() {
		return nil // a checkpoint of this very VM
	}
	addrs, _ := netlink.AddrList(nic, netlink.FAMILY_ALL)
	for _, a := range addrs {
		_ = netlink.AddrDel(nic, &a)
	}
	if err := netlink.LinkSetHardwareAddr(nic, n.MAC); err != nil {
		return fmt.Errorf("setting the MAC %s: %w", n.MAC, err)
	}
	return nil
}
