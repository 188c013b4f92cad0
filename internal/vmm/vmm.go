// Package vmm is the interface every virtual machine monitor driver
// implements (internal/vmm/qemu, internal/vmm/firecracker), so the VM
// service boots guests without knowing which one runs them.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/proc"
)

// Disk is one block device; the guest agent finds it by Serial.
type Disk struct {
	Path     string
	ReadOnly bool
	Serial   string
	// Volatile lets the VMM ignore the guest's flushes (QEMU's
	// cache=unsafe): faster, but a host crash can lose or corrupt what
	// the guest believed on disk. Only for data that may be lost; a
	// VM's work disk is not (its writes are honoured, cache=writeback).
	Volatile bool
}

// NIC is the VM's network interface: a host tap device (root networking)
// or, with User, QEMU's user-mode stack, which needs no privileges.
type NIC struct {
	MAC string
	Tap string
	// User: user-mode networking; the guest is 10.0.2.15/24, the host
	// 10.0.2.2, and Forwards open guest ports on the host's loopback.
	User     bool
	Forwards []Forward
	// Outbound lets a user-mode guest open connections out (to the host
	// and beyond); without it the guest only answers forwarded ones.
	Outbound bool
	// Unplugged: the device with no host end (no Tap), for a template
	// saved to be restored later on a tap. Nothing it sends arrives.
	Unplugged bool
}

// Forward maps a port on the host's 127.0.0.1 to a guest port.
type Forward struct {
	Proto     string // "tcp" or "udp"
	HostPort  int
	GuestPort int
}

// Spec describes one VM, whatever runs it.
type Spec struct {
	Kernel    string // the bundle's ELF kernel
	Initrd    string
	Cmdline   string
	MemoryMiB int
	VCPU      int
	Disks     []Disk
	NIC       *NIC // nil: no network device
	// Dir holds the VM's runtime files: sockets, console log.
	Dir string
	// Share is the group of VMs this one may share memory pages with:
	// a restore maps a saved state's memory copy-on-write, its pages
	// shared with the group's other VMs restored from the same state
	// until each writes them. "": with none (a private copy).
	Share string
}

// Instance is a running VMM process.
type Instance interface {
	// Process is the VMM's process; it runs in its own session, so it
	// outlives the daemon, which re-adopts it by ID.
	Process() *os.Process
	// ID is the process's pid and start time, which a daemon restart
	// checks before trusting a recorded pid.
	ID() proc.ID
	// Done is closed once the process exited.
	Done() <-chan struct{}
	// ExitState is how the process exited, once Done is closed; nil
	// while it runs, and for a VMM adopted after a daemon restart (not
	// our child: its status is not ours to read).
	ExitState() *os.ProcessState
	// DialAgent connects to the guest agent's transport.
	DialAgent(ctx context.Context) (net.Conn, error)
	// ConsoleLog is the serial console's log file.
	ConsoleLog() string
	// VMMLog is the VMM process's own output (its errors): the same
	// file as the console for a VMM that writes both to one place.
	VMMLog() string
}

// Driver starts VMs.
type Driver interface {
	Name() string
	// Available says why this driver cannot run here, or nil.
	Available() error
	Start(ctx context.Context, s Spec) (Instance, error)
	// Adopt takes back a VMM that a previous daemon started for s (its
	// Dir is all that is read), identified by id.
	Adopt(s Spec, id proc.ID) (Instance, error)
}

// Handle is the process half of an Instance, shared by the drivers: it
// records the VMM's identity and waits for its exit.
type Handle struct {
	id      proc.ID
	proc    *os.Process
	done    chan struct{}
	state   *os.ProcessState // set before done is closed
	console string
	vmmLog  string
}

// Watch starts waiting for a VMM process the caller started.
func Watch(p *os.Process, consoleLog, vmmLog string) *Handle {
	h := &Handle{proc: p, done: make(chan struct{}), console: consoleLog, vmmLog: vmmLog}
	h.id, _ = proc.Identify(p.Pid) // a VMM that died at once has none; Done says so
	go func() { h.state, _ = p.Wait(); close(h.done) }()
	return h
}

// Adopt watches a VMM that an earlier daemon started: not our child, so
// its exit is seen through a pidfd. A pid that now names another process
// (start time differs) is proc.ErrGone.
func Adopt(id proc.ID, consoleLog, vmmLog string) (*Handle, error) {
	now, err := proc.Identify(id.PID)
	if err != nil {
		return nil, err
	}
	if now != id {
		return nil, fmt.Errorf("pid %d is another process now: %w", id.PID, proc.ErrGone)
	}
	fd, err := unix.PidfdOpen(id.PID, 0)
	if err != nil {
		return nil, fmt.Errorf("watching pid %d: %w", id.PID, err)
	}
	p, err := os.FindProcess(id.PID)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	h := &Handle{id: id, proc: p, done: make(chan struct{}), console: consoleLog, vmmLog: vmmLog}
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
				break
			}
		}
		close(h.done)
	}()
	return h, nil
}

// ID is the VMM's pid and start time.
func (h *Handle) ID() proc.ID { return h.id }

// Process is the VMM's process.
func (h *Handle) Process() *os.Process { return h.proc }

// Done is closed once the VMM exited.
func (h *Handle) Done() <-chan struct{} { return h.done }

// ExitState is how the VMM exited: nil while it runs, or when adopted.
func (h *Handle) ExitState() *os.ProcessState {
	select {
	case <-h.done:
		return h.state
	default:
		return nil
	}
}

// ConsoleLog is the serial console's log file.
func (h *Handle) ConsoleLog() string { return h.console }

// VMMLog is the VMM's own output.
func (h *Handle) VMMLog() string { return h.vmmLog }
