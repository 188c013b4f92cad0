// Command image benchmarks `banger image pull` of a realistic Debian image
// from a registry on 127.0.0.1 against doing it by hand on the same machine
// in the same run (crane pull, crane export | tar -x, mkfs.ext4 -d), and
// banger's flatten throughput against cp on the same bytes. It prints
// figures and ratios; it asserts nothing.
//
//	go run ./bench/image -bin bin -registry .tools/registry -crane .tools/crane -debian FILE.tar.gz
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/bench/benchkit"

	"github.com/bangerdev/banger/internal/rootfs"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench-image: %v\n", err)
		os.Exit(1)
	}
}

type opts struct {
	bin, registry, crane, debian string
	runs                         int
}

func run() error {
	var o opts
	flag.StringVar(&o.bin, "bin", "bin", "directory of banger and bangerd")
	flag.StringVar(&o.registry, "registry", ".tools/registry", "CNCF distribution registry binary")
	flag.StringVar(&o.crane, "crane", ".tools/crane", "crane binary")
	flag.StringVar(&o.debian, "debian", "/var/cache/banger-test/debian-bookworm-minbase.tar.gz", "Debian tree tarball (scripts/testimages.sh)")
	flag.IntVar(&o.runs, "runs", 5, "runs of each side")
	flag.Parse()
	for _, p := range []*string{&o.bin, &o.registry, &o.crane, &o.debian} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	work, err := os.MkdirTemp("", "bench-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	addr, stop, err := startRegistry(o.registry, work)
	if err != nil {
		return err
	}
	defer stop()
	ref := addr + "/bench/debian:bookworm"
	if out, err := exec.Command(o.crane, "append", "--insecure", "-f", o.debian, "-t", ref).CombinedOutput(); err != nil {
		return fmt.Errorf("pushing the Debian image: %v\n%s", err, out)
	}
	fi, _ := os.Stat(o.debian)
	fmt.Printf("image: %s (one layer, %s compressed)\nruns: %d of each, alternating; median shown\n\n", ref, mib(fi.Size()), o.runs)

	var bangerT, baseT, pullT, exportT, mkfsT []time.Duration
	for i := range o.runs {
		b, err := bangerPull(o, work, ref, i)
		if err != nil {
			return err
		}
		bangerT = append(bangerT, b)
		steps, err := baseline(o, work, ref, i)
		if err != nil {
			return err
		}
		baseT = append(baseT, steps[0]+steps[1]+steps[2])
		pullT, exportT, mkfsT = append(pullT, steps[0]), append(exportT, steps[1]), append(mkfsT, steps[2])
	}
	mb, mbase := benchkit.Median(bangerT), benchkit.Median(baseT)
	fmt.Printf("pull + flatten, from a registry on 127.0.0.1 to a bootable ext4 image:\n")
	fmt.Printf("  banger image pull                         %8s\n", mb.Round(time.Millisecond))
	fmt.Printf("  baseline: crane pull; crane export | tar -x; mkfs.ext4 -d\n")
	fmt.Printf("                                            %8s  (pull %s, export+untar %s, mkfs %s)\n",
		mbase.Round(time.Millisecond), benchkit.Median(pullT).Round(time.Millisecond), benchkit.Median(exportT).Round(time.Millisecond), benchkit.Median(mkfsT).Round(time.Millisecond))
	fmt.Printf("  ratio banger/baseline                     %8.2f  (goal: at most 0.50)\n\n", mb.Seconds()/mbase.Seconds())

	return flattenVsCp(o, work)
}

// flattenVsCp times rootfs.Build on the layer (decompression included)
// against cp -a of the same tree, both measured as file bytes per second.
func flattenVsCp(o opts, work string) error {
	tree := filepath.Join(work, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xzf", o.debian, "-C", tree).CombinedOutput(); err != nil {
		return fmt.Errorf("unpacking: %v\n%s", err, out)
	}
	var flat, cp []time.Duration
	var bytesWritten int64
	for i := range o.runs {
		out, err := os.Create(filepath.Join(work, "flat.ext4"))
		if err != nil {
			return err
		}
		layer := rootfs.GzipFile("debian", o.debian)
		start := time.Now()
		st, err := rootfs.Build(context.Background(), []rootfs.Layer{layer}, out, rootfs.DefaultLimits())
		if err == nil {
			err = out.Sync()
		}
		flat = append(flat, time.Since(start))
		out.Close()
		if err != nil {
			return err
		}
		bytesWritten = st.Bytes
		dst := filepath.Join(work, fmt.Sprintf("copy%d", i))
		start = time.Now()
		if out, err := exec.Command("cp", "-a", tree, dst).CombinedOutput(); err != nil {
			return fmt.Errorf("cp: %v\n%s", err, out)
		}
		exec.Command("sync", "-f", dst).Run()
		cp = append(cp, time.Since(start))
		os.RemoveAll(dst)
	}
	mf, mc := benchkit.Median(flat), benchkit.Median(cp)
	rate := func(d time.Duration) float64 { return float64(bytesWritten) / (1 << 20) / d.Seconds() }
	fmt.Printf("flatten throughput, %s of file bytes:\n", mib(bytesWritten))
	fmt.Printf("  banger flatten (gunzip + merge + ext4)    %8s  %7.0f MiB/s\n", mf.Round(time.Millisecond), rate(mf))
	fmt.Printf("  cp -a of the unpacked tree                %8s  %7.0f MiB/s\n", mc.Round(time.Millisecond), rate(mc))
	fmt.Printf("  ratio flatten/cp throughput               %8.2f  (goal: at least 0.33)\n", rate(mf)/rate(mc))
	return nil
}

func bangerPull(o opts, work, ref string, i int) (time.Duration, error) {
	home := filepath.Join(work, fmt.Sprintf("home%d", i))
	env := append(os.Environ(), "BANGER_HOME="+home)
	banger := func(args ...string) error {
		cmd := exec.Command(filepath.Join(o.bin, "banger"), args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("banger %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := banger("daemon", "start"); err != nil {
		return 0, err
	}
	defer func() { banger("daemon", "stop"); os.RemoveAll(home) }()
	start := time.Now()
	if err := banger("image", "pull", ref); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// baseline does by hand what `banger image pull` does: download, unpack
// the merged tree, build an ext4 image of it. It returns each step's time.
func baseline(o opts, work, ref string, i int) ([3]time.Duration, error) {
	var steps [3]time.Duration
	dir := filepath.Join(work, fmt.Sprintf("base%d", i))
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return steps, err
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	if out, err := exec.Command(o.crane, "pull", "--insecure", ref, filepath.Join(dir, "image.tar")).CombinedOutput(); err != nil {
		return steps, fmt.Errorf("crane pull: %v\n%s", err, out)
	}
	steps[0] = time.Since(start)
	start = time.Now()
	pipe := fmt.Sprintf("%q export - - < %q | tar --numeric-owner --xattrs --xattrs-include='*' -x -C %q", o.crane, filepath.Join(dir, "image.tar"), tree)
	if out, err := exec.Command("bash", "-o", "pipefail", "-c", pipe).CombinedOutput(); err != nil {
		return steps, fmt.Errorf("export | tar: %v\n%s", err, out)
	}
	steps[1] = time.Since(start)
	start = time.Now()
	du, err := exec.Command("du", "-sb", tree).Output()
	if err != nil {
		return steps, err
	}
	var size int64
	fmt.Sscan(string(du), &size)
	blocks := size*13/10/4096 + 16384 // room for metadata
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, filepath.Join(dir, "rootfs.ext4"), fmt.Sprint(blocks)).CombinedOutput(); err != nil {
		return steps, fmt.Errorf("mkfs.ext4: %v\n%s", err, out)
	}
	exec.Command("sync", "-f", filepath.Join(dir, "rootfs.ext4")).Run()
	steps[2] = time.Since(start)
	return steps, nil
}

func startRegistry(bin, work string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(work, "registry.yml")
	body := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(work, "registry"), addr)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "serve", cfg)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return addr, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("registry did not answer: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
