// Command snapshot benchmarks what snapshots buy through the real daemon
// and CLI: create to first command booted (--cold) and started from a
// template (warm), a fork of 4, suspend, and resume to first command
// (`vm exec` of a suspended VM), with the saved state's size and the
// VMM's RSS before and after the suspend, beside the bare-QEMU boot floor
// measured in the same run; then once the template's making, a fork of
// 16, and the host memory (sum of PSS) of 16 idle VMs made from one
// template against one cold VM's. It prints figures and ratios; it
// asserts nothing.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/bench/benchkit"
	"github.com/bangerdev/banger/internal/boot/boottest"
)

func main() { benchkit.Main("bench-snapshot", run) }

func run(o benchkit.Opts) error {
	w, err := benchkit.NewWorld("bench-snapshot", o.Bin)
	if err != nil {
		return err
	}
	defer w.Close()
	env, cli := w.Env, w.CLI
	if err := cli.ImportBusybox(o.Crane, w.Work, "small"); err != nil {
		return err
	}
	show := func(name string) (api.VM, error) {
		out, err := cli.Output("vm", "show", name, "--json")
		var v api.VM
		if err == nil {
			err = json.Unmarshal([]byte(out), &v)
		}
		return v, err
	}

	shape := []string{"--image", "small", "--network", "none", "--cpus", "1", "--memory", "512M"}
	// The template, once, as the first create of this shape would make it.
	template, err := cli.Timed(append([]string{"image", "warm", "small"}, shape[2:]...)...)
	if err != nil {
		return err
	}
	// create then exec true, timed together.
	firstCommand := func(name string, extra ...string) (time.Duration, error) {
		t0 := time.Now()
		if err := cli.Run(append(append([]string{"vm", "create", "--name", name}, shape...), extra...)...); err != nil {
			return 0, err
		}
		if err := cli.Run("vm", "exec", name, "--", "true"); err != nil {
			return 0, err
		}
		return time.Since(t0), nil
	}
	var cold, warm, fork, suspend, resume, floor []time.Duration
	var stateBytes, rssBefore []int64
	for i := range o.Runs {
		d, err := firstCommand(fmt.Sprintf("cold-%d", i), "--cold")
		if err != nil {
			return err
		}
		cold = append(cold, d)
		if err := cli.Run("vm", "delete", "--force", fmt.Sprintf("cold-%d", i)); err != nil {
			return err
		}
		name := fmt.Sprintf("snap-%d", i)
		if d, err = firstCommand(name); err != nil {
			return err
		}
		warm = append(warm, d)
		if d, err = cli.Timed("vm", "fork", name, "--count", "4"); err != nil {
			return err
		}
		fork = append(fork, d)
		for c := 1; c <= 4; c++ {
			if err := cli.Run("vm", "delete", "--force", fmt.Sprintf("%s-fork-%d", name, c)); err != nil {
				return err
			}
		}
		v, err := show(name)
		if err != nil {
			return err
		}
		rssBefore = append(rssBefore, rss(v.PID))
		if d, err = cli.Timed("vm", "suspend", name); err != nil {
			return err
		}
		suspend = append(suspend, d)
		if v, err = show(name); err != nil {
			return err
		}
		if v.State != api.VMSuspended || v.PID != 0 {
			return fmt.Errorf("vm %s after suspend: %s, pid %d", name, v.State, v.PID)
		}
		stateBytes = append(stateBytes, v.StateBytes)
		if d, err = cli.Timed("vm", "exec", name, "--", "true"); err != nil {
			return err
		}
		resume = append(resume, d)
		if err := cli.Run("vm", "delete", "--force", name); err != nil {
			return err
		}
		fd, _, err := boottest.FloorBoot(env, env.Images["debian"], "tcg", i, true)
		if err != nil {
			return err
		}
		floor = append(floor, fd)
	}

	// Density, once: a fork of 16, and the host memory (PSS) of 16 idle
	// VMs made from one template against one cold VM's.
	dens, err := density(cli, show, firstCommand)
	if err != nil {
		return err
	}

	med := benchkit.Median
	ms := func(ds []time.Duration) string { return med(ds).Round(time.Millisecond).String() }
	ratio := func(ds []time.Duration) string { return fmt.Sprintf("%.2fx", med(ds).Seconds()/med(floor).Seconds()) }
	fmt.Printf("\nSnapshots through bangerd and the CLI, %d runs, median (TCG, 1 vCPU, 512 MiB, busybox image, no network):\n", o.Runs)
	fmt.Printf("  %-52s %10s %12s\n", "", "time", "vs floor")
	fmt.Printf("  %-52s %10s %12s\n", "floor: bare QEMU to first userspace line", ms(floor), "1.00x")
	fmt.Printf("  %-52s %10s %12s\n", "cold: create --cold to first command (boot, exec)", ms(cold), ratio(cold))
	fmt.Printf("  %-52s %10s %12s  (goal: at most 0.35x)\n", "warm: create to first command (from the template)", ms(warm), ratio(warm))
	fmt.Printf("  %-52s %10s %12s  (goal: at most 2x one resume: %.2fx)\n", "vm fork --count 4 (all four running, identities given)", ms(fork), ratio(fork),
		med(fork).Seconds()/med(resume).Seconds())
	fmt.Printf("  %-52s %10s %12s\n", "vm suspend (save memory, end QEMU)", ms(suspend), ratio(suspend))
	fmt.Printf("  %-52s %10s %12s  (goal: at most 0.30x)\n", "resume to first command (vm exec of a suspended VM)", ms(resume), ratio(resume))
	fmt.Printf("  %-52s %10s %12s\n", "the template (image warm, once)", template.Round(time.Millisecond), fmt.Sprintf("%.2fx", template.Seconds()/med(floor).Seconds()))
	fmt.Printf("  %-52s %10s %12s  (%.2fx one resume)\n", "vm fork --count 16 (once)", dens.fork16.Round(time.Millisecond),
		fmt.Sprintf("%.2fx", dens.fork16.Seconds()/med(floor).Seconds()), dens.fork16.Seconds()/med(resume).Seconds())
	fmt.Printf("  host memory of 16 idle VMs from one template (sum of PSS): %s MB = %.2fx one cold VM's %s MB (goal: at most 3x); 16 cold VMs would be %s MB\n",
		mb(dens.pss16), float64(dens.pss16)/float64(dens.pssCold), mb(dens.pssCold), mb(16*dens.pssCold))
	fmt.Printf("  saved state: %s MB on disk (the memory file is sparse); QEMU's RSS before suspend: %s MB, after: none (the process is gone)\n",
		mb(medianInt(stateBytes)), mb(medianInt(rssBefore)))
	fmt.Println("  not measured: Firecracker (no KVM here; its warm create is designed for, not timed)")
	return nil
}

// densities are the density figures.
type densities struct {
	fork16         time.Duration
	pss16, pssCold int64 // bytes
}

// density forks a VM into 16, then measures the PSS of 16 VMs created
// from the template, idle, against one booted cold.
func density(cli benchkit.CLI, show func(string) (api.VM, error), firstCommand func(string, ...string) (time.Duration, error)) (densities, error) {
	var d densities
	if _, err := firstCommand("dens-src"); err != nil {
		return d, err
	}
	var err error
	if d.fork16, err = cli.Timed("vm", "fork", "dens-src", "--count", "16"); err != nil {
		return d, err
	}
	for c := 1; c <= 16; c++ {
		if err := cli.Run("vm", "delete", "--force", fmt.Sprintf("dens-src-fork-%d", c)); err != nil {
			return d, err
		}
	}
	if err := cli.Run("vm", "delete", "--force", "dens-src"); err != nil {
		return d, err
	}
	var names []string
	for i := range 16 {
		name := fmt.Sprintf("dens-%d", i)
		if _, err := firstCommand(name); err != nil {
			return d, err
		}
		names = append(names, name)
	}
	time.Sleep(5 * time.Second) // the measure is of idle VMs: five seconds of it
	for _, n := range names {
		v, err := show(n)
		if err != nil {
			return d, err
		}
		d.pss16 += pss(v.PID)
	}
	for _, n := range names {
		if err := cli.Run("vm", "delete", "--force", n); err != nil {
			return d, err
		}
	}
	if _, err := firstCommand("dens-cold", "--cold"); err != nil {
		return d, err
	}
	time.Sleep(5 * time.Second)
	v, err := show("dens-cold")
	if err != nil {
		return d, err
	}
	d.pssCold = pss(v.PID)
	return d, cli.Run("vm", "delete", "--force", "dens-cold")
}

// pss is a process's proportional set size in bytes (0 when unknown):
// pages shared with other processes count their share.
func pss(pid int) int64 { return procKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:") }

// rss is a process's resident set in bytes (0 when unknown).
func rss(pid int) int64 { return procKB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:") }

// procKB is the kB figure after key in a /proc file, in bytes (0 when
// unknown).
func procKB(file, key string) int64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func medianInt(v []int64) int64 {
	ds := make([]time.Duration, len(v))
	for i, x := range v {
		ds[i] = time.Duration(x)
	}
	return int64(benchkit.Median(ds))
}

func mb(n int64) string { return strconv.FormatInt(n>>20, 10) }
