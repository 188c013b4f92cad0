package firecracker

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/kvm"
	"github.com/bangerdev/banger/internal/logcap"
	"github.com/bangerdev/banger/internal/proc"
	"github.com/bangerdev/banger/internal/vmm"
)

// Driver runs VMs under Firecracker, which needs a usable KVM.
type Driver struct {
	Binary string  // default "firecracker" on PATH
	Jailer *Jailer // nil: run Firecracker directly

	states vmm.Describer // what a saved state needs here
}

// Name is "firecracker".
func (d *Driver) Name() string { return "firecracker" }

func (d *Driver) binary() string { return cmp.Or(d.Binary, "firecracker") }

// Available says why Firecracker cannot run here, or nil.
func (d *Driver) Available() error {
	if _, err := exec.LookPath(d.binary()); err != nil {
		return fmt.Errorf("firecracker: %w (set firecracker_bin in config.toml)", err)
	}
	if err := kvm.KVMUsable(); err != nil {
		return fmt.Errorf("firecracker: %w", err)
	}
	if d.Jailer != nil {
		if _, err := exec.LookPath(d.Jailer.Binary); err != nil {
			return fmt.Errorf("firecracker's jailer: %w (set firecracker_jailer in config.toml, or leave it empty)", err)
		}
	}
	return nil
}

// BootArgs is s's kernel command line with the disks' order appended:
// Firecracker's block devices carry no serial the guest could find them
// by, but it attaches them in order (vda, vdb, ...).
func BootArgs(s vmm.Spec) string {
	serials := make([]string, len(s.Disks))
	for i, d := range s.Disks {
		serials[i] = d.Serial
	}
	return strings.TrimSpace(s.Cmdline + " " + proto.BootParams{DiskOrder: serials}.Args()[0])
}

// Check says why s cannot run under Firecracker, or nil.
func Check(s vmm.Spec) error {
	switch {
	case s.NIC == nil:
	case s.NIC.User:
		return errors.New("firecracker has no user-mode networking: use a bridge (tap) network or none")
	case s.NIC.Tap == "":
		return errors.New("firecracker: the network interface names no tap device")
	}
	return nil
}

// Start launches Firecracker detached, configures the VM through its API
// socket and starts it. The serial console goes to console.log.
func (d *Driver) Start(ctx context.Context, s vmm.Spec) (vmm.Instance, error) {
	if err := Check(s); err != nil {
		return nil, err
	}
	l, err := d.launch(s)
	if err != nil {
		return nil, err
	}
	if err := d.configure(ctx, l.in, l.apiSock, l.fcVsock, l.fcSpec); err != nil {
		_ = l.in.Process().Kill()
		<-l.in.Done()
		return nil, err
	}
	return l.in, nil
}

// launched is a Firecracker just started, given nothing yet: its API
// socket, and the VM's vsock socket and spec as Firecracker sees them
// (inside its chroot when jailed).
type launched struct {
	in      *instance
	apiSock string
	fcVsock string
	fcSpec  vmm.Spec
}

// launch starts Firecracker for s, detached, its console in console.log.
func (d *Driver) launch(s vmm.Spec) (launched, error) {
	l := launched{apiSock: filepath.Join(s.Dir, "firecracker.sock"), fcSpec: s}
	console := filepath.Join(s.Dir, "console.log")
	// A new boot, a new console: the last one's rotated half goes too.
	if err := os.Remove(console + logcap.Older); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return l, err
	}
	// Appended to, so the daemon can cut the log (internal/logcap).
	out, err := os.OpenFile(console, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return l, err
	}
	defer out.Close()
	vsock := filepath.Join(s.Dir, "vsock.sock")
	l.fcVsock = vsock
	var cmd *exec.Cmd
	var jl *jail
	if d.Jailer == nil {
		cmd = exec.Command(d.binary(), "--api-sock", l.apiSock)
	} else {
		if jl, err = d.Jailer.prepare(filepath.Base(s.Dir), d.binary(), s); err != nil {
			return l, err
		}
		cmd = exec.Command(d.Jailer.Binary, jl.args...)
		l.apiSock, vsock, l.fcSpec, l.fcVsock = jl.apiSock, jl.vsock, jl.spec, "/vsock.sock"
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		if jl != nil {
			jl.remove()
		}
		return l, fmt.Errorf("starting firecracker: %w", err)
	}
	l.in = &instance{Handle: vmm.Watch(cmd.Process, console, console), vsock: vsock}
	if jl != nil {
		go func() { <-l.in.Done(); jl.remove() }()
	}
	return l, nil
}

// waitAPI waits for a just started Firecracker's API socket.
func waitAPI(ctx context.Context, in *instance, apiSock string) error {
	// The API socket appears a moment after the process starts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", apiSock); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-in.Done():
			return errors.New("firecracker exited before its API socket appeared (see console.log)")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("firecracker's API socket did not appear")
		}
	}
}

// configure sets the VM up through the API; s and vsock are paths as
// Firecracker sees them (inside its chroot when jailed).
func (d *Driver) configure(ctx context.Context, in *instance, apiSock, vsock string, s vmm.Spec) error {
	if err := waitAPI(ctx, in, apiSock); err != nil {
		return err
	}
	c := NewClient(apiSock)
	if err := c.PutMachineConfig(ctx, MachineConfig{VCPUCount: s.VCPU, MemSizeMiB: s.MemoryMiB}); err != nil {
		return err
	}
	if err := c.PutBootSource(ctx, BootSource{KernelImagePath: s.Kernel, InitrdPath: s.Initrd, BootArgs: BootArgs(s)}); err != nil {
		return err
	}
	for _, dk := range s.Disks {
		cache := "Writeback"
		if dk.ReadOnly || dk.Volatile {
			cache = "Unsafe"
		}
		if err := c.PutDrive(ctx, Drive{DriveID: dk.Serial, PathOnHost: dk.Path, IsReadOnly: dk.ReadOnly, CacheType: cache}); err != nil {
			return err
		}
	}
	if n := s.NIC; n != nil {
		if err := c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: n.Tap, GuestMAC: n.MAC}); err != nil {
			return err
		}
	}
	if err := c.PutVsock(ctx, Vsock{GuestCID: 3, UDSPath: vsock}); err != nil {
		return err
	}
	return c.Act(ctx, ActionInstanceStart)
}

// Adopt takes back the Firecracker of a VM whose runtime dir is s.Dir.
func (d *Driver) Adopt(s vmm.Spec, id proc.ID) (vmm.Instance, error) {
	console := filepath.Join(s.Dir, "console.log")
	h, err := vmm.Adopt(id, console, console)
	if err != nil {
		return nil, err
	}
	vsock := filepath.Join(s.Dir, "vsock.sock")
	if d.Jailer != nil {
		vsock = filepath.Join(d.Jailer.root(filepath.Base(s.Dir), d.binary()), "vsock.sock")
	}
	return &instance{Handle: h, vsock: vsock}, nil
}

type instance struct {
	*vmm.Handle
	vsock string
}

// DialAgent connects through Firecracker's vsock proxy: connect to its
// unix socket, ask for the agent's port, read "OK <port>".
func (i *instance) DialAgent(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", i.vsock)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", proto.VsockPort); err != nil {
		c.Close()
		return nil, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "OK ") {
		c.Close()
		return nil, fmt.Errorf("vsock connect to port %d: %q: %v", proto.VsockPort, strings.TrimSpace(line), err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
