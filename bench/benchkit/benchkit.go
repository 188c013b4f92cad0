// Package benchkit holds what the benchmarks share: medians and small
// image layers.
package benchkit

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/bangerdev/banger/internal/boot/boottest"
)

// Median of ds (the upper one of an even count).
func Median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// WriteTar writes a layer tarball of files (mode 0755) and symlinks, with
// their parent directories.
func WriteTar(path string, files map[string][]byte, links map[string]string) error {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	dirs := map[string]bool{}
	for name := range files {
		if d := filepath.Dir(name); d != "." && !dirs[d] {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Name: d + "/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
				return err
			}
		}
	}
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(body); err != nil {
			return err
		}
	}
	for name, target := range links {
		if err := tw.WriteHeader(&tar.Header{Name: name, Linkname: target, Typeflag: tar.TypeSymlink, Mode: 0o777}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// CLI runs banger on one BANGER_HOME.
type CLI struct {
	Bin, Home string
	// Wrap runs banger under another command (`ip netns exec NS`).
	Wrap []string
}

// Run runs banger, failing with its output.
func (c CLI) Run(args ...string) error {
	_, err := c.Output(args...)
	return err
}

// Output runs banger and returns its standard output, failing with all
// it printed.
func (c CLI) Output(args ...string) (string, error) {
	argv := append(append(slices.Clone(c.Wrap), filepath.Join(c.Bin, "banger")), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "BANGER_HOME="+c.Home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("banger %v: %v\n%s%s", args, err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.String(), nil
}

// Timed runs banger and says how long it took.
func (c CLI) Timed(args ...string) (time.Duration, error) {
	t0 := time.Now()
	err := c.Run(args...)
	return time.Since(t0), err
}

// Start starts the home's daemon and imports the test kernel (Debian's
// package, cached by scripts/testimages.sh); stop stops the daemon.
func (c CLI) Start() (stop func(), err error) {
	if err := c.Run("daemon", "start"); err != nil {
		return nil, err
	}
	stop = func() { _ = c.Run("daemon", "stop") }
	debs, _ := filepath.Glob(filepath.Join(boottest.CacheDir(), "linux-image-*.deb"))
	if len(debs) == 0 {
		stop()
		return nil, fmt.Errorf("no kernel package in %s; run scripts/testimages.sh", boottest.CacheDir())
	}
	if err := c.Run("kernel", "import", "--deb", debs[0]); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// ImportPorttest builds test/smoke/porttest (static), puts it in a
// busybox image beside busybox (/bin/sh its shell) and imports that as
// name; work holds what it builds.
func (c CLI) ImportPorttest(crane, work, name string) error {
	porttest := filepath.Join(work, "porttest")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", porttest, "./test/smoke/porttest")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building porttest: %v\n%s", err, out)
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("busybox-static: %w", err)
	}
	pt, err := os.ReadFile(porttest)
	if err != nil {
		return err
	}
	layer := filepath.Join(work, name+"-layer.tar")
	if err := WriteTar(layer, map[string][]byte{"bin/busybox": bb, "bin/porttest": pt}, map[string]string{"bin/sh": "busybox"}); err != nil {
		return err
	}
	return c.ImportLayer(crane, work, name, layer)
}

// World is a benchmark's setting: the boot test environment (kernel,
// initramfs, images), a work directory, and a daemon started on a home in
// it with the test kernel imported.
type World struct {
	Env  *boottest.Env
	CLI  CLI
	Work string
	stop func()
}

// NewWorld sets up a World for the binaries in bin; Close undoes it.
func NewWorld(name, bin string) (*World, error) { return NewWorldWith(name, bin, "") }

// NewWorldWith is NewWorld with config as the daemon's config.toml.
func NewWorldWith(name, bin, config string) (*World, error) {
	fmt.Println("preparing kernel, initramfs and images...")
	env, err := boottest.Setup()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", name+"-")
	if err != nil {
		os.RemoveAll(env.Dir)
		return nil, err
	}
	w := &World{Env: env, CLI: CLI{Bin: bin, Home: filepath.Join(work, "home")}, Work: work}
	if config != "" {
		if err := os.MkdirAll(w.CLI.Home, 0o755); err != nil {
			w.Close()
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(w.CLI.Home, "config.toml"), []byte(config), 0o644); err != nil {
			w.Close()
			return nil, err
		}
	}
	if w.stop, err = w.CLI.Start(); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// Close stops the daemon and removes what the World made.
// With BENCH_DAEMON_LOG set, the daemon's log is copied there first
// (its timings say where a figure's time went).
func (w *World) Close() {
	if w.stop != nil {
		w.stop()
	}
	if dst := os.Getenv("BENCH_DAEMON_LOG"); dst != "" {
		if b, err := os.ReadFile(filepath.Join(w.CLI.Home, "logs", "bangerd.log")); err == nil {
			_ = os.WriteFile(dst, b, 0o644)
		}
	}
	os.RemoveAll(w.Work)
	os.RemoveAll(w.Env.Dir)
}

// ImportBusybox imports an image of busybox-static alone (/bin/sh and
// /bin/true its applets) as name.
func (c CLI) ImportBusybox(crane, work, name string) error {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("busybox-static: %w", err)
	}
	layer := filepath.Join(work, name+"-layer.tar")
	if err := WriteTar(layer, map[string][]byte{"bin/busybox": bb}, map[string]string{"bin/sh": "busybox", "bin/true": "busybox"}); err != nil {
		return err
	}
	return c.ImportLayer(crane, work, name, layer)
}

// ImportLayer imports an image of one layer (a tar, gzipped or not) as
// name.
func (c CLI) ImportLayer(crane, work, name, layer string) error {
	archive := filepath.Join(work, name+".tar")
	if out, err := exec.Command(crane, "append", "-f", layer, "-t", "bench/"+name, "-o", archive).CombinedOutput(); err != nil {
		return fmt.Errorf("crane append: %v\n%s", err, out)
	}
	return c.Run("image", "import", archive, "--name", name)
}

// Percentile is the p-th percentile of ds (nearest rank).
func Percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}

// Opts are the flags every CLI benchmark takes.
type Opts struct {
	Bin, Crane string
	Runs       int
}

// Main parses the common flags, runs run and exits non-zero on its
// error, named for the benchmark.
func Main(name string, run func(Opts) error) {
	var o Opts
	flag.StringVar(&o.Bin, "bin", "bin", "directory of banger and bangerd")
	flag.StringVar(&o.Crane, "crane", ".tools/crane", "crane binary")
	flag.IntVar(&o.Runs, "runs", 3, "runs of each measure")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
