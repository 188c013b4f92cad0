// Command e2b benchmarks the E2B API as its users see it: the E2B JS SDK
// (npm e2b, test/clients) runs Sandbox.create() then commands.run("echo
// hi"), against `banger vm run --rm -- echo hi` of the same image and
// shape, interleaved in one run on one machine; and commands.run on a
// running sandbox against `banger vm exec`. It prints p50 and p95 and
// ratios beside E2B's published figure (theirs, on KVM); it asserts
// nothing.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/bench/benchkit"
	"github.com/bangerdev/banger/internal/boot/boottest"
)

func main() { benchkit.Main("bench-e2b", run) }

func run(o benchkit.Opts) error {
	clients, err := filepath.Abs(".tools/node")
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(clients, "node_modules", "e2b")); err != nil {
		return fmt.Errorf("no E2B SDK in %s: run scripts/deps.sh", clients)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := l.Addr().String()
	l.Close()
	w, err := benchkit.NewWorldWith("bench-e2b", o.Bin, fmt.Sprintf("[e2b]\nlisten = %q\n", addr))
	if err != nil {
		return err
	}
	defer w.Close()
	cli := w.CLI
	if err := cli.ImportLayer(o.Crane, w.Work, "debian", filepath.Join(boottest.CacheDir(), "debian-bookworm-minbase.tar.gz")); err != nil {
		return err
	}
	out, err := cli.Output("e2b", "key", "create", "bench", "--json")
	if err != nil {
		return err
	}
	var key struct{ Secret string }
	if err := json.Unmarshal([]byte(out), &key); err != nil {
		return err
	}
	// One shape for both: 1 vCPU, 512 MiB, with internet (a sandbox's
	// default), so that each is a restore of its warm template.
	if err := cli.Run("e2b", "template", "set", "bench", "debian", "--cpus", "1", "--memory", "512M"); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(clients, "bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	script, err := os.ReadFile("test/clients/e2b-bench.mjs")
	if err != nil {
		return fmt.Errorf("%w (run from the repository root)", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.mjs"), script, 0o644); err != nil {
		return err
	}
	sdk := func(runs int) ([]map[string]float64, error) {
		cmd := exec.Command("node", "bench.mjs")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "E2B_API_URL=http://"+addr, "E2B_SANDBOX_URL=http://"+addr, "E2B_API_KEY="+key.Secret,
			"TEMPLATE=bench", fmt.Sprintf("RUNS=%d", runs))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("the E2B SDK: %v\n%s", err, out)
		}
		var lines []map[string]float64
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			var m map[string]float64
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines = append(lines, m)
			}
		}
		return lines, nil
	}
	// The SDK runs a command as /bin/bash -l -c CMD: banger's side runs
	// the same, so the ratios are the paths' and not bash's.
	sh := []string{"/bin/bash", "-l", "-c", "echo hi"}
	vmRun := append([]string{"vm", "run", "--rm", "--image", "debian", "--cpus", "1", "--memory", "512M", "--nat", "--"}, sh...)
	runs := max(o.Runs, 20)
	var createRun, create, kill, vmRunTimes []time.Duration
	for i := range runs + 2 { // two warm-ups, then interleaved
		lines, err := sdk(0)
		if err != nil {
			return err
		}
		d, err := cli.Timed(vmRun...)
		if err != nil {
			return err
		}
		if i < 2 {
			continue
		}
		last := lines[len(lines)-1]
		createRun = append(createRun, msDur(last["create_run_ms"]))
		create = append(create, msDur(last["create_ms"]))
		kill = append(kill, msDur(last["kill_ms"]))
		vmRunTimes = append(vmRunTimes, d)
	}
	// commands.run on a running sandbox against vm exec on a running VM.
	lines, err := sdk(runs)
	if err != nil {
		return err
	}
	var sdkExec, vmExec []time.Duration
	for _, l := range lines[:len(lines)-1] {
		sdkExec = append(sdkExec, msDur(l["run_ms"]))
	}
	if err := cli.Run("vm", "create", "--name", "e", "--image", "debian", "--cpus", "1", "--memory", "512M", "--nat"); err != nil {
		return err
	}
	for range runs {
		d, err := cli.Timed(append([]string{"vm", "exec", "e", "--"}, sh...)...)
		if err != nil {
			return err
		}
		vmExec = append(vmExec, d)
	}
	base := benchkit.Percentile(vmRunTimes, 50)
	fmt.Printf("\nSandbox.create() then commands.run(\"echo hi\") through the E2B JS SDK 2.51.0 (which runs bash -l -c),\nagainst banger vm run --rm of the same, %d each, interleaved (TCG here, 1 vCPU, 512 MiB, Debian, warm templates):\n", runs)
	fmt.Printf("  %-66s %9s %9s %12s\n", "", "p50", "p95", "p50 vs run")
	row := func(name string, ds []time.Duration, vs time.Duration) {
		fmt.Printf("  %-66s %7.0fms %7.0fms", name, msf(benchkit.Percentile(ds, 50)), msf(benchkit.Percentile(ds, 95)))
		if vs > 0 {
			fmt.Printf(" %11.2fx", float64(benchkit.Percentile(ds, 50))/float64(vs))
		}
		fmt.Println()
	}
	row("E2B SDK: Sandbox.create() + commands.run (ours, TCG)", createRun, base)
	row("  of it Sandbox.create()", create, base)
	row("  then sandbox.kill() (not in the line above)", kill, 0)
	row("banger vm run --rm -- bash -lc 'echo hi' (create, run, delete)", vmRunTimes, base)
	row("E2B SDK: commands.run('echo hi') on a running sandbox", sdkExec, benchkit.Percentile(vmExec, 50))
	row("banger vm exec e -- bash -lc 'echo hi' (a CLI process a call)", vmExec, benchkit.Percentile(vmExec, 50))
	fmt.Println("  E2B's published figure (theirs, KVM, Firecracker snapshot restore): a sandbox starts in about 150 ms (e2b.dev)")
	return cli.Run("vm", "delete", "--force", "e")
}

func msDur(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
