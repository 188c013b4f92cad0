// Package doctor explains a host's fitness for banger: each check says
// what it found, and when something is wrong, what to do about it. The
// checks read the host through Host, so tests can give them any host.
package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/units"
)

// Status is a check's verdict. Only fail makes `banger doctor` exit
// non-zero: a warning is something banger works around (no KVM: TCG).
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Check is one finding.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Host is what the checks read of the machine.
type Host struct {
	// KVM says why KVM cannot run a guest here, or nil (kvm.KVMUsable).
	KVM func() error
	// Program is a program's path and the first line of its --version,
	// or an error when it is not on the PATH.
	Program func(name string) (path, version string, err error)
	Stat    func(path string) (fs.FileInfo, error)
	// Free is the bytes free for an unprivileged user under path.
	Free func(path string) (uint64, error)
	Now  func() time.Time
	Root bool // euid 0
	// Helper says whether an installed root helper answers, with its
	// socket; "" when banger is not installed.
	Helper func() (socket string, err error)
}

// Daemon is what the daemon said, or why it did not answer.
type Daemon struct {
	Err     error
	Info    api.DaemonInfo
	Config  map[string]string // config key → effective value
	Kernels []api.Kernel
	Images  []api.Image
}

// Thresholds of free space in the state and cache directories.
const (
	failFree = 1 << 30
	warnFree = 5 << 30
)

// Run makes every check, in the order a reader fixes things: the
// machine, the programs, the network, the daemon and what it holds.
func Run(h Host, client api.BuildInfo, d Daemon) []Check {
	vmmName := d.Config["vmm"]
	kvm := kvmCheck(h)
	checks := []Check{kvm, accel(kvm), qemu(h, vmmName), firecracker(h, d.Config["firecracker_bin"], kvm), passt(h),
		vsock(h), tun(h, d.Config["network.mode"]), bridge(h, d.Config["network.mode"])}
	checks = append(checks, daemon(h, client, d)...)
	return append(checks, clock(h, client, d))
}

// Failed says whether any check failed.
func Failed(checks []Check) bool {
	for _, c := range checks {
		if c.Status == Fail {
			return true
		}
	}
	return false
}

func kvmCheck(h Host) Check {
	c := Check{Name: "kvm", Status: OK, Detail: "/dev/kvm is usable: VMs run at native speed"}
	err := h.KVM()
	if err == nil {
		return c
	}
	c.Status = Warn
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.Detail = "no /dev/kvm on this host: VMs run under software emulation (TCG), several times slower"
		c.Fix = "enable virtualization (VT-x/AMD-V) in the firmware and load kvm_intel or kvm_amd; in a cloud VM, pick an instance type with nested virtualization"
	case errors.Is(err, fs.ErrPermission):
		c.Detail = "/dev/kvm is here but you may not open it: VMs run under software emulation (TCG)"
		c.Fix = "join group kvm (`sudo usermod -aG kvm $USER`, then log in again), or install banger (`sudo banger system install` does it)"
	case strings.Contains(err.Error(), "PVM"):
		c.Detail = "this host's KVM is PVM-only (kvm_pvm, no vmx/svm flags), which cannot run a standard guest kernel: VMs run under software emulation (TCG)"
		c.Fix = "nothing to do on this host; a machine with hardware virtualization runs VMs several times faster"
	default:
		c.Detail = fmt.Sprintf("KVM is not usable (%v): VMs run under software emulation (TCG)", err)
		c.Fix = "check that kvm_intel or kvm_amd is loaded (`lsmod | grep kvm`) and that /dev/kvm is a character device"
	}
	return c
}

func accel(kvm Check) Check {
	if kvm.Status == OK {
		return Check{Name: "accelerator", Status: OK, Detail: "kvm"}
	}
	return Check{Name: "accelerator", Status: OK, Detail: "tcg (software emulation: QEMU only, Firecracker needs KVM)"}
}

func qemu(h Host, vmm string) Check {
	path, version, err := h.Program("qemu-system-x86_64")
	if err != nil {
		c := Check{Name: "qemu", Status: Fail, Detail: "qemu-system-x86_64 is not on the PATH", Fix: "sudo apt-get install qemu-system-x86"}
		if vmm == "firecracker" {
			c.Status = Warn // not the configured VMM
		}
		return c
	}
	return Check{Name: "qemu", Status: OK, Detail: fmt.Sprintf("%s (%s)", version, path)}
}

func firecracker(h Host, bin string, kvm Check) Check {
	if bin == "" {
		bin = "firecracker"
	}
	path, version, err := h.Program(bin)
	switch {
	case err != nil:
		return Check{Name: "firecracker", Status: OK, Detail: "not installed: VMs run under QEMU"}
	case kvm.Status != OK:
		return Check{Name: "firecracker", Status: Warn, Detail: fmt.Sprintf("%s (%s) is installed but needs KVM, which is not usable: VMs run under QEMU", version, path),
			Fix: "see the kvm check"}
	}
	return Check{Name: "firecracker", Status: OK, Detail: fmt.Sprintf("%s (%s)", version, path)}
}

func passt(h Host) Check {
	path, version, err := h.Program("passt")
	if err != nil {
		return Check{Name: "passt", Status: Warn, Detail: "passt is not on the PATH: user-network VMs with --nat cannot start",
			Fix: "sudo apt-get install passt"}
	}
	return Check{Name: "passt", Status: OK, Detail: fmt.Sprintf("%s (%s): user-network NAT without the host's loopback", version, path)}
}

func vsock(h Host) Check {
	if _, err := h.Stat("/dev/vhost-vsock"); err != nil {
		return Check{Name: "vhost-vsock", Status: OK, Detail: "no /dev/vhost-vsock; banger does not need it (the agent's channel is virtio-serial under QEMU, Firecracker's own vsock under Firecracker)"}
	}
	return Check{Name: "vhost-vsock", Status: OK, Detail: "/dev/vhost-vsock is here (banger does not need it)"}
}

func tun(h Host, mode string) Check {
	fi, err := h.Stat("/dev/net/tun")
	if err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
		c := Check{Name: "tun", Status: Warn, Detail: "no /dev/net/tun: the bridge network cannot make taps", Fix: "sudo modprobe tun"}
		if mode == "bridge" {
			c.Status = Fail
		}
		return c
	}
	return Check{Name: "tun", Status: OK, Detail: fmt.Sprintf("/dev/net/tun (%v)", fi.Mode().Perm())}
}

// bridge says who makes the bridge network: a root daemon in-process,
// an installed owner's daemon through the helper, or nobody.
func bridge(h Host, mode string) Check {
	c := Check{Name: "bridge network"}
	socket, err := h.Helper()
	switch {
	case socket != "" && err == nil:
		c.Status, c.Detail = OK, "the root helper answers on "+socket+" (bridge, taps, nftables, DNS port)"
	case socket != "":
		c.Status, c.Detail, c.Fix = Fail, fmt.Sprintf("banger is installed, but its root helper does not answer on %s: %v", socket, err),
			"sudo systemctl restart banger-helper (or `sudo banger system restart`)"
	case h.Root:
		c.Status, c.Detail = OK, "root: the daemon makes the bridge, taps and nftables rules itself"
	default:
		c.Status, c.Detail, c.Fix = Warn, "not root and not installed: user-mode networking only (--network bridge is refused)",
			"sudo banger system install (your daemon, with a narrow root helper for the network)"
		if mode == "bridge" {
			c.Status = Fail
		}
	}
	return c
}

func daemon(h Host, client api.BuildInfo, d Daemon) []Check {
	if d.Err != nil {
		return []Check{{Name: "daemon", Status: Fail, Detail: fmt.Sprintf("no daemon answers: %v", d.Err),
			Fix: "banger daemon start (installed: sudo systemctl start bangerd)"}}
	}
	b := d.Info.Build
	dc := Check{Name: "daemon", Status: OK, Detail: fmt.Sprintf("bangerd %s (pid %d, %s layout)", b.Version, d.Info.PID, d.Info.Mode)}
	if b.Version != client.Version || b.Protocol != client.Protocol {
		dc.Status = Fail
		dc.Detail = fmt.Sprintf("bangerd %s (protocol %d) answers, but this banger is %s (protocol %d)", b.Version, b.Protocol, client.Version, client.Protocol)
		dc.Fix = "restart the daemon with the matching binary (`banger daemon stop && banger daemon start`)"
	}
	checks := []Check{dc}
	for _, dir := range []struct{ name, path string }{{"state disk", d.Info.Paths.StateDir}, {"cache disk", d.Info.Paths.CacheDir}} {
		checks = append(checks, disk(h, dir.name, dir.path))
	}
	kc := Check{Name: "kernel", Status: Fail, Detail: "no kernel: VMs cannot boot", Fix: "banger kernel import --debian (or `banger kernel pull REF`)"}
	for _, k := range d.Kernels {
		if k.Default {
			kc = Check{Name: "kernel", Status: OK, Detail: fmt.Sprintf("%s (%s), the default", k.Name, k.Version)}
		}
	}
	checks = append(checks, kc)
	want := d.Config["default_image_name"]
	ic := Check{Name: "default image", Status: Warn, Detail: want + " is not here yet: the first `vm run` pulls it", Fix: "banger image pull " + want}
	for _, img := range d.Images {
		if img.Name == want {
			ic = Check{Name: "default image", Status: OK, Detail: want}
		}
	}
	return append(checks, ic)
}

// disk checks the free space where the daemon keeps images and VM disks
// (state) or blobs (cache).
func disk(h Host, name, path string) Check {
	free, err := h.Free(path)
	if err != nil {
		return Check{Name: name, Status: Warn, Detail: fmt.Sprintf("cannot tell the free space of %s: %v", path, err)}
	}
	c := Check{Name: name, Status: OK, Detail: fmt.Sprintf("%s free in %s", units.FormatSize(int64(free)), path)}
	switch {
	case free < failFree:
		c.Status, c.Fix = Fail, "free space on that file system: `banger image cache prune`, `banger vm prune`, `banger image delete`"
	case free < warnFree:
		c.Status, c.Fix = Warn, "an image or a VM disk takes gigabytes: free space on that file system (`banger image cache prune`, `banger vm prune`)"
	}
	return c
}

func clock(h Host, client api.BuildInfo, d Daemon) Check {
	now := h.Now()
	c := Check{Name: "clock", Status: OK, Detail: now.UTC().Format(time.RFC3339)}
	built, err := time.Parse(time.RFC3339, client.Date)
	switch {
	case err == nil && now.Before(built.Add(-24*time.Hour)):
		c.Status, c.Detail = Fail, fmt.Sprintf("%s is before this banger was built (%s): TLS certificates and image dates will be wrong", c.Detail, client.Date)
		c.Fix = "set the clock (`sudo timedatectl set-ntp true`, or `sudo date -s ...`)"
	case d.Err == nil && !d.Info.StartedAt.IsZero() && d.Info.StartedAt.After(now.Add(time.Minute)):
		c.Status, c.Detail = Fail, fmt.Sprintf("%s is before the daemon says it started (%s): the clock went back", c.Detail, d.Info.StartedAt.UTC().Format(time.RFC3339))
		c.Fix = "set the clock, then restart the daemon"
	}
	return c
}
