// Command workspace benchmarks placing a large tree in a VM through the
// real daemon and CLI (`vm workspace prepare` of 50,000 small files),
// beside a floor measured in the same VM: the guest creating the same
// files itself, with nothing sent (test/smoke/porttest files). Under TCG
// every file system call in the guest is slow, so the floor says what the
// transfer adds. Then a status and a pull after one file changed in the
// guest (hashing every file on both sides). It prints figures; it asserts
// nothing.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bangerdev/banger/bench/benchkit"
)

func main() {
	var o opts
	flag.StringVar(&o.bin, "bin", "bin", "directory of banger and bangerd")
	flag.StringVar(&o.crane, "crane", ".tools/crane", "crane binary")
	flag.IntVar(&o.files, "files", 50000, "files in the tree")
	flag.IntVar(&o.runs, "runs", 1, "runs of each measure")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "bench-workspace: %v\n", err)
		os.Exit(1)
	}
}

type opts struct {
	bin, crane  string
	files, runs int
}

func run(o opts) error {
	work, err := os.MkdirTemp("", "bench-ws-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cli := benchkit.CLI{Bin: o.bin, Home: filepath.Join(work, "home")}
	banger, timed := cli.Run, cli.Timed
	fmt.Println("preparing kernel, image and a tree...")
	stop, err := cli.Start()
	if err != nil {
		return err
	}
	defer stop()
	if err := cli.ImportPorttest(o.crane, work, "ws"); err != nil {
		return err
	}
	tree := filepath.Join(work, "tree")
	for i := range o.files {
		dir := filepath.Join(tree, fmt.Sprintf("d%03d", i/500))
		if i%500 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d.txt", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644); err != nil {
			return err
		}
	}

	var floor, prepare, status, pull []time.Duration
	for i := range o.runs {
		name := fmt.Sprintf("ws-%d", i)
		if err := banger("vm", "create", "--name", name, "--image", "ws", "--network", "none", "--cpus", "1", "--memory", "1G"); err != nil {
			return err
		}
		d, err := timed("vm", "exec", name, "--", "/bin/porttest", "files", strconv.Itoa(o.files), "/floor")
		if err != nil {
			return err
		}
		floor = append(floor, d)
		if d, err = timed("vm", "workspace", "prepare", name, tree); err != nil {
			return err
		}
		prepare = append(prepare, d)
		if err := banger("vm", "exec", name, "--", "/bin/sh", "-c", "echo changed > /workspace/d000/f00000.txt"); err != nil {
			return err
		}
		if d, err = timed("vm", "workspace", "status", name); err != nil {
			return err
		}
		status = append(status, d)
		if d, err = timed("vm", "workspace", "pull", name); err != nil {
			return err
		}
		pull = append(pull, d)
		if err := banger("vm", "delete", "--force", name); err != nil {
			return err
		}
	}
	ms := func(ds []time.Duration) string { return benchkit.Median(ds).Round(10 * time.Millisecond).String() }
	fmt.Printf("\nA workspace of %d small files through bangerd and the CLI, %d run(s), median (TCG, 1 vCPU):\n", o.files, o.runs)
	fmt.Printf("  %-58s %10s\n", "floor: the guest creates the same files itself", ms(floor))
	fmt.Printf("  %-58s %10s  (%.2fx the floor)\n", "vm workspace prepare (hash, tar over the agent, stage, rename)", ms(prepare),
		benchkit.Median(prepare).Seconds()/benchkit.Median(floor).Seconds())
	fmt.Printf("  %-58s %10s\n", "vm workspace status (hash both sides)", ms(status))
	fmt.Printf("  %-58s %10s\n", "vm workspace pull of one changed file", ms(pull))
	return nil
}
