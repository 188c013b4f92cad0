package qemu

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/vmm"
)

// A user-mode guest with NAT goes through passt, not QEMU's own stack:
// QEMU's user networking maps its gateway, 10.0.2.2, to the host's
// loopback and has no option to stop it, so every localhost service
// (another VM's forwards included) would be the guest's. passt does the
// same translation from the host's sockets, but with --no-map-gw the
// gateway is only a gateway.
const passtSocket = "passt.sock"

// passtArgs is passt's command line for a VM whose runtime directory is
// dir: in the foreground, for one QEMU (it exits with it), IPv4 only,
// the guest's addresses as banger's boot parameters give them, DNS at
// 10.0.2.3 sent to the host's resolver, forwards on the host's
// loopback.
func passtArgs(dir string, n *vmm.NIC, uid, gid int) []string {
	args := []string{"--foreground", "--one-off", "--ipv4-only",
		"--socket", filepath.Join(dir, passtSocket), "--log-file", filepath.Join(dir, "passt.log"),
		"--address", "10.0.2.15", "--netmask", "24", "--gateway", "10.0.2.2", "--no-map-gw",
		"--dns-forward", "10.0.2.3", "--no-dhcp-search"}
	if uid == 0 {
		// As root passt would drop to nobody before binding its socket
		// in the daemon's private directory; as root it keeps no
		// capability, in namespaces of its own over an empty root.
		args = append(args, "--runas", strconv.Itoa(uid)+":"+strconv.Itoa(gid))
	}
	tcp, udp := "none", "none"
	for _, f := range n.Forwards {
		spec := fmt.Sprintf("127.0.0.1/%d:%d", f.HostPort, f.GuestPort)
		switch f.Proto {
		case "udp":
			udp = join(udp, spec)
		default:
			tcp = join(tcp, spec)
		}
	}
	return append(args, "--tcp-ports", tcp, "--udp-ports", udp)
}

func join(list, spec string) string {
	if list == "none" {
		return spec
	}
	return list + "," + spec
}

// startPasst starts passt for the VM in dir, in a session of its own
// (it outlives a daemon restart, as QEMU does), and returns once its
// socket exists; stop ends it.
func (d *Driver) startPasst(dir string, n *vmm.NIC) (stop func(), err error) {
	bin := cmp.Or(d.Passt, "passt")
	if _, err := exec.LookPath(bin); err != nil {
		return nil, fmt.Errorf("a user-mode VM with NAT needs passt, so that it cannot reach the host's loopback: %w (apt install passt)", err)
	}
	sock := filepath.Join(dir, passtSocket)
	for _, f := range []string{sock, filepath.Join(dir, "passt.log")} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	cmd := exec.Command(bin, passtArgs(dir, n, os.Geteuid(), os.Getegid())...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting passt: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop = func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	// passt binds and listens in one step: once the socket is there,
	// QEMU can connect.
	deadline := time.After(10 * time.Second)
	for {
		if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return stop, nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "passt.log"))
			return nil, fmt.Errorf("passt exited at start: %s", lastLines(log, 5))
		case <-deadline:
			stop()
			return nil, errors.New("passt did not open its socket within 10s")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// lastLines is the end of a log, for an error.
func lastLines(b []byte, n int) string {
	end := len(b)
	for i := len(b) - 1; i >= 0 && n > 0; i-- {
		if b[i] == '\n' && i < end-1 {
			n--
			if n == 0 {
				return string(b[i+1 : end])
			}
		}
	}
	return string(b[:end])
}
