//go:build linux

package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// With the image's own init (systemd), the agent prepares the machine as
// PID 1, then execs that init, which starts the agent again as a
// service (from a unit in /run, so nothing is written to the VM's disk).
// At power-off systemd's last step hands control back to the agent
// through the initrd interface (/run/initramfs/shutdown), which leaves
// the work disk clean and ends the VM as an agent-init VM ends.
const (
	agentBin    = runDir + "/agent"     // the agent, for its unit
	bootState   = runDir + "/boot.json" // what PID 1 learned, for the service
	returnDir   = "/run/initramfs"      // systemd pivots here at its end
	returnBin   = returnDir + "/shutdown"
	returnWork  = returnDir + "/work" // the work disk, seen by systemd-shutdown and the stats
	unitDir     = "/run/systemd/system"
	unitName    = "banger-agent.service"
	maxBootJSON = 1 << 20
)

// unit keeps the agent serving from early boot until systemd's final
// kill: no default dependencies (nothing stops it at shutdown), ignored
// by isolate (power-off is an isolate), restarted whenever it ends.
const unit = `[Unit]
Description=banger guest agent (exec, ssh, files and stats for the host)
DefaultDependencies=no
IgnoreOnIsolate=yes
StartLimitIntervalSec=0

[Service]
ExecStart=` + agentBin + ` serve
Restart=always
RestartSec=200ms
KillMode=process
StandardOutput=journal+console
StandardError=journal+console
`

// handedOver is what PID 1 passes on to the agent's service.
type handedOver struct {
	Timings []proto.Timing `json:"timings"`
	Addrs   []string       `json:"addrs"`
}

// handOver execs the image's init as PID 1, having set up the agent's
// return as its service and at its power-off. It returns only an error,
// with the agent still init.
func (g *guest) handOver() error {
	init := g.params.Init
	if err := unix.Access(init, unix.X_OK); err != nil {
		return fmt.Errorf("the image has no init at %s: %w", init, err)
	}
	// The initramfs is out of reach once the agent is a service: what
	// was to load later loads now.
	if err := loadOpened(g.later); err != nil {
		return err
	}
	g.later = nil
	for _, d := range []string{runDir, unitDir + "/sysinit.target.wants", returnDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// systemd's switch back binds these into the new root, and pivots
	// the old one to oldroot.
	for _, d := range []string{"oldroot", "dev", "proc", "sys", "run"} {
		if err := os.MkdirAll(filepath.Join(returnDir, d), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile("/proc/self/exe", agentBin, 0o755); err != nil {
		return fmt.Errorf("copying the agent: %w", err)
	}
	if err := os.Link(agentBin, returnBin); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("linking the agent as %s: %w", returnBin, err)
	}
	if g.workFD > 0 {
		// The work disk's mount is otherwise out of every path: a bind
		// of it under /run/initramfs is remounted read-only by
		// systemd-shutdown and never unmounted before it.
		if err := os.MkdirAll(returnWork, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", g.workFD), returnWork, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding the work disk at %s: %w", returnWork, err)
		}
	}
	if err := os.WriteFile(filepath.Join(unitDir, unitName), []byte(unit), 0o644); err != nil {
		return err
	}
	if err := os.Symlink("../"+unitName, filepath.Join(unitDir, "sysinit.target.wants", unitName)); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	g.mark("init handed over")
	b, err := json.Marshal(handedOver{Timings: g.timings, Addrs: g.addrs})
	if err != nil {
		return err
	}
	if err := os.WriteFile(bootState, b, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "banger-agent: handing PID 1 to %s at %.3fs\n", init, uptime())
	// The kernel gave PID 1 the command line's name=value words as its
	// environment; systemd reads the command line itself.
	return unix.Exec(init, []string{init}, []string{"HOME=/", "TERM=linux"})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// Service runs the agent as a service of the image's init (`banger-agent
// serve`, from the unit PID 1 wrote): it serves until the machine stops,
// returning only an error that keeps it from serving.
func Service() error {
	if _, err := os.Stat(bootState); err != nil {
		return fmt.Errorf("not started by a banger guest's init (%w)", err)
	}
	g := &guest{start: time.Now(), sshReady: make(chan struct{}), service: true}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	if g.params, err = proto.ParseBootParams(string(cmdline)); err != nil {
		return err
	}
	f, err := os.Open(bootState)
	if err != nil {
		return err
	}
	var h handedOver
	err = json.NewDecoder(io.LimitReader(f, maxBootJSON)).Decode(&h)
	f.Close()
	if err != nil {
		return fmt.Errorf("reading %s: %w", bootState, err)
	}
	g.timings, g.addrs = h.Timings, h.Addrs
	g.virtio = virtioDevices()
	if fd, err := unix.Open(returnWork, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		g.workFD = fd
	}
	g.r = newReaper()
	return g.serve()
}

// sigPowerOff asks systemd to power off (SIGRTMIN+4 in glibc's
// numbering, which reserves the first two real-time signals).
const sigPowerOff = syscall.Signal(34 + 4)

// initPowerOff asks the image's init to power the machine off cleanly:
// its units stop, then its shutdown returns to Final.
func (g *guest) initPowerOff() {
	if err := unix.Kill(1, sigPowerOff); err != nil {
		fmt.Fprintf(os.Stderr, "banger-agent: asking init to power off: %v\n", err)
	}
}

// Final is the agent as systemd's shutdown hands it PID 1 back at the
// end of a power-off (or reboot, or halt: a banger VM only stops): the
// old root is at /oldroot, the work disk at /work. Both were remounted
// read-only by systemd-shutdown if it could; this makes sure, as the
// work disk's turn may have come while the overlay above still wrote,
// then stops the VM.
func Final(verb string) {
	for _, m := range []string{"/oldroot", "/work"} {
		if err := unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			fmt.Fprintf(os.Stderr, "banger-agent: remounting %s read-only: %v\n", m, err)
		}
	}
	fmt.Fprintf(os.Stderr, "banger-agent: %s: file systems read-only, stopping\n", verb)
	powerOff()
}
