// Command vm benchmarks VM creation through the real daemon and CLI: the
// cost of create (work disk, record; no boot) and create-to-first-command
// (create, boot, `vm exec -- true`), for a small image (busybox, ~2 MB)
// and a large one (Debian plus a 768 MiB file, ~1 GB), beside the
// bare-QEMU floor of the boot benchmark (same kernel and initramfs, same
// devices, to the first userspace line). It prints figures; it asserts
// nothing.
package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/bangerdev/banger/bench/benchkit"

	"github.com/bangerdev/banger/internal/boot/boottest"
)

func main() { benchkit.Main("bench-vm", run) }

func run(o benchkit.Opts) error {
	w, err := benchkit.NewWorld("bench-vm", o.Bin)
	if err != nil {
		return err
	}
	defer w.Close()
	env, work, banger := w.Env, w.Work, w.CLI.Run
	images, err := buildImages(o, work)
	if err != nil {
		return err
	}
	for name, archive := range images {
		if err := banger("image", "import", archive, "--name", name); err != nil {
			return err
		}
	}

	type figures struct{ create, firstCommand []time.Duration }
	results := map[string]*figures{}
	for _, img := range []string{"small", "large"} {
		f := &figures{}
		results[img] = f
		for i := range o.Runs {
			name := fmt.Sprintf("%s-%d", img, i)
			common := []string{"--image", img, "--network", "none", "--cpus", "1", "--memory", "512M", "--disk", "10G"}
			t0 := time.Now()
			if err := banger(append([]string{"vm", "create", "--name", name + "-cold", "--no-start"}, common...)...); err != nil {
				return err
			}
			f.create = append(f.create, time.Since(t0))
			t0 = time.Now()
			if err := banger(append([]string{"vm", "create", "--name", name}, common...)...); err != nil {
				return err
			}
			if err := banger("vm", "exec", name, "--", "true"); err != nil {
				return err
			}
			f.firstCommand = append(f.firstCommand, time.Since(t0))
			if err := banger("vm", "delete", "--force", name, name+"-cold"); err != nil {
				return err
			}
		}
	}
	var floor []time.Duration
	for i := range o.Runs {
		d, _, err := boottest.FloorBoot(env, env.Images["debian"], "tcg", i, true)
		if err != nil {
			return err
		}
		floor = append(floor, d)
	}

	ms := func(ds []time.Duration) string { return benchkit.Median(ds).Round(time.Millisecond).String() }
	fmt.Printf("\nVM creation through bangerd and the CLI, %d runs, median (TCG, 1 vCPU, 512 MiB, 10 GiB work disk, no network):\n", o.Runs)
	fmt.Printf("  %-46s %10s %10s\n", "", "small", "large")
	fmt.Printf("  %-46s %10s %10s\n", "image rootfs", "~2 MB", "~1 GB")
	fmt.Printf("  %-46s %10s %10s\n", "create, no boot (work disk + record)", ms(results["small"].create), ms(results["large"].create))
	fmt.Printf("  %-46s %10s %10s\n", "create to first command (boot, exec true)", ms(results["small"].firstCommand), ms(results["large"].firstCommand))
	fmt.Printf("  %-46s %10s\n", "floor: bare QEMU to first userspace line", ms(floor))
	fmt.Printf("  large/small create cost: %.2fx (goal: the same; the image is shared, never copied)\n",
		benchkit.Median(results["large"].create).Seconds()/benchkit.Median(results["small"].create).Seconds())
	return nil
}

// buildImages writes a small and a large image as docker-save archives.
func buildImages(o benchkit.Opts, dir string) (map[string]string, error) {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox-static: %w", err)
	}
	small := filepath.Join(dir, "small.tar")
	if err := benchkit.WriteTar(small, map[string][]byte{"bin/busybox": bb}, map[string]string{"bin/sh": "busybox", "bin/true": "busybox"}); err != nil {
		return nil, err
	}
	big := make([]byte, 768<<20)
	if _, err := io.ReadFull(rand.Reader, big); err != nil { // incompressible
		return nil, err
	}
	bigLayer := filepath.Join(dir, "big.tar")
	if err := benchkit.WriteTar(bigLayer, map[string][]byte{"opt/big.bin": big}, nil); err != nil {
		return nil, err
	}
	out := map[string]string{"small": filepath.Join(dir, "small-image.tar"), "large": filepath.Join(dir, "large-image.tar")}
	layers := map[string][]string{"small": {small}, "large": {filepath.Join(boottest.CacheDir(), "debian-bookworm-minbase.tar.gz"), bigLayer}}
	for name, ls := range layers {
		args := []string{"append", "-t", name + ":bench", "-o", out[name]}
		for _, l := range ls {
			args = append(args, "-f", l)
		}
		if b, err := exec.Command(o.Crane, args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("crane %v: %v\n%s", args, err, b)
		}
	}
	return out, nil
}
