// Package qemu runs guests under QEMU's microvm machine: virtio-mmio block,
// network and serial devices, KVM where it works and software emulation
// (TCG) where it does not.
package qemu

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/kvm"
	"github.com/bangerdev/banger/internal/logcap"
	"github.com/bangerdev/banger/internal/proc"
	"github.com/bangerdev/banger/internal/vmm"
)

// machine is one QEMU command line's worth of a VM: the driver's Spec
// plus what the driver decides (accelerator, where sockets and logs go).
type machine struct {
	vmm.Spec
	Accel string // "kvm" or "tcg"
	// AgentSocket is the host end of the agent's virtio-serial port, a
	// unix socket QEMU listens on.
	AgentSocket string
	ConsoleLog  string // receives the serial console
	// PasstSocket, for a user-mode NIC with outbound connections, is
	// where passt serves it.
	PasstSocket string
	// QMPSocket is QEMU's control socket (QMP): snapshots and restores.
	QMPSocket string
	// RAM, if set, is a file that backs the guest's memory (else QEMU's
	// anonymous memory).
	RAM *ramFile
}

// ramFile is guest memory backed by a file. Shared: the file is the
// memory (a save's helper writes it); else it is mapped copy-on-write
// (a restore from a mapped state: the page cache's pages are shared by
// every VM that maps the file, until each writes them).
type ramFile struct {
	Path   string
	Shared bool
}

// ramID names the guest's memory as QEMU names its own (-m alone), so a
// state saved with either backend loads into the other.
const ramID = "microvm.ram"

// args is the QEMU command line of m (without the binary).
func args(m machine) []string {
	mach := "microvm,x-option-roms=off,rtc=on"
	if m.RAM != nil {
		mach += ",memory-backend=" + ramID
	}
	args := []string{
		"-M", mach,
		"-accel", m.Accel,
		"-cpu", map[bool]string{true: "host", false: "max"}[m.Accel == "kvm"],
		"-m", strconv.Itoa(m.MemoryMiB),
		"-smp", strconv.Itoa(m.VCPU),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", m.Kernel,
		"-append", m.Cmdline,
		// Appended to, so the daemon can cut the log (internal/logcap)
		// without QEMU writing on at its old offset.
		"-chardev", "file,id=console,append=on,path=" + escape(m.ConsoleLog),
		"-serial", "chardev:console",
	}
	if m.RAM != nil {
		share := map[bool]string{true: "on", false: "off"}[m.RAM.Shared]
		args = append(args, "-object", fmt.Sprintf("memory-backend-file,id=%s,size=%dM,mem-path=%s,share=%s", ramID, m.MemoryMiB, escape(m.RAM.Path), share))
	}
	if m.Initrd != "" {
		args = append(args, "-initrd", m.Initrd)
	}
	for i, d := range m.Disks {
		id := fmt.Sprintf("disk%d", i)
		// A read-only disk is never written, so skipping flushes costs
		// nothing there; a writable one honours the guest's flushes
		// (writeback) unless its data may be lost (Volatile).
		cache := "writeback"
		if d.ReadOnly || d.Volatile {
			cache = "unsafe"
		}
		drive := fmt.Sprintf("id=%s,file=%s,format=raw,if=none,cache=%s", id, escape(d.Path), cache)
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive, "-device", fmt.Sprintf("virtio-blk-device,drive=%s,serial=%s", id, d.Serial))
	}
	if n := m.NIC; n != nil {
		var netdev string
		switch {
		case n.User && m.PasstSocket != "":
			netdev = "stream,id=net0,server=off,addr.type=unix,addr.path=" + escape(m.PasstSocket)
		case n.User:
			netdev = "user,id=net0,net=10.0.2.0/24"
			if !n.Outbound {
				netdev += ",restrict=on"
			}
			for _, f := range n.Forwards {
				netdev += fmt.Sprintf(",hostfwd=%s:127.0.0.1:%d-:%d", f.Proto, f.HostPort, f.GuestPort)
			}
		case n.Unplugged:
			// A hub port on a hub of its own: a NIC with no cable. Its
			// device's saved state loads the same on a tap.
			netdev = "hubport,id=net0,hubid=0"
		default:
			netdev = fmt.Sprintf("tap,id=net0,ifname=%s,script=no,downscript=no", n.Tap)
		}
		args = append(args, "-netdev", netdev, "-device", "virtio-net-device,netdev=net0,mac="+n.MAC)
	}
	if m.QMPSocket != "" {
		args = append(args,
			"-chardev", fmt.Sprintf("socket,id=qmp,path=%s,server=on,wait=off", escape(m.QMPSocket)),
			"-mon", "chardev=qmp,mode=control")
	}
	if m.AgentSocket != "" {
		args = append(args,
			"-device", "virtio-serial-device",
			"-chardev", fmt.Sprintf("socket,id=agent,path=%s,server=on,wait=off", escape(m.AgentSocket)),
			"-device", "virtserialport,chardev=agent,name="+proto.PortName)
	}
	return args
}

// escape doubles commas, QEMU's option separator, in a path.
func escape(p string) string { return strings.ReplaceAll(p, ",", ",,") }

// Driver runs VMs under QEMU.
type Driver struct {
	Binary string // default qemu-system-x86_64
	Passt  string // default passt: user-mode networking with NAT
	// Log is told why KVM is not used (once per Driver), and why a save
	// could not be mapped (nil: nothing is said).
	Log *slog.Logger

	warned sync.Once
	states vmm.Describer // what a saved state needs here

	mu    sync.Mutex
	paths map[string]*sync.Mutex // lockPath's
}

// Name is "qemu".
func (d *Driver) Name() string { return "qemu" }

func (d *Driver) binary() string { return cmp.Or(d.Binary, "qemu-system-x86_64") }

// Available says why QEMU cannot run here, or nil.
func (d *Driver) Available() error {
	if _, err := exec.LookPath(d.binary()); err != nil {
		return fmt.Errorf("qemu: %w (apt install qemu-system-x86)", err)
	}
	return nil
}

// Start boots s, under KVM when usable and TCG otherwise, detached from
// the caller (its own session), so the VM outlives a daemon restart.
func (d *Driver) Start(_ context.Context, s vmm.Spec) (vmm.Instance, error) {
	in, _, err := d.launch(s, launchOpts{})
	return in, err
}

// machineOf is the QEMU machine that runs s here.
func (d *Driver) machineOf(s vmm.Spec) machine {
	m := machine{Spec: s, Accel: "kvm", AgentSocket: filepath.Join(s.Dir, "agent.sock"), ConsoleLog: filepath.Join(s.Dir, "console.log"),
		QMPSocket: filepath.Join(s.Dir, qmpSocket)}
	if err := kvm.KVMUsable(); err != nil {
		m.Accel = "tcg"
		if d.Log != nil {
			d.warned.Do(func() {
				d.Log.Warn("VMs run under software emulation (TCG), much slower than KVM", "reason", err)
			})
		}
	}
	return m
}

// launchOpts are how a QEMU is started besides its spec.
type launchOpts struct {
	ram   *ramFile   // the file backing guest memory (nil: anonymous)
	files []*os.File // passed on as descriptors 3 and up
	extra []string   // more arguments (a restore's -incoming)
	// helper: a save's helper, which must not outlive the daemon
	// (killed when it dies) and has no network of its own.
	helper bool
	// netns: in a network namespace of its own (and a user namespace
	// when not root), where it may make a tap no one else sees.
	netns bool
}

// launch starts QEMU for s.
func (d *Driver) launch(s vmm.Spec, o launchOpts) (*instance, machine, error) {
	m := d.machineOf(s)
	m.RAM = o.ram
	// A new boot, a new console: append=on alone would keep the last one.
	for _, f := range []string{m.ConsoleLog, m.ConsoleLog + logcap.Older, filepath.Join(s.Dir, "qemu.log"+logcap.Older), m.QMPSocket} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, m, err
		}
	}
	errLog, err := os.OpenFile(filepath.Join(s.Dir, "qemu.log"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, m, err
	}
	defer errLog.Close()
	stopPasst := func() {}
	if n := s.NIC; n != nil && n.User && n.Outbound && !o.helper {
		if stopPasst, err = d.startPasst(s.Dir, n); err != nil {
			return nil, m, err
		}
		m.PasstSocket = filepath.Join(s.Dir, passtSocket)
	}
	cmd := exec.Command(d.binary(), append(args(m), o.extra...)...)
	cmd.Stdout, cmd.Stderr = errLog, errLog
	cmd.ExtraFiles = o.files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if o.helper {
		// Tied to the thread that starts it; Go ends a thread only when
		// a goroutine locked to it returns, which none here does.
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if o.netns {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
		if uid, gid := os.Geteuid(), os.Getegid(); uid != 0 {
			cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
			cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
			cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
		}
	}
	if err := cmd.Start(); err != nil {
		stopPasst()
		return nil, m, fmt.Errorf("starting %s: %w", d.binary(), err)
	}
	in := &instance{Handle: vmm.Watch(cmd.Process, m.ConsoleLog, errLog.Name()), sock: m.AgentSocket, qmp: m.QMPSocket}
	// passt ends when QEMU hangs up; one whose QEMU never connected is
	// ended here.
	go func() { <-in.Done(); stopPasst() }()
	return in, m, nil
}

// Adopt takes back the QEMU of a VM whose runtime dir is s.Dir.
func (d *Driver) Adopt(s vmm.Spec, id proc.ID) (vmm.Instance, error) {
	h, err := vmm.Adopt(id, filepath.Join(s.Dir, "console.log"), filepath.Join(s.Dir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	in := &instance{Handle: h, sock: filepath.Join(s.Dir, "agent.sock"), qmp: filepath.Join(s.Dir, qmpSocket)}
	// A daemon killed while saving this VM left its guest paused: it
	// runs on (the record says running; a half-saved state is dropped).
	in.unpause()
	return in, nil
}

type instance struct {
	*vmm.Handle
	sock string
	qmp  string // the control socket
}

// DialAgent connects to the host end of the agent's virtio-serial port.
func (i *instance) DialAgent(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", i.sock)
}
