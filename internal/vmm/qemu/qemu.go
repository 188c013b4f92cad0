// Package qemu runs guests under QEMU's microvm machine: virtio-mmio block,
// network and serial devices, KVM where it works and software emulation
// (TCG) where it does not.
package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/bangerdev/banger/internal/proc"
	"github.com/bangerdev/banger/internal/vmm"
)

// Disk is one virtio block device; the guest finds it by Serial.
type Disk struct {
	Path     string
	ReadOnly bool
	Serial   string
}

// Spec describes one VM.
type Spec struct {
	Kernel, Initrd string // an ELF kernel (booted through its PVH note) and an initramfs
	Cmdline        string
	MemoryMiB      int
	VCPU           int
	Disks          []Disk
	// AgentSocket is the host end of the agent's virtio-serial port, a
	// unix socket QEMU listens on.
	AgentSocket string
	// ConsoleLog receives the serial console.
	ConsoleLog string
	// Accel is "kvm" or "tcg".
	Accel string
	NIC   *vmm.NIC
}

// Args is the QEMU command line of spec (without the binary).
func Args(s Spec) []string {
	args := []string{
		"-M", "microvm,x-option-roms=off,rtc=on",
		"-accel", s.Accel,
		"-cpu", map[bool]string{true: "host", false: "max"}[s.Accel == "kvm"],
		"-m", strconv.Itoa(s.MemoryMiB),
		"-smp", strconv.Itoa(s.VCPU),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", s.Kernel,
		"-append", s.Cmdline,
		"-serial", "file:" + s.ConsoleLog,
	}
	if s.Initrd != "" {
		args = append(args, "-initrd", s.Initrd)
	}
	for i, d := range s.Disks {
		id := fmt.Sprintf("disk%d", i)
		drive := fmt.Sprintf("id=%s,file=%s,format=raw,if=none,cache=unsafe", id, escape(d.Path))
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive, "-device", fmt.Sprintf("virtio-blk-device,drive=%s,serial=%s", id, d.Serial))
	}
	if n := s.NIC; n != nil {
		var netdev string
		if n.User {
			netdev = "user,id=net0,net=10.0.2.0/24"
			if !n.Outbound {
				netdev += ",restrict=on"
			}
			for _, f := range n.Forwards {
				netdev += fmt.Sprintf(",hostfwd=%s:127.0.0.1:%d-:%d", f.Proto, f.HostPort, f.GuestPort)
			}
		} else {
			netdev = fmt.Sprintf("tap,id=net0,ifname=%s,script=no,downscript=no", n.Tap)
		}
		args = append(args, "-netdev", netdev, "-device", "virtio-net-device,netdev=net0,mac="+n.MAC)
	}
	if s.AgentSocket != "" {
		args = append(args,
			"-device", "virtio-serial-device",
			"-chardev", fmt.Sprintf("socket,id=agent,path=%s,server=on,wait=off", escape(s.AgentSocket)),
			"-device", "virtserialport,chardev=agent,name=banger.agent")
	}
	return args
}

// escape doubles commas, QEMU's option separator, in a path.
func escape(p string) string { return strings.ReplaceAll(p, ",", ",,") }

// Start launches QEMU detached from the caller (its own session), so the
// VM outlives a daemon restart. stderr goes to errLog.
func Start(binary string, s Spec, errLog *os.File) (*os.Process, error) {
	cmd := exec.Command(binary, Args(s)...)
	cmd.Stdout, cmd.Stderr = errLog, errLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", binary, err)
	}
	return cmd.Process, nil
}

// ErrNoKVM explains why KVM is not used.
var ErrNoKVM = errors.New("KVM is not usable")

// KVMUsable tells whether guests can run under KVM here. A PVM-only host
// (kvm_pvm loaded, no vmx/svm) has a /dev/kvm on which an ordinary kernel
// hangs: that counts as unusable.
func KVMUsable() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoKVM, err)
	}
	f.Close()
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil && !hasVirtFlags() {
		return fmt.Errorf("%w: this host's KVM is PVM-only (kvm_pvm, no vmx/svm), which cannot run a standard guest kernel", ErrNoKVM)
	}
	return nil
}

func hasVirtFlags() bool {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "flags") {
			for _, fl := range strings.Fields(sc.Text()) {
				if fl == "vmx" || fl == "svm" {
					return true
				}
			}
			return false
		}
	}
	return false
}

// TSCkHz is the host's TSC frequency in kHz (from /proc/cpuinfo), passed
// to an emulated guest as tsc_early_khz: without it, a TCG guest under
// host load often hangs calibrating its TSC against the PIT.
func TSCkHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}

// Driver runs VMs under QEMU.
type Driver struct {
	Binary string // default qemu-system-x86_64
	// Warn is told why KVM is not used, once per Driver (nil: say
	// nothing).
	Warn func(reason error)

	warned sync.Once
}

// Name is "qemu".
func (d *Driver) Name() string { return "qemu" }

func (d *Driver) binary() string {
	if d.Binary != "" {
		return d.Binary
	}
	return "qemu-system-x86_64"
}

// Available says why QEMU cannot run here, or nil.
func (d *Driver) Available() error {
	if _, err := exec.LookPath(d.binary()); err != nil {
		return fmt.Errorf("qemu: %w (apt install qemu-system-x86)", err)
	}
	return nil
}

// Start boots s, under KVM when usable and TCG otherwise.
func (d *Driver) Start(_ context.Context, s vmm.Spec) (vmm.Instance, error) {
	accel := "kvm"
	if err := KVMUsable(); err != nil {
		accel = "tcg"
		if d.Warn != nil {
			d.warned.Do(func() { d.Warn(err) })
		}
	}
	spec := Spec{
		Kernel: s.Kernel, Initrd: s.Initrd, Cmdline: s.Cmdline, MemoryMiB: s.MemoryMiB, VCPU: s.VCPU, Accel: accel,
		AgentSocket: filepath.Join(s.Dir, "agent.sock"), ConsoleLog: filepath.Join(s.Dir, "console.log"),
		NIC: s.NIC,
	}
	for _, dk := range s.Disks {
		spec.Disks = append(spec.Disks, Disk(dk))
	}
	errLog, err := os.Create(filepath.Join(s.Dir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	defer errLog.Close()
	p, err := Start(d.binary(), spec, errLog)
	if err != nil {
		return nil, err
	}
	return &instance{Handle: vmm.Watch(p, spec.ConsoleLog, errLog.Name()), sock: spec.AgentSocket}, nil
}

// Adopt takes back the QEMU of a VM whose runtime dir is s.Dir.
func (d *Driver) Adopt(s vmm.Spec, id proc.ID) (vmm.Instance, error) {
	h, err := vmm.Adopt(id, filepath.Join(s.Dir, "console.log"), filepath.Join(s.Dir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	return &instance{Handle: h, sock: filepath.Join(s.Dir, "agent.sock")}, nil
}

type instance struct {
	*vmm.Handle
	sock string
}

// DialAgent connects to the host end of the agent's virtio-serial port.
func (i *instance) DialAgent(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", i.sock)
}
