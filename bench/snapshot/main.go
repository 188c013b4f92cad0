// Command snapshot benchmarks what snapshots buy through the real daemon
// and CLI: create to first command booted (--cold) and started from a
// template (warm), a fork of 4, suspend, and resume to first command
// (`vm exec` of a suspended VM), with the saved state's size and the
// VMM's RSS before and after the suspend, beside the bare-QEMU boot floor
// measured in the same run. It prints figures and ratios; it asserts
// nothing.
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
	fmt.Printf("  the template (image warm, once): %s; saved state: %s MB on disk; QEMU's RSS before suspend: %s MB, after: none (the process is gone)\n",
		template.Round(time.Millisecond), mb(medianInt(stateBytes)), mb(medianInt(rssBefore)))
	fmt.Println("  not measured: Firecracker (no KVM here; its warm create is designed for, not timed)")
	return nil
}

// rss is a process's resident set in bytes (0 when unknown).
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
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
