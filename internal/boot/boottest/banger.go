package boottest

import (
	"context"
	"os"
	"time"

	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/kvm"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/qemu"
)

// Booted is a VM BangerBoot started, its agent answering.
type Booted struct {
	Agent *client.Client
	// Wall is QEMU's start to the agent's first answer.
	Wall time.Duration
	in   vmm.Instance
	dir  string
}

// Stop ends the VM and removes its directory.
func (b *Booted) Stop() {
	b.Agent.Close()
	_ = b.in.Process().Kill()
	<-b.in.Done()
	os.RemoveAll(b.dir)
}

// BangerBoot boots rootfs in dir as banger's VMs boot (the QEMU driver,
// which picks the accelerator, env's kernel and initramfs, a fresh work
// disk, 1 vCPU, 512 MiB) and waits for the agent. A volatile work disk
// skips the guest's flushes (vmm.Disk.Volatile).
func BangerBoot(env *Env, rootfs, dir string, volatileWork bool) (*Booted, error) {
	return bangerBoot(env, rootfs, dir, volatileWork, proto.BootParams{Hostname: "bench"})
}

// BangerBootWith is BangerBoot telling the agent p (its init, say).
func BangerBootWith(env *Env, rootfs, dir string, p proto.BootParams) (*Booted, error) {
	return bangerBoot(env, rootfs, dir, false, p)
}

func bangerBoot(env *Env, rootfs, dir string, volatileWork bool, p proto.BootParams) (*Booted, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	work, err := WorkDisk(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	start := time.Now()
	in, err := (&qemu.Driver{}).Start(context.Background(), vmm.Spec{
		Kernel: env.Vmlinux, Initrd: env.Initrd, Cmdline: boot.Cmdline(p, kvm.KVMUsable() != nil),
		MemoryMiB: 512, VCPU: 1, Dir: dir,
		Disks: []vmm.Disk{{Path: rootfs, ReadOnly: true, Serial: proto.RootSerial}, {Path: work, Serial: proto.WorkSerial, Volatile: volatileWork}},
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := boot.WaitAgent(ctx, in.DialAgent, in.Done())
	if err != nil {
		_ = in.Process().Kill()
		<-in.Done()
		os.RemoveAll(dir)
		return nil, err
	}
	return &Booted{Agent: c, Wall: time.Since(start), in: in, dir: dir}, nil
}
