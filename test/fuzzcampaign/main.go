// Command fuzzcampaign runs every fuzz target of the module for a longer
// budget than `make test` gives it and reports, for each, the executions
// and the CPU time spent (docs/RELIABILITY.md, `make reliability`).
//
// With -check it only compares the module's fuzz targets with the list
// `make fuzz` runs, so a new target cannot be left out of make test.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/test/report"
)

// target is one fuzz function of one package.
type target struct{ pkg, name string }

func (t target) String() string { return t.pkg + ":" + t.name }

func main() {
	budget := flag.Duration("time", time.Minute, "fuzzing time per target")
	out := flag.String("report", "", "file to write the figures into (docs/RELIABILITY.md)")
	check := flag.Bool("check", false, "only check that the targets given as arguments (pkg:Name[:count]) are all of the module's")
	run := flag.String("run", "", "fuzz only the targets whose pkg:Name matches this regexp")
	flag.Parse()
	if err := campaign(*budget, *out, *check, *run, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "fuzzcampaign:", err)
		os.Exit(1)
	}
}

func campaign(budget time.Duration, out string, check bool, run string, given []string) error {
	targets, err := list()
	if err != nil {
		return err
	}
	if check {
		return compare(targets, given)
	}
	var match *regexp.Regexp
	if run != "" {
		if match, err = regexp.Compile(run); err != nil {
			return fmt.Errorf("parse -run: %w", err)
		}
	}
	start := time.Now()
	var rows []result
	for _, t := range targets {
		if match != nil && !match.MatchString(t.String()) {
			continue
		}
		r := fuzz(t, budget)
		fmt.Printf("%-40s %s\n", t, r.summary())
		rows = append(rows, r)
	}
	table, failed := render(rows)
	text := fmt.Sprintf("%s, %s a target, %s in all.\n\n%s", report.Context(""), budget, time.Since(start).Round(time.Second), table)
	if out != "" {
		if err := report.Splice(out, "fuzzing", text); err != nil {
			return fmt.Errorf("write the report: %w", err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d target(s) found a failing input or failed to run; see testdata/fuzz in their packages", failed)
	}
	return nil
}

// list asks go test for the module's fuzz targets: it prints each
// package's matching names, then an "ok" line naming the package.
func list() ([]target, error) {
	cmd := exec.Command("go", "test", "-list", "^Fuzz", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("list fuzz targets: %w: %s", err, stderr.Bytes())
	}
	return parseList(string(b), modulePath())
}

func parseList(s, module string) ([]target, error) {
	var targets []target
	var names []string
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		switch {
		case len(f) == 1 && strings.HasPrefix(f[0], "Fuzz"):
			names = append(names, f[0])
		case len(f) >= 2 && (f[0] == "ok" || f[0] == "?"):
			pkg := "." + strings.TrimPrefix(f[1], module)
			for _, n := range names {
				targets = append(targets, target{pkg, n})
			}
			names = nil
		}
	}
	if len(names) > 0 {
		return nil, fmt.Errorf("list fuzz targets: %v without a package line", names)
	}
	return targets, nil
}

func modulePath() string {
	b, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// compare says which targets the module has that the list misses, and
// which the list names that the module lacks.
func compare(targets []target, given []string) error {
	want := map[string]bool{}
	for _, g := range given {
		pkg, rest, _ := strings.Cut(g, ":")
		name, _, _ := strings.Cut(rest, ":")
		want[target{pkg, name}.String()] = true
	}
	var missing []string
	for _, t := range targets {
		if !want[t.String()] {
			missing = append(missing, t.String())
		}
		delete(want, t.String())
	}
	var unknown []string
	for k := range want {
		unknown = append(unknown, k)
	}
	slices.Sort(unknown)
	switch {
	case len(missing) > 0:
		return fmt.Errorf("fuzz targets not in test/fuzzcampaign/targets.txt: %s; add them with an execution count", strings.Join(missing, " "))
	case len(unknown) > 0:
		return fmt.Errorf("test/fuzzcampaign/targets.txt names targets the module does not have: %s", strings.Join(unknown, " "))
	}
	return nil
}

// result is one target's run.
type result struct {
	t        target
	execs    int64
	corpus   int64 // total interesting inputs at the end
	newFound int64 // of which this run found
	elapsed  time.Duration
	cpu      time.Duration
	ended    string // "" for a clean end
	failing  []string
}

func (r result) summary() string {
	s := fmt.Sprintf("%d execs, %s CPU, %d new of %d", r.execs, r.cpu.Round(time.Second), r.newFound, r.corpus)
	if r.ended != "" {
		s += " (" + r.ended + ")"
	}
	return s
}

// Go prints this line every few seconds while fuzzing.
var progress = regexp.MustCompile(`fuzz: elapsed: (\d+)s, execs: (\d+) \(\d+/sec\), new interesting: (\d+) \(total: (\d+)\)`)

// Go 1.26's coordinator can end a duration budget with a bare "context
// deadline exceeded" and no failing input (golang/go#75804); such a run
// is checked by replaying its corpus before it counts as clean.
const deadlineRace = "context deadline exceeded"

func fuzz(t target, budget time.Duration) result {
	r := result{t: t}
	// A first run of one execution builds the instrumented test binary,
	// so the measured run spends its CPU fuzzing, not compiling.
	if b, err := goTest(t, "-run", "^$", "-fuzz", "^"+t.name+"$", "-fuzztime", "1x"); err != nil {
		r.ended, r.failing = "did not build or run: "+lastLine(b), failingInputs(b)
		return r
	}
	b, cpu, err := goTestTimed(t, "-run", "^$", "-fuzz", "^"+t.name+"$", "-fuzztime", budget.String(), "-fuzzminimizetime", "30s")
	r.cpu = cpu
	r.parse(b)
	r.failing = failingInputs(b)
	switch {
	case err == nil:
	case len(r.failing) == 0 && bytes.Contains(b, []byte(deadlineRace)):
		// Replay the seeds and what the run kept: nothing must fail.
		if rb, err := goTest(t, "-run", "^"+t.name+"$"); err != nil {
			r.ended = "replay failed: " + lastLine(rb)
		} else {
			r.ended = "Go's end-of-budget race, corpus replayed clean"
		}
	default:
		r.ended = "failed: " + lastLine(b)
	}
	return r
}

func (r *result) parse(b []byte) {
	for _, m := range progress.FindAllSubmatch(b, -1) {
		el, _ := strconv.ParseInt(string(m[1]), 10, 64)
		r.elapsed = time.Duration(el) * time.Second
		r.execs, _ = strconv.ParseInt(string(m[2]), 10, 64)
		r.newFound, _ = strconv.ParseInt(string(m[3]), 10, 64)
		r.corpus, _ = strconv.ParseInt(string(m[4]), 10, 64)
	}
}

func (r result) failed() bool {
	return len(r.failing) > 0 || (r.ended != "" && !strings.HasPrefix(r.ended, "Go's end-of-budget race"))
}

func goTest(t target, args ...string) ([]byte, error) {
	b, _, err := goTestTimed(t, args...)
	return b, err
}

// goTestTimed runs go test on the target's package and returns its
// output and the CPU time of go test and everything it waited for: the
// test binary and its fuzzing workers.
func goTestTimed(t target, args ...string) ([]byte, time.Duration, error) {
	cmd := exec.Command("go", append(append([]string{"test", "-count=1"}, args...), t.pkg)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return out.Bytes(), cpu, fmt.Errorf("run go test: %w", err)
	}
	return out.Bytes(), cpu, err
}

// failingInputs are the corpus files Go wrote for a failure; they stay
// in the package's testdata/fuzz, to be committed with the fix.
func failingInputs(b []byte) []string {
	var files []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if _, f, ok := strings.Cut(sc.Text(), "Failing input written to "); ok {
			files = append(files, filepath.ToSlash(strings.TrimSpace(f)))
		}
	}
	return files
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "FAIL") && !strings.HasPrefix(l, "exit status") {
			return l
		}
	}
	return "no output"
}

func render(rows []result) (string, int) {
	var sb strings.Builder
	sb.WriteString("| package | target | executions | per second | CPU time | inputs found (kept in all) | end |\n|---|---|---|---|---|---|---|\n")
	var execs int64
	var cpu time.Duration
	failed := 0
	for _, r := range rows {
		rate := "–"
		if r.elapsed > 0 {
			rate = strconv.FormatInt(r.execs/int64(r.elapsed/time.Second), 10)
		}
		end := "clean"
		switch {
		case len(r.failing) > 0:
			end = "**failing input**: " + strings.Join(r.failing, ", ")
		case r.ended != "":
			end = r.ended
		}
		if r.failed() {
			failed++
		}
		fmt.Fprintf(&sb, "| `%s` | %s | %d | %s | %s | %d (%d) | %s |\n", r.t.pkg, r.t.name, r.execs, rate, r.cpu.Round(time.Second), r.newFound, r.corpus, end)
		execs += r.execs
		cpu += r.cpu
	}
	fmt.Fprintf(&sb, "\n%d targets, %d executions, %s of CPU: %d found a failing input or did not run.\n", len(rows), execs, cpu.Round(time.Second), failed)
	return sb.String(), failed
}
