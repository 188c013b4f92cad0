package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/units"
	"github.com/bangerdev/banger/test/report"
)

// soakSteps are a cycle's steps, in order, as the report lists them.
var soakSteps = []string{"create", "exec", "workspace push", "workspace pull", "delete"}

// soakLease is what one VM held while it lived, as its client saw it:
// from its create's return to its delete's call, a span inside the one
// the daemon gave it, so two overlapping spans holding one value are a
// value handed out twice.
type soakLease struct {
	vm, ip, mac, tap string
	from, to         time.Time
}

// soakRecord gathers the clients' figures; goroutines add to it.
type soakRecord struct {
	mu     sync.Mutex
	took   map[string][]time.Duration
	failed map[string]int
	errs   []string
	leases []soakLease
	cycles int
	ok     int
}

func newSoakRecord() *soakRecord {
	return &soakRecord{took: map[string][]time.Duration{}, failed: map[string]int{}}
}

func (r *soakRecord) step(name string, d time.Duration, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok {
		r.took[name] = append(r.took[name], d)
	} else {
		r.failed[name]++
	}
}

func (r *soakRecord) end(l soakLease, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cycles++
	if l.ip != "" {
		r.leases = append(r.leases, l)
	}
	if err != nil {
		r.errs = append(r.errs, err.Error())
		return
	}
	r.ok++
}

// twice lists the values two live VMs held at once.
func (r *soakRecord) twice() []string {
	var out []string
	for i, a := range r.leases {
		for _, b := range r.leases[i+1:] {
			if a.from.After(b.to) || b.from.After(a.to) {
				continue
			}
			for _, kv := range [][3]string{{"address", a.ip, b.ip}, {"MAC", a.mac, b.mac}, {"tap", a.tap, b.tap}, {"name", a.vm, b.vm}} {
				if kv[1] != "" && kv[1] == kv[2] {
					out = append(out, fmt.Sprintf("%s %s held by %s and %s at once", kv[0], kv[1], a.vm, b.vm))
				}
			}
		}
	}
	return out
}

// quantile is the q-th quantile of ds (nearest rank); 0 when empty.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// soakCycle is one client's create → exec → workspace push → workspace
// pull → delete of VM name, each step timed. It runs on a goroutine, so
// it fails by returning, never by t.Fatalf.
func (t *T) soakCycle(ref, name, repo string, rec *soakRecord) {
	var lease soakLease
	var err error
	defer func() { rec.end(lease, err) }()
	step := func(what string, args ...string) error {
		start := time.Now()
		r := t.Banger(args...)
		rec.step(what, time.Since(start), r.code == 0)
		if r.code != 0 {
			return fmt.Errorf("%s of %s: %s", what, name, strings.TrimSpace(r.stderr))
		}
		return nil
	}
	if err = step("create", "vm", "create", "--name", name, "--image", ref, "--cpus", "1", "--memory", "256M", "--workspace", repo); err != nil {
		t.Banger("vm", "delete", "--force", name)
		return
	}
	lease = t.leaseOf(name)
	defer func() {
		lease.to = time.Now()
		if derr := step("delete", "vm", "delete", "--force", name); err == nil {
			err = derr
		}
	}()
	if err = step("exec", "vm", "exec", name, "--", "/bin/busybox", "true"); err != nil {
		return
	}
	if err = os.WriteFile(filepath.Join(repo, "f"), []byte(name+"\n"), 0o644); err != nil {
		return
	}
	if err = step("workspace push", "vm", "workspace", "push", name); err != nil {
		return
	}
	if r := t.Banger("vm", "exec", name, "--", "/bin/busybox", "sh", "-c", "cat /workspace/f > /workspace/g"); r.code != 0 {
		err = fmt.Errorf("guest write in %s: %s", name, r.stderr)
		return
	}
	if err = step("workspace pull", "vm", "workspace", "pull", name); err != nil {
		return
	}
	if b, _ := os.ReadFile(filepath.Join(repo, "g")); string(b) != name+"\n" {
		err = fmt.Errorf("%s: pulled g is %q, want %q", name, b, name+"\n")
	}
}

// leaseOf reads a running VM's address from its record and its MAC and
// tap from its VMM's command line.
func (t *T) leaseOf(name string) soakLease {
	l := soakLease{vm: name, from: time.Now()}
	var v api.VM
	r := t.Banger("vm", "show", name, "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil {
		return l
	}
	l.ip = v.IP
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", v.PID))
	for _, arg := range strings.Split(string(cmd), "\x00") {
		for _, kv := range strings.Split(arg, ",") {
			if k, val, ok := strings.Cut(kv, "="); ok {
				switch k {
				case "ifname":
					l.tap = val
				case "mac":
					l.mac = val
				}
			}
		}
	}
	return l
}

// churn runs cycles cycles from clients parallel clients, VMs named
// prefix-N, each with its own repository.
func (t *T) churn(ref, prefix string, cycles, clients int) (*soakRecord, time.Duration) {
	rec := newSoakRecord()
	names := make(chan int)
	repos := make([]string, cycles)
	for i := range repos {
		repos[i] = filepath.Join(t.home, "repos", fmt.Sprintf("%s-%d", prefix, i))
		t.makeRepo(repos[i])
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := range names {
				t.soakCycle(ref, fmt.Sprintf("%s-%d", prefix, i), repos[i], rec)
			}
		})
	}
	for i := range cycles {
		names <- i
	}
	close(names)
	wg.Wait()
	return rec, time.Since(start)
}

// daemonResources is the daemon's own goroutines, files and memory.
func (t *T) daemonResources() api.DaemonResources {
	var info api.DaemonInfo
	t.JSON(&info, "daemon", "status")
	return info.Resources
}

// healthWatch asks each VM's health every second until stop closes and
// records how long each answer took and which did not come.
type healthWatch struct {
	mu     sync.Mutex
	took   []time.Duration
	missed []string
	wg     sync.WaitGroup
	stop   chan struct{}
}

func (t *T) watchHealth(vms ...string) *healthWatch {
	h := &healthWatch{stop: make(chan struct{})}
	for _, vm := range vms {
		h.wg.Go(func() {
			for {
				select {
				case <-h.stop:
					return
				case <-time.After(time.Second):
				}
				start := time.Now()
				r := t.Banger("vm", "health", vm)
				h.mu.Lock()
				if r.code == 0 {
					h.took = append(h.took, time.Since(start))
				} else {
					h.missed = append(h.missed, fmt.Sprintf("%s at %s: %s", vm, start.Format("15:04:05"), strings.TrimSpace(r.stderr)))
				}
				h.mu.Unlock()
			}
		})
	}
	return h
}

func (h *healthWatch) end() {
	close(h.stop)
	h.wg.Wait()
}

// soak (make reliability): -soak-cycles create → exec → workspace push
// → workspace pull → delete cycles from -soak-clients parallel clients
// on the bridge; then the daemon's goroutines and open files are back
// where they were, nothing is left (taps, per-VM rules, leases,
// processes, staging), no address, MAC, tap or name was held by two
// VMs at once. Then the same churn again while two VMs burn their CPU
// and one downloads from the other's httpd, their health asked every
// second.
func soak(t *T) {
	ref := t.bridgeBusybox("10.81.0.0/24")
	t.Must("image", "pull", ref)
	cycles, clients := max(t.tools.soakCycles, 1), max(t.tools.soakClients, 1)
	// A first cycle makes what later creates reuse (the template), so
	// it does not count as growth.
	warm := newSoakRecord()
	t.makeRepo(filepath.Join(t.home, "repos", "warm"))
	t.soakCycle(ref, "warm", filepath.Join(t.home, "repos", "warm"), warm)
	if warm.ok != 1 {
		t.Fatalf("the warm-up cycle failed: %v", warm.errs)
	}
	before := t.daemonResources()

	plain, plainTook := t.churn(ref, "a", cycles, clients)
	var after api.DaemonResources
	// Goroutines of finished requests wind down; give them a little.
	settled := func() bool {
		after = t.daemonResources()
		return after.Goroutines <= before.Goroutines+2 && after.OpenFiles <= before.OpenFiles+2
	}
	deadline := time.Now().Add(30 * time.Second)
	for !settled() && time.Now().Before(deadline) {
		time.Sleep(time.Second) // polling the daemon's own count, which has no event to wait on
	}
	left := t.soakLeftovers()

	// The second soak: two loaded VMs, their health watched.
	for _, vm := range []string{"load-0", "load-1"} {
		t.Must("vm", "create", "--name", vm, "--image", ref, "--cpus", "1", "--memory", "256M")
		t.Must("vm", "exec", vm, "--", "/bin/busybox", "sh", "-c", "(while :; do :; done) >/dev/null 2>&1 </dev/null &")
	}
	var sink api.VM
	t.JSON(&sink, "vm", "show", "load-1")
	t.Must("vm", "exec", "load-1", "--", "/bin/busybox", "sh", "-c", "mkdir -p /tmp/www && /bin/busybox head -c 16777216 /dev/zero > /tmp/www/big && /bin/busybox httpd -p 8080 -h /tmp/www")
	t.Must("vm", "exec", "load-0", "--", "/bin/busybox", "sh", "-c",
		"(while :; do /bin/busybox wget -q -O /dev/null http://"+sink.IP+":8080/big; done) >/dev/null 2>&1 </dev/null &")
	cpu0, rx0 := t.guestCounters("load-0"), t.guestCounters("load-0")
	watch := t.watchHealth("load-0", "load-1")
	loaded, loadedTook := t.churn(ref, "b", cycles, clients)
	watch.end()
	cpu1, rx1 := t.guestCounters("load-0"), t.guestCounters("load-0")
	// The load was real: the burner kept its vCPU busy, the stream
	// moved bytes (load-0 downloading from load-1, so load-0 received).
	busy := float64(cpu1.busy-cpu0.busy) / float64(max(cpu1.total-cpu0.total, 1))
	streamed := rx1.rx - rx0.rx
	if busy < 0.5 || streamed < 1<<20 {
		t.Fatalf("the load VMs were not loaded: load-0 %.0f%% busy, received %d bytes from load-1", busy*100, streamed)
	}
	t.Must("vm", "delete", "--force", "load-0", "load-1")
	left = append(left, t.soakLeftovers()...)
	final := t.daemonResources()

	text := soakReport(cycles, clients, plain, plainTook, loaded, loadedTook, before, after, final, watch, left) +
		fmt.Sprintf("Meanwhile load-0's vCPU was %.0f%% busy, and it downloaded %s from load-1's httpd.\n", busy*100, units.FormatSize(streamed))
	fmt.Printf("%s:\n%s", t.name, text)
	if t.tools.crashReport != "" {
		if err := report.Splice(t.tools.crashReport, "soak", text); err != nil {
			t.Fatalf("%v", err)
		}
	}
	var problems []string
	for _, rec := range []*soakRecord{plain, loaded} {
		if rec.ok != rec.cycles {
			problems = append(problems, fmt.Sprintf("%d of %d cycles failed: %s", rec.cycles-rec.ok, rec.cycles, strings.Join(rec.errs, "; ")))
		}
		problems = append(problems, rec.twice()...)
	}
	if !settled() {
		problems = append(problems, fmt.Sprintf("the daemon grew: %d goroutines and %d open files, were %d and %d", after.Goroutines, after.OpenFiles, before.Goroutines, before.OpenFiles))
	}
	problems = append(problems, left...)
	if len(watch.missed) > 0 {
		problems = append(problems, "health missed: "+strings.Join(watch.missed, "; "))
	}
	if len(problems) > 0 {
		t.Fatalf("soak:\n%s", strings.Join(problems, "\n"))
	}
}

// guestLoad is a guest's CPU time (busy and in all, in jiffies, from
// /proc/stat) and the bytes its eth0 received.
type guestLoad struct{ busy, total, rx int64 }

func (t *T) guestCounters(vm string) guestLoad {
	r := t.Must("vm", "exec", vm, "--", "/bin/busybox", "sh", "-c", "head -1 /proc/stat; grep eth0: /proc/net/dev")
	var g guestLoad
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(strings.ReplaceAll(line, ":", " "))
		switch {
		case len(f) > 5 && f[0] == "cpu":
			for i, v := range f[1:] {
				n, _ := strconv.ParseInt(v, 10, 64)
				g.total += n
				if i != 3 && i != 4 { // idle and iowait
					g.busy += n
				}
			}
		case len(f) > 2 && f[0] == "eth0":
			g.rx, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return g
}

// soakLeftovers is what no VM owns once every soak VM is deleted.
func (t *T) soakLeftovers() []string {
	var out []string
	if taps := t.Taps(); len(taps) > 0 {
		out = append(out, fmt.Sprintf("taps left: %v", taps))
	}
	if rules := t.perVM("banger-banger0"); len(rules) > 0 {
		out = append(out, fmt.Sprintf("per-VM rules left: %v", rules))
	}
	for _, l := range t.leaks() {
		out = append(out, "left: "+l)
	}
	return out
}

func soakReport(cycles, clients int, plain *soakRecord, plainTook time.Duration, loaded *soakRecord, loadedTook time.Duration,
	before, after, final api.DaemonResources, watch *healthWatch, left []string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s; %d cycles from %d parallel clients, each soak.\n\n", runContext(), cycles, clients)
	sb.WriteString("| step | soak | ok | failed | p50 | p95 | max |\n|---|---|---|---|---|---|---|\n")
	for _, s := range soakSteps {
		for _, row := range []struct {
			name string
			rec  *soakRecord
		}{{"plain", plain}, {"with 2 loaded VMs", loaded}} {
			d := row.rec.took[s]
			fmt.Fprintf(&sb, "| %s | %s | %d | %d | %s | %s | %s |\n", s, row.name, len(d), row.rec.failed[s],
				quantile(d, 0.5).Round(time.Millisecond), quantile(d, 0.95).Round(time.Millisecond), quantile(d, 1).Round(time.Millisecond))
		}
	}
	fmt.Fprintf(&sb, "\nCycles that succeeded: %d of %d in %s (plain), %d of %d in %s (with load).\n\n",
		plain.ok, plain.cycles, plainTook.Round(time.Second), loaded.ok, loaded.cycles, loadedTook.Round(time.Second))
	sb.WriteString("| daemon | before | after the plain soak | after both |\n|---|---|---|---|\n")
	fmt.Fprintf(&sb, "| goroutines | %d | %d | %d |\n| open files | %d | %d | %d |\n| resident memory | %s | %s | %s |\n\n",
		before.Goroutines, after.Goroutines, final.Goroutines, before.OpenFiles, after.OpenFiles, final.OpenFiles,
		units.FormatSize(before.RSSBytes), units.FormatSize(after.RSSBytes), units.FormatSize(final.RSSBytes))
	twice := append(plain.twice(), loaded.twice()...)
	fmt.Fprintf(&sb, "Addresses, MACs, taps and names held by two VMs at once: %d (of %d VMs). banger hands out no vsock CIDs: Firecracker's vsock is a Unix socket of each VM's own (CID 3 in every guest), and QEMU's agent channel is a virtio-serial socket.\n\n",
		len(twice), len(plain.leases)+len(loaded.leases))
	if len(left) == 0 {
		sb.WriteString("Left after each soak: nothing (taps, per-VM rules and sets, leases, forwards, processes, VM directories, staging files, mounts; the store passes its integrity check).\n\n")
	} else {
		fmt.Fprintf(&sb, "Left after the soaks: %s.\n\n", strings.Join(left, "; "))
	}
	watch.mu.Lock()
	defer watch.mu.Unlock()
	fmt.Fprintf(&sb, "Health of the 2 loaded VMs (each burning its vCPU, one downloading from the other's httpd without a pause), asked every second during the second soak: %d answered, %d missed the 5 s deadline; answers p50 %s, p95 %s, max %s.\n",
		len(watch.took), len(watch.missed), quantile(watch.took, 0.5).Round(time.Millisecond), quantile(watch.took, 0.95).Round(time.Millisecond), quantile(watch.took, 1).Round(time.Millisecond))
	return sb.String()
}
