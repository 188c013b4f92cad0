// Command disk benchmarks the work disk's cache mode: the same VM booted
// with cache=unsafe (the guest's flushes ignored, the old default) and
// cache=writeback (flushes honoured, banger's mode for writable disks),
// alternating in the same run, each running writes that flush: one
// large file written with fsync, then many small files each fsynced (a
// git commit, a package install). It prints figures and the ratio; it
// asserts nothing.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bangerdev/banger/bench/benchkit"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/boot/boottest"
)

func main() {
	runs := flag.Int("runs", 3, "boots of each mode")
	flag.Parse()
	if err := run(*runs); err != nil {
		fmt.Fprintf(os.Stderr, "bench-disk: %v\n", err)
		os.Exit(1)
	}
}

// workloads run in the guest, on the overlay whose upper layer is the
// work disk.
var workloads = []struct{ name, script string }{
	{"64 MiB, one fsync", "dd if=/dev/zero of=/root/big bs=1M count=64 conv=fsync status=none"},
	{"200 x 4 KiB, each fsynced", "mkdir -p /root/small && for i in $(seq 200); do dd if=/dev/zero of=/root/small/$i bs=4k count=1 conv=fsync status=none; done"},
}

func run(runs int) error {
	fmt.Println("preparing kernel, initramfs and images (boottest.Setup)...")
	env, err := boottest.Setup()
	if err != nil {
		return err
	}
	defer os.RemoveAll(env.Dir)
	times := map[bool][][]time.Duration{}
	for i := range runs {
		for _, volatile := range []bool{true, false} {
			ts, err := measure(env, i, volatile)
			if err != nil {
				return err
			}
			times[volatile] = append(times[volatile], ts)
			fmt.Printf("  run %d, %s: %v\n", i+1, mode(volatile), ts)
		}
	}
	fmt.Printf("\nwork disk cache mode, %d runs each, alternating, median (1 vCPU, 512 MiB, debian image):\n", runs)
	for w, wl := range workloads {
		med := map[bool]time.Duration{}
		for _, v := range []bool{true, false} {
			var col []time.Duration
			for _, r := range times[v] {
				col = append(col, r[w])
			}
			med[v] = benchkit.Median(col)
		}
		fmt.Printf("  %-28s unsafe %8s  writeback %8s  writeback/unsafe %.2fx\n", wl.name,
			med[true].Round(time.Millisecond), med[false].Round(time.Millisecond), med[false].Seconds()/med[true].Seconds())
	}
	return nil
}

func mode(volatile bool) string {
	if volatile {
		return "cache=unsafe"
	}
	return "cache=writeback"
}

// measure boots one VM with the work disk in the given mode and times
// each workload through the agent.
func measure(env *boottest.Env, i int, volatile bool) ([]time.Duration, error) {
	vm, err := boottest.BangerBoot(env, env.Images["debian"], filepath.Join(env.Dir, fmt.Sprintf("disk%d-%v", i, volatile)), volatile)
	if err != nil {
		return nil, err
	}
	defer vm.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out []time.Duration
	for _, wl := range workloads {
		d, err := timed(ctx, vm.Agent, wl.script)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", wl.name, err)
		}
		out = append(out, d)
	}
	return out, nil
}

func timed(ctx context.Context, c *client.Client, script string) (time.Duration, error) {
	var stderr bytes.Buffer
	start := time.Now()
	r, err := c.Exec(ctx, proto.ExecParams{Args: []string{"sh", "-c", script}}, nil, nil, &stderr)
	if err == nil && r.ExitCode != 0 {
		err = fmt.Errorf("exit %d: %s", r.ExitCode, stderr.String())
	}
	return time.Since(start), err
}
