package boottest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/boot"
)

// WorkDisk makes a 1 GiB sparse ext4 work disk in dir.
func WorkDisk(dir string) (string, error) {
	p := filepath.Join(dir, "work.ext4")
	return p, boot.WorkDisk(context.Background(), p, 1<<30)
}

// FloorBoot is the benchmarks' floor: QEMU run by hand with env's kernel
// and initramfs, timed from its start to the agent's first console line
// (wall clock, and the guest's uptime then).
// With devices it attaches what banger's VMs have besides the root disk
// (a work disk, the agent's virtio-serial port): the kernel's boot pays
// for each device before userspace starts.
func FloorBoot(env *Env, rootfs, accel string, i int, devices bool) (wall, guestInit time.Duration, err error) {
	dir := filepath.Join(env.Dir, fmt.Sprintf("floor%d-%v", i, devices))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	// The same machine as banger's (rtc=on gives the guest its wall
	// clock, and costs boot time): the floor differs only in what banger
	// adds, its devices and its agent.
	cmd := exec.Command("qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=on", "-accel", accel, "-cpu", "max", "-m", "512", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", env.Vmlinux, "-initrd", env.Initrd, "-append", boot.Cmdline(proto.BootParams{Hostname: "floor"}, accel == "tcg"),
		"-drive", "id=root,file="+rootfs+",format=raw,if=none,readonly=on", "-device", "virtio-blk-device,drive=root,serial="+proto.RootSerial,
		"-serial", "stdio")
	if devices {
		work, err := WorkDisk(dir)
		if err != nil {
			return 0, 0, err
		}
		cmd.Args = append(cmd.Args, "-drive", "id=work,file="+work+",format=raw,if=none", "-device", "virtio-blk-device,drive=work,serial="+proto.WorkSerial,
			"-device", "virtio-serial-device", "-chardev", "socket,id=agent,path="+filepath.Join(dir, "agent.sock")+",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name="+proto.PortName)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	type mark struct{ wall, guest time.Duration }
	found := make(chan mark, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if _, at, ok := strings.Cut(sc.Text(), "banger-agent: init started at "); ok {
				secs, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(at), "s"), 64)
				found <- mark{time.Since(start), time.Duration(secs * float64(time.Second))}
				io.Copy(io.Discard, out)
				return
			}
		}
		close(found)
	}()
	select {
	case m, ok := <-found:
		if !ok {
			return 0, 0, fmt.Errorf("floor boot: QEMU ended before userspace")
		}
		return m.wall, m.guest, nil
	case <-time.After(3 * time.Minute):
		return 0, 0, fmt.Errorf("floor boot: no userspace line after 3 minutes")
	}
}
