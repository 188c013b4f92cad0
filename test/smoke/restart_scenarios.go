package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/bench/benchkit"
	"github.com/bangerdev/banger/internal/proc"
	"github.com/bangerdev/banger/test/networld"
	"github.com/bangerdev/banger/test/report"
)

// restartMany (make reliability): seven VMs of every kind (bridge
// sandboxed, NAT and allow-listed, user-mode with and without NAT, no
// network, one suspended; forwards on a bridge and a user-mode VM) run
// while the daemon is killed with SIGKILL and started again, runs times.
// Each time every VM is taken back as it was: the same VMM (pid), none
// twice, none reaped; the suspended one still suspended; the forwards
// answer at the same addresses; the bridge's taps and rules are the same
// and each VM's way out is as before. The time a start takes with the
// VMs to take back is reported beside a start with none.
func restartMany(t *T) { t.restartMany(false) }

// restartManyInstalled (make reliability) is restartMany as banger runs
// installed: the daemon as an unprivileged owner, the root helper beside
// it. Each run kills the helper with SIGKILL and starts a new one, checks
// every VM, then does the same to the daemon; a last run kills both at
// once.
func restartManyInstalled(t *T) { t.restartMany(true) }

func (t *T) restartMany(installed bool) {
	outside := t.Outside()
	var ref string
	var restartHelper func(func())
	if installed {
		_, restartHelper = t.installedMode("10.79.0.0/24")
		ref = t.bootable() + "/smoke/busybox:bridge"
		t.Push(ref, t.busyboxImage())
	} else {
		ref = t.bridgeBusybox("10.79.0.0/24")
	}
	small := []string{"--image", ref, "--cpus", "1", "--memory", "256M"}
	kinds := []vmKind{
		{"sandboxed", nil},
		{"nat", []string{"--nat"}},
		{"listed", []string{"--allow", networld.Web + ":8080"}},
		{"user", []string{"--network", "user"}},
		{"usernat", []string{"--network", "user", "--nat"}},
		{"offline", []string{"--network", "none"}},
		{"asleep", nil},
	}
	for _, k := range kinds {
		t.Must(append(append([]string{"vm", "create", "--name", k.name}, small...), k.args...)...)
	}
	t.Must("vm", "suspend", "asleep")
	forwards := map[string]string{}
	for _, vm := range []string{"sandboxed", "user"} {
		t.Must("vm", "exec", vm, "--", "/bin/busybox", "sh", "-c", "echo hello from "+vm+" > /tmp/index.html; /bin/busybox httpd -p 8080 -h /tmp")
		t.Eventually(vm+"'s httpd listens", time.Minute, func() bool { return t.vmPorts(vm)[8080].Port != 0 })
		forwards[vm] = t.vmPorts(vm, "--forward")[8080].Forward
		if forwards[vm] == "" {
			t.Fatalf("no forward for %s", vm)
		}
	}
	// Who reaches the outside: the NAT and the allow-listed VMs.
	reaches := func(vm string) bool {
		r := t.Banger("vm", "exec", vm, "--", "/bin/busybox", "timeout", "5", "/bin/busybox", "wget", "-qO-", outside)
		return r.code == 0 && strings.Contains(r.stdout, "hello from outside")
	}
	wantOut := map[string]bool{"sandboxed": false, "nat": true, "listed": true, "user": false, "usernat": true}
	const table = "banger-banger0"
	snapshot := func() (map[string]api.VM, []string, []string) {
		var l api.VMListResult
		t.JSON(&l, "vm", "list")
		vms := map[string]api.VM{}
		for _, v := range l.VMs {
			vms[v.Name] = v
		}
		return vms, t.Taps(), t.RuleComments(table)
	}
	check := func(when string, before map[string]api.VM, taps, rules []string) {
		after, taps2, rules2 := snapshot()
		if len(after) != len(before) {
			t.Fatalf("%s: %d VMs, were %d", when, len(after), len(before))
		}
		for name, b := range before {
			a := after[name]
			if a.ID != b.ID || a.State != b.State || a.PID != b.PID {
				t.Fatalf("%s: %s is %s (pid %d), was %s (pid %d)", when, name, a.State, a.PID, b.State, b.PID)
			}
			if a.State == api.VMRunning {
				if n := len(proc.Naming(proc.Args(), "/vms/"+a.ID+"/")); n < 1 {
					t.Fatalf("%s: %s has no VMM", when, name)
				}
				t.Must("vm", "exec", name, "--", "true")
			}
		}
		// One QEMU a running VM: none started twice.
		var qemus int
		for _, pid := range processesOf(t.home) {
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.HasPrefix(string(cmd), "qemu-system") {
				qemus++
			}
		}
		if want := len(before) - 1; qemus != want {
			t.Fatalf("%s: %d QEMU processes for %d running VMs", when, qemus, want)
		}
		if !slices.Equal(taps, taps2) || !slices.Equal(rules, rules2) {
			t.Fatalf("%s: taps %v rules %v, were %v and %v", when, taps2, rules2, taps, rules)
		}
		for vm, addr := range forwards {
			t.Contains(when+": the forward of "+vm, t.httpGet(addr, 30*time.Second), "hello from "+vm)
		}
		for vm, want := range wantOut {
			if got := reaches(vm); got != want {
				t.Fatalf("%s: %s reaches the outside: %v, want %v", when, vm, got, want)
			}
		}
	}
	before, taps, rules := snapshot()
	check("before", before, taps, rules)
	var withVMs []time.Duration
	var helperRuns int
	for i := range max(t.tools.crashRuns, 1) {
		if installed {
			restartHelper(nil)
			helperRuns++
			check(fmt.Sprintf("helper restart %d", i+1), before, taps, rules)
		}
		t.KillDaemon()
		start := time.Now()
		t.StartDaemon()
		withVMs = append(withVMs, time.Since(start))
		check(fmt.Sprintf("restart %d", i+1), before, taps, rules)
	}
	if installed {
		// Both: the helper dies, then the daemon, which starts again
		// before the helper is back (a boot that starts the units in
		// the other order). It must take every VM back and reap none;
		// the helper then comes back to a daemon already running.
		restartHelper(func() {
			t.KillDaemon()
			t.StartDaemon()
			after, _, _ := snapshot()
			for name, b := range before {
				if a := after[name]; a.ID != b.ID || a.State != b.State || a.PID != b.PID {
					t.Fatalf("the daemon started without its helper: %s is %s (pid %d), was %s (pid %d)", name, a.State, a.PID, b.State, b.PID)
				}
			}
		})
		helperRuns++
		check("both restarted", before, taps, rules)
	}
	// The same start with nothing to take back, in the same home.
	t.Must(append([]string{"vm", "delete", "--force"}, names(kinds)...)...)
	var empty []time.Duration
	for range max(t.tools.crashRuns, 1) {
		t.KillDaemon()
		start := time.Now()
		t.StartDaemon()
		empty = append(empty, time.Since(start))
	}
	mw, me := benchkit.Median(withVMs), benchkit.Median(empty)
	mode, part := "root daemon", "restart-many"
	if installed {
		mode, part = fmt.Sprintf("installed mode: the daemon as an unprivileged owner, the root helper beside it, the helper killed and restarted %d times (once together with the daemon)", helperRuns), "restart-many-installed"
	}
	text := fmt.Sprintf("%s; %s; %d restarts.\n\n| daemon start after `kill -9` | median | runs |\n|---|---|---|\n"+
		"| with %d VMs to take back (running: 3 on the bridge, 2 user-mode, 1 without network; 1 suspended; 2 forwards) | %s | %s |\n"+
		"| with none | %s | %s |\n\nEvery restart: the same VMM pids, one QEMU a running VM, the suspended VM still suspended, the taps and rules as before, both forwards answering, the NAT and allow-listed VMs reaching the outside and the others not.\n",
		runContext(), mode, len(withVMs), len(kinds), mw.Round(time.Millisecond), durations(withVMs), me.Round(time.Millisecond), durations(empty))
	fmt.Printf("%s:\n%s", t.name, text)
	if t.tools.crashReport != "" {
		if err := report.Splice(t.tools.crashReport, part, text); err != nil {
			t.Fatalf("%v", err)
		}
	}
}

// vmKind is a VM of the restart campaign: its name and create flags.
type vmKind struct {
	name string
	args []string
}

func names(kinds []vmKind) []string {
	var out []string
	for _, k := range kinds {
		out = append(out, k.name)
	}
	return out
}

func durations(ds []time.Duration) string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond).String()
	}
	return strings.Join(out, ", ")
}
