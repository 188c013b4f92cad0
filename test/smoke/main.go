// Command smoke runs banger's end-to-end scenarios against the built
// binaries: every scenario gets its own BANGER_HOME (and, once networking
// exists, its own network namespace), scenarios run in parallel, and a
// failed scenario's daemon logs are kept for reading.
//
//	go run ./test/smoke -bin bin -jobs 2 [-run REGEXP] [-out DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func main() {
	os.Exit(smoke())
}

func smoke() int {
	jobs := runtime.NumCPU()
	if v, err := strconv.Atoi(os.Getenv("JOBS")); err == nil && v > 0 {
		jobs = v
	}
	bin := flag.String("bin", "bin", "directory holding the banger and bangerd binaries")
	flag.IntVar(&jobs, "jobs", jobs, "scenarios run at once (default: $JOBS, else the number of cores)")
	out := flag.String("out", "", "directory for failed scenarios' logs (default: a new temporary directory)")
	pattern := flag.String("run", "", "run only scenarios whose name matches this regular expression")
	timeout := flag.Duration("timeout", 20*time.Minute, "deadline of one scenario")
	var tl tools
	flag.StringVar(&tl.registry, "registry", ".tools/registry", "CNCF distribution registry binary")
	flag.StringVar(&tl.clients, "mcp-clients", ".tools/node", "the npm project holding the real MCP clients (scripts/deps.sh installs it)")
	flag.StringVar(&tl.kernelDeb, "kernel-deb", "", "Debian linux-image package (scripts/testimages.sh caches one)")
	flag.StringVar(&tl.debianTar, "debian", "/var/cache/banger-test/debian-bookworm-minbase.tar.gz", "Debian test image tarball (scripts/testimages.sh)")
	flag.StringVar(&tl.crashBin, "crashbin", "", "banger and bangerd built with the crashpoints tag (make build-crash: bin/crash), for the crash-point scenarios")
	flag.IntVar(&tl.crashRuns, "crash-runs", 3, "crash-point campaign: runs of each point")
	verbs := flag.String("crash-verbs", "", "crash-point campaign: only the cases of the verbs this regular expression matches (e.g. 'vm.suspend|vm.fork'); the report is then not written")
	flag.IntVar(&tl.soakCycles, "soak-cycles", 200, "soak campaign: create-to-delete cycles, each soak")
	flag.IntVar(&tl.soakClients, "soak-clients", 4, "soak campaign: parallel clients")
	flag.StringVar(&tl.crashReport, "crash-report", "", "campaigns (crash points, restarts, soak): write their figures into this file (docs/RELIABILITY.md)")
	campaign := flag.Bool("campaign", false, "also run the campaign scenarios (make reliability), which -run alone does not select")
	flag.StringVar(&tl.systemdTar, "systemd", "/var/cache/banger-test/debian-bookworm-systemd.tar.gz", "Debian with systemd and Docker, as a tarball (scripts/testimages.sh)")
	flag.Parse()
	if *verbs != "" {
		re, err := regexp.Compile(*verbs)
		if err != nil {
			fmt.Fprintf(os.Stderr, "smoke: -crash-verbs: %v\n", err)
			return 2
		}
		tl.crashVerbs, tl.crashReport = re, ""
	}

	binDir, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "smoke: %v\n", err)
		return 2
	}
	for _, name := range []string{"banger", "bangerd"} {
		if _, err := os.Stat(filepath.Join(binDir, name)); err != nil {
			fmt.Fprintf(os.Stderr, "smoke: %v; build the binaries first (`make build`)\n", err)
			return 2
		}
	}
	var filter *regexp.Regexp
	if *pattern != "" {
		if filter, err = regexp.Compile(*pattern); err != nil {
			fmt.Fprintf(os.Stderr, "smoke: -run: %v\n", err)
			return 2
		}
	}
	if *out == "" {
		if *out, err = os.MkdirTemp("", "banger-smoke-"); err != nil {
			fmt.Fprintf(os.Stderr, "smoke: %v\n", err)
			return 2
		}
	}

	for _, p := range []*string{&tl.registry, &tl.clients, &tl.debianTar, &tl.systemdTar, &tl.kernelDeb, &tl.crashBin} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
		if _, err := os.Stat(*p); err != nil {
			*p = "" // scenarios that need it fail saying so
		}
	}
	// The guest helper of the stats scenarios, built once on demand.
	tl.porttest = sync.OnceValues(func() (string, error) {
		bin := filepath.Join(*out, "porttest") // beside the failed scenarios' logs
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./test/smoke/porttest")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building porttest (run the smoke suite from the repository root): %v\n%s", err, out)
		}
		return bin, nil
	})
	var selected []scenario
	for _, s := range scenarios() {
		if (filter == nil || filter.MatchString(s.name)) && (!s.campaign || *campaign) {
			selected = append(selected, s)
		}
	}
	if len(selected) == 0 {
		fmt.Fprintf(os.Stderr, "smoke: no scenario matches %q\n", *pattern)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	start := time.Now()
	results := make(chan result)
	work := make(chan scenario)
	var wg sync.WaitGroup
	for range max(jobs, 1) {
		wg.Go(func() {
			for s := range work {
				results <- runScenario(ctx, s, binDir, *out, *timeout, tl)
			}
		})
	}
	go func() {
		for _, s := range selected {
			work <- s
		}
		close(work)
		wg.Wait()
		close(results)
	}()

	var passed, failed int
	for r := range results {
		if r.err == nil {
			passed++
			fmt.Printf("ok   %-32s %s\n", r.name, r.took.Round(100*time.Millisecond))
			continue
		}
		failed++
		fmt.Printf("FAIL %-32s %s\n     %v\n", r.name, r.took.Round(100*time.Millisecond), r.err)
		if r.kept != "" {
			fmt.Printf("     logs kept in %s\n", r.kept)
		}
	}
	fmt.Printf("smoke: %d passed, %d failed (%d jobs, %s)\n", passed, failed, jobs, time.Since(start).Round(time.Second))
	if failed > 0 {
		return 1
	}
	_ = os.Remove(*out) // only succeeds when empty: nothing was kept
	return 0
}
