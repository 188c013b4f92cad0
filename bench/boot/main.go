// Command boot benchmarks banger's boot, QEMU start to guest agent ready,
// against the floor on the same machine in the same run: the same kernel,
// initramfs and disk booted by a plain qemu-system-x86_64 command to its
// first userspace line (the agent's "init started" on the console). It
// then boots the systemd test image with the agent as init and with
// systemd as init. It prints figures and ratios; it asserts nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bangerdev/banger/bench/benchkit"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/boot/boottest"
	"github.com/bangerdev/banger/internal/kvm"
)

func main() {
	runs := flag.Int("runs", 5, "boots of each kind")
	image := flag.String("image", "debian", "debian or busybox")
	flag.Parse()
	if err := run(*runs, *image); err != nil {
		fmt.Fprintf(os.Stderr, "bench-boot: %v\n", err)
		os.Exit(1)
	}
}

func run(runs int, image string) error {
	fmt.Println("preparing kernel, initramfs and images (boottest.Setup)...")
	env, err := boottest.Setup()
	if err != nil {
		return err
	}
	defer os.RemoveAll(env.Dir)
	rootfs := env.Images[image]
	if rootfs == "" {
		return fmt.Errorf("no image %q", image)
	}
	accel := "tcg"
	if err := kvm.KVMUsable(); err == nil {
		accel = "kvm"
	} else {
		fmt.Printf("accelerator: TCG (%v)\n", err)
	}
	var floor, floorDev, banger, floorInit, bangerInit, bangerReady []time.Duration
	for i := range runs {
		f, fi, err := boottest.FloorBoot(env, rootfs, accel, i, false)
		if err != nil {
			return err
		}
		fd, _, err := boottest.FloorBoot(env, rootfs, accel, i, true)
		if err != nil {
			return err
		}
		floorDev = append(floorDev, fd)
		b, bi, br, err := bangerBoot(env, rootfs, i)
		if err != nil {
			return err
		}
		fmt.Printf("  run %d: floor %s (guest init %s), floor with banger's devices %s, banger %s (guest init %s, ready %s)\n", i+1,
			f.Round(time.Millisecond), fi.Round(time.Millisecond), fd.Round(time.Millisecond), b.Round(time.Millisecond), bi.Round(time.Millisecond), br.Round(time.Millisecond))
		floor, banger = append(floor, f), append(banger, b)
		floorInit, bangerInit, bangerReady = append(floorInit, fi), append(bangerInit, bi), append(bangerReady, br)
	}
	mf, mfd, mb := benchkit.Median(floor), benchkit.Median(floorDev), benchkit.Median(banger)
	fmt.Printf("\nboot of the %s image, %d runs each, alternating, median (%s, 1 vCPU, 512 MiB):\n", image, runs, accel)
	fmt.Printf("  floor: plain qemu-system-x86_64, root disk only, to the first userspace line  %8s\n", mf.Round(time.Millisecond))
	fmt.Printf("  floor with banger's devices (+ work disk, virtio-serial port)                %8s\n", mfd.Round(time.Millisecond))
	fmt.Printf("  banger: QEMU start to agent ready (modules, root, network, agent)            %8s\n", mb.Round(time.Millisecond))
	fmt.Printf("  overhead against the root-disk-only floor                                    %7.0f%%  (goal: under 25%%)\n", 100*(mb.Seconds()/mf.Seconds()-1))
	fmt.Printf("  overhead against the same-devices floor                                      %7.0f%%\n", 100*(mb.Seconds()/mfd.Seconds()-1))
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	fmt.Printf("  guest clock (kernel start to): floor init %s; banger init %s, agent ready %s\n",
		ms(benchkit.Median(floorInit)), ms(benchkit.Median(bangerInit)), ms(benchkit.Median(bangerReady)))
	return systemdBoots(env, runs)
}

// systemdBoots times the systemd image to agent ready with the agent as
// init and with the image's systemd as init (the agent its service),
// alternating, and prints both and their ratio.
func systemdBoots(env *boottest.Env, runs int) error {
	rootfs := env.Images["systemd"]
	var agentWall, initWall, agentReady, initReady []time.Duration
	for i := range runs {
		for _, init := range []string{"", "/sbin/init"} {
			dir := filepath.Join(env.Dir, fmt.Sprintf("systemd%d%v", i, init != ""))
			vm, err := boottest.BangerBootWith(env, rootfs, dir, proto.BootParams{Hostname: "bench", Init: init})
			if err != nil {
				return fmt.Errorf("booting the systemd image (init %q): %w", init, err)
			}
			ready, err := guestReady(vm)
			vm.Stop()
			if err != nil {
				return err
			}
			if init == "" {
				agentWall, agentReady = append(agentWall, vm.Wall), append(agentReady, ready)
			} else {
				initWall, initReady = append(initWall, vm.Wall), append(initReady, ready)
			}
			fmt.Printf("  systemd image run %d, init %-10s QEMU start to agent ready %s (guest clock %s)\n", i+1,
				map[bool]string{true: "agent", false: "systemd"}[init == ""], vm.Wall.Round(time.Millisecond), ready.Round(time.Millisecond))
		}
	}
	ma, mi := benchkit.Median(agentWall), benchkit.Median(initWall)
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	fmt.Printf("\nboot of the systemd image (Debian, systemd, Docker), %d runs each, alternating, median:\n", runs)
	fmt.Printf("  --init agent: QEMU start to agent ready                                      %8s (guest clock %s)\n", ms(ma), ms(benchkit.Median(agentReady)))
	fmt.Printf("  --init image: QEMU start to agent ready as systemd's service                 %8s (guest clock %s)\n", ms(mi), ms(benchkit.Median(initReady)))
	fmt.Printf("  ratio, image's init to agent alone                                            %7.2fx\n", mi.Seconds()/ma.Seconds())
	return nil
}

// guestReady is the agent's "agent ready" phase on the guest's clock.
func guestReady(vm *boottest.Booted) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var info proto.InfoResult
	if err := vm.Agent.Call(ctx, proto.MethodInfo, nil, &info); err != nil {
		return 0, err
	}
	for _, t := range info.Timings {
		if t.Phase == "agent ready" {
			return time.Duration(t.Seconds * float64(time.Second)), nil
		}
	}
	return 0, fmt.Errorf("no agent ready phase in %+v", info.Timings)
}

// bangerBoot boots as banger does and times QEMU start to agent ready.
func bangerBoot(env *boottest.Env, rootfs string, i int) (wall, guestInit, guestReady time.Duration, err error) {
	vm, err := boottest.BangerBoot(env, rootfs, filepath.Join(env.Dir, fmt.Sprintf("banger%d", i)), false)
	if err != nil {
		return 0, 0, 0, err
	}
	defer vm.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var info proto.InfoResult
	if err := vm.Agent.Call(ctx, proto.MethodInfo, nil, &info); err != nil {
		return 0, 0, 0, err
	}
	for _, t := range info.Timings {
		d := time.Duration(t.Seconds * float64(time.Second))
		switch t.Phase {
		case "init started":
			guestInit = d
		case "agent ready":
			guestReady = d
		}
	}
	return vm.Wall, guestInit, guestReady, nil
}
