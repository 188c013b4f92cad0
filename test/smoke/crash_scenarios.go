package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/kvm"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/test/report"
)

// The crash-point campaign (issue: reliability): daemons built with the
// crashpoints tag (bin/crash) are killed with SIGKILL at each named step
// of a request; after a restart, what the request was making is whole or
// absent, nothing is left that no record owns (VMM processes, VM
// directories, staging and temporary files, mounts, store rows), the
// store passes its integrity check, and the same request then succeeds.

// crashCase is one request the campaign kills the daemon in.
type crashCase struct {
	verb string
	// setup makes what the request needs, with a daemon that does not
	// crash; reset undoes setup and the request.
	setup, reset func(t *T)
	// do is the request; its outcome is not looked at.
	do func(t *T) run
	// whole says whether what the request made is there and sound after
	// a restart; absent whether it is not there at all. One must hold.
	whole, absent func(t *T) bool
	// again is the same request, which must succeed after a restart.
	again func(t *T)
}

// crashOutcome is what one kill left.
type crashOutcome struct {
	step    string
	reached bool   // the daemon died at the step
	state   string // "whole" or "absent"
	leaks   []string
	err     string // what failed: the check, the request again
}

// crashCases are the requests of the campaign, on a busybox image
// pulled from the scenario's registry and the user network.
func crashCases(ref string) []crashCase {
	// The scenario pushed its kernel beside the image (crashScenario).
	kref := path.Dir(ref) + "/kernel:crash"
	vmShow := func(t *T) (api.VM, bool) {
		var v api.VM
		r := t.Banger("vm", "show", "c", "--json")
		if r.code != 0 {
			return v, false
		}
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("%v", err)
		}
		return v, true
	}
	answers := func(t *T) bool { return t.Banger("vm", "exec", "c", "--", "true").code == 0 }
	gone := func(t *T) bool { _, ok := vmShow(t); return !ok }
	running := func(t *T) bool { v, ok := vmShow(t); return ok && v.State == api.VMRunning && answers(t) }
	stopped := func(t *T) bool { v, ok := vmShow(t); return ok && v.State == api.VMStopped }
	create := []string{"vm", "create", "--name", "c", "--image", ref, "--network", "user", "--memory", "256M", "--cpus", "1"}
	bridge := []string{"vm", "create", "--name", "c", "--image", ref, "--network", "bridge", "--nat", "--memory", "256M", "--cpus", "1"}
	deleteVM := func(t *T) { t.Banger("vm", "delete", "--force", "c") }
	none := func(*T) {}
	// Whether VM name is there in state, answering when running.
	is := func(t *T, name, state string) bool {
		var v api.VM
		r := t.Banger("vm", "show", name, "--json")
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil || v.State != state {
			return false
		}
		return state != api.VMRunning || t.Banger("vm", "exec", name, "--", "true").code == 0
	}
	absentVM := func(t *T, name string) bool { return t.Banger("vm", "show", name).code != 0 }
	// The workspace: a git repository under the home, its file "f".
	repo := func(t *T) string { return filepath.Join(t.Home(), "repo") }
	hostFile := func(t *T) string {
		b, _ := os.ReadFile(filepath.Join(repo(t), "f"))
		return string(b)
	}
	guestFile := func(t *T) string { return t.Banger("vm", "exec", "c", "--", "cat", "/workspace/f").stdout }
	hasWorkspace := func(t *T) bool {
		var v api.VM
		r := t.Banger("vm", "show", "c", "--json")
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &v) == nil && v.Workspace != ""
	}
	// A cold create of c by args, whole when it runs and answers.
	coldCreate := func(verb string, args []string) crashCase {
		args = append(slices.Clip(args), "--cold")
		return crashCase{
			verb: verb, setup: none, reset: deleteVM,
			do:    func(t *T) run { return t.Banger(args...) },
			whole: running, absent: gone,
			again: func(t *T) {
				if gone(t) {
					t.Must(args...)
				}
			},
		}
	}
	withWorkspace := func(t *T) {
		t.makeRepo(repo(t))
		t.Must(append(create, "--cold", "--workspace", repo(t))...)
	}
	return []crashCase{
		coldCreate("vm.create", create),
		{
			verb: "vm.start", reset: deleteVM,
			setup: func(t *T) { t.Must(append(create, "--no-start")...) },
			do:    func(t *T) run { return t.Banger("vm", "start", "c") },
			whole: running, absent: stopped,
			again: func(t *T) { t.Must("vm", "start", "c"); t.Must("vm", "exec", "c", "--", "true") },
		},
		{
			verb: "vm.stop", reset: deleteVM,
			setup: func(t *T) { t.Must(append(create, "--cold")...) },
			do:    func(t *T) run { return t.Banger("vm", "stop", "c") },
			whole: stopped, absent: running,
			again: func(t *T) { t.Must("vm", "stop", "c") },
		},
		// On the bridge with NAT: a tap, per-VM rules, a chain and sets,
		// and a lease, each of which a kill can leave.
		coldCreate("vm.create (bridge)", bridge),
		{
			verb: "vm.delete", reset: deleteVM,
			setup: func(t *T) { t.Must(append(create, "--no-start")...) },
			do:    func(t *T) run { return t.Banger("vm", "delete", "c") },
			whole: gone, absent: stopped,
			again: func(t *T) {
				if !gone(t) {
					t.Must("vm", "delete", "c")
				}
			},
		},
		{
			verb: "vm.suspend", reset: deleteVM,
			setup: func(t *T) { t.Must(append(create, "--cold")...) },
			do:    func(t *T) run { return t.Banger("vm", "suspend", "c") },
			whole: func(t *T) bool { return is(t, "c", api.VMSuspended) }, absent: func(t *T) bool { return is(t, "c", api.VMRunning) },
			again: func(t *T) {
				if is(t, "c", api.VMRunning) {
					t.Must("vm", "suspend", "c")
				}
			},
		},
		{
			verb: "vm.resume", reset: deleteVM,
			setup: func(t *T) { t.Must(append(create, "--cold")...); t.Must("vm", "suspend", "c") },
			do:    func(t *T) run { return t.Banger("vm", "resume", "c") },
			whole: func(t *T) bool { return is(t, "c", api.VMRunning) }, absent: func(t *T) bool { return is(t, "c", api.VMSuspended) },
			again: func(t *T) {
				if is(t, "c", api.VMSuspended) {
					t.Must("vm", "resume", "c")
				}
				t.Must("vm", "exec", "c", "--", "true")
			},
		},
		{
			verb: "vm.fork", setup: func(t *T) { t.Must(append(create, "--cold")...) },
			reset:  func(t *T) { t.Banger("vm", "delete", "--force", "c", "f-1", "f-2") },
			do:     func(t *T) run { return t.Banger("vm", "fork", "c", "--count", "2", "--name", "f") },
			whole:  func(t *T) bool { return is(t, "f-1", api.VMRunning) && is(t, "f-2", api.VMRunning) },
			absent: func(t *T) bool { return absentVM(t, "f-1") && absentVM(t, "f-2") },
			again: func(t *T) {
				if absentVM(t, "f-1") {
					t.Must("vm", "fork", "c", "--count", "2", "--name", "f")
				}
			},
		},
		{
			// A warm create, the template made first: image delete takes
			// the template, so every run makes it again.
			verb: "vm.create (warm)", setup: func(t *T) { t.Must("image", "pull", ref) },
			reset: func(t *T) { deleteVM(t); t.Must("image", "delete", ref); t.Must("image", "pull", ref) },
			do:    func(t *T) run { return t.Banger(create...) },
			whole: running, absent: gone,
			again: func(t *T) {
				if gone(t) {
					t.Must(create...)
				}
			},
		},
		{
			verb: "workspace.prepare", reset: deleteVM,
			setup: func(t *T) { t.makeRepo(repo(t)); t.Must(append(create, "--cold")...) },
			do:    func(t *T) run { return t.Banger("vm", "workspace", "prepare", "c", repo(t)) },
			// Whole: the files in the guest, the workspace on the VM's
			// record and known to the daemon (status works); absent: the
			// VM has none (files a prepare left in the guest are replaced
			// by the next).
			whole: func(t *T) bool {
				return guestFile(t) == "one\n" && hasWorkspace(t) && t.Banger("vm", "workspace", "status", "c").code == 0
			},
			absent: func(t *T) bool { return !hasWorkspace(t) },
			again: func(t *T) {
				if !hasWorkspace(t) {
					t.Must("vm", "workspace", "prepare", "c", repo(t))
				}
				t.Must("vm", "workspace", "status", "c")
			},
		},
		{
			verb: "workspace.push", reset: deleteVM,
			setup: func(t *T) {
				withWorkspace(t)
				if err := os.WriteFile(filepath.Join(repo(t), "f"), []byte("two\n"), 0o644); err != nil {
					t.Fatalf("%v", err)
				}
			},
			do:     func(t *T) run { return t.Banger("vm", "workspace", "push", "c") },
			whole:  func(t *T) bool { return guestFile(t) == "two\n" },
			absent: func(t *T) bool { return guestFile(t) == "one\n" },
			again:  func(t *T) { t.Must("vm", "workspace", "push", "c") },
		},
		{
			verb: "workspace.pull", reset: deleteVM,
			setup: func(t *T) {
				withWorkspace(t)
				t.Must("vm", "exec", "c", "--", "sh", "-c", "echo three > /workspace/f")
			},
			do:     func(t *T) run { return t.Banger("vm", "workspace", "pull", "c") },
			whole:  func(t *T) bool { return hostFile(t) == "three\n" },
			absent: func(t *T) bool { return hostFile(t) == "one\n" },
			again:  func(t *T) { t.Must("vm", "workspace", "pull", "c") },
		},
		{
			verb: "image.pull", reset: none,
			setup: func(t *T) { t.Banger("image", "delete", ref); t.Banger("image", "cache", "prune", "-f") },
			do:    func(t *T) run { return t.Banger("image", "pull", ref) },
			whole: func(t *T) bool {
				var img api.Image
				r := t.Banger("image", "show", ref, "--json")
				if r.code != 0 || json.Unmarshal([]byte(r.stdout), &img) != nil {
					return false
				}
				fi, err := os.Stat(img.Rootfs)
				return err == nil && fi.Size() > 0
			},
			absent: func(t *T) bool { return t.Banger("image", "show", ref).code != 0 },
			again:  func(t *T) { t.Must("image", "pull", ref) },
		},
		{
			verb: "image.delete", setup: func(t *T) { t.Must("image", "pull", ref) },
			reset: func(t *T) { t.Must("image", "pull", ref) },
			do:    func(t *T) run { return t.Banger("image", "delete", ref) },
			whole: func(t *T) bool { return t.Banger("image", "show", ref).code != 0 },
			// Absent: recorded, its rootfs there (the leak check also
			// holds every record to its rootfs and every rootfs to a record).
			absent: func(t *T) bool {
				var img api.Image
				r := t.Banger("image", "show", ref, "--json")
				if r.code != 0 || json.Unmarshal([]byte(r.stdout), &img) != nil {
					return false
				}
				_, err := os.Stat(img.Rootfs)
				return err == nil
			},
			again: func(t *T) {
				if t.Banger("image", "show", ref).code == 0 {
					t.Must("image", "delete", ref)
				}
			},
		},
		// The kernel cases come last: they leave the scenario's one
		// kernel named "pulled", pulled from the registry.
		{
			verb:  "kernel.pull",
			setup: func(t *T) { dropKernels(t) },
			reset: none,
			do:    func(t *T) run { return t.Banger("kernel", "pull", kref, "--name", "pulled") },
			whole: kernelThere, absent: func(t *T) bool { return t.Banger("kernel", "show", "pulled").code != 0 },
			again: func(t *T) {
				if t.Banger("kernel", "show", "pulled").code != 0 {
					t.Must("kernel", "pull", kref, "--name", "pulled")
				}
			},
		},
		{
			verb: "kernel.delete",
			setup: func(t *T) {
				if t.Banger("kernel", "show", "pulled").code != 0 {
					t.Must("kernel", "pull", kref, "--name", "pulled")
				}
			},
			reset:  func(t *T) { t.Must("kernel", "pull", kref, "--name", "pulled") },
			do:     func(t *T) run { return t.Banger("kernel", "delete", "pulled") },
			whole:  func(t *T) bool { return t.Banger("kernel", "show", "pulled").code != 0 },
			absent: kernelThere,
			again: func(t *T) {
				if t.Banger("kernel", "show", "pulled").code == 0 {
					t.Must("kernel", "delete", "pulled")
				}
			},
		},
	}
}

// kernelThere says whether the kernel "pulled" is recorded with its
// bundle whole enough to boot: its kernel file is there.
func kernelThere(t *T) bool {
	var k api.Kernel
	r := t.Banger("kernel", "show", "pulled", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &k) != nil {
		return false
	}
	_, err := os.Stat(filepath.Join(k.Dir, "vmlinux"))
	return err == nil
}

// dropKernels deletes every kernel, so a pull stores a new bundle.
func dropKernels(t *T) {
	var l api.KernelListResult
	t.JSON(&l, "kernel", "list")
	for _, k := range l.Kernels {
		t.Must("kernel", "delete", k.Name)
	}
}

// makeRepo makes a git repository at dir, its one file f saying "one".
func (t *T) makeRepo(dir string) {
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("one\n"), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	t.Run("git", "-C", dir, "init", "-q")
	t.Run("git", "-C", dir, "add", "f")
	t.Run("git", "-C", dir, "-c", "user.name=smoke", "-c", "user.email=smoke@example.com", "commit", "-qm", "one")
}

// crashCampaign runs every case: a traced run finds the steps its
// request reaches, then each step is crashed at runs times. It returns
// every outcome, by case.
func (t *T) crashCampaign(cases []crashCase, runs int, only func(step string) bool) map[string][]crashOutcome {
	if t.tools.crashBin == "" {
		t.Fatalf("no crash-point build; `make build-crash` makes bin/crash (pass -crashbin)")
	}
	t.bin = t.tools.crashBin
	out := map[string][]crashOutcome{}
	for _, c := range cases {
		// The steps the request reaches, traced by a daemon that does
		// not crash.
		trace := filepath.Join(t.Home(), "trace-"+c.verb)
		c.setup(t)
		t.restartDaemon("BANGER_CRASH_TRACE=" + trace)
		if r := c.do(t); r.code != 0 {
			t.Fatalf("%s without a crash: %s", c.verb, r)
		}
		b, _ := os.ReadFile(trace)
		var steps []string
		for _, s := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if s != "" && !slices.Contains(steps, s) && (only == nil || only(s)) {
				steps = append(steps, s)
			}
		}
		t.restartDaemon()
		c.reset(t)
		if len(steps) == 0 {
			t.Fatalf("%s reached no crash point (trace %q)", c.verb, b)
		}
		for _, step := range steps {
			for range runs {
				out[c.verb] = append(out[c.verb], t.crashAt(c, step))
			}
		}
	}
	return out
}

// crashAt kills the daemon at step of c's request and checks what a
// restart makes of it.
func (t *T) crashAt(c crashCase, step string) crashOutcome {
	o := crashOutcome{step: step}
	c.setup(t)
	t.restartDaemon("BANGER_CRASH_AT=" + step)
	pid := t.DaemonPID()
	c.do(t)
	o.reached = syscall.Kill(pid, 0) != nil || isZombie(pid)
	if !o.reached {
		// The request went another way this time (a race it lost).
		t.restartDaemon()
	} else {
		t.StartDaemon()
	}
	o.leaks = t.leaks()
	// A restart finishes or undoes the request; a guest that was told to
	// power off may take a moment to.
	for deadline := time.Now().Add(time.Minute); o.state == ""; time.Sleep(time.Second) {
		switch {
		case c.whole(t):
			o.state = "whole"
		case c.absent(t):
			o.state = "absent"
		case time.Now().After(deadline):
			o.err = "neither whole nor absent after a minute: " + t.Banger("vm", "list").stdout
			o.state = "neither"
		}
	}
	if err := t.protect(func(t *T) { c.again(t) }); err != nil && o.err == "" {
		o.err = "the request again: " + err.Error()
	}
	c.reset(t)
	// What the reset leaves is the next run's leak; count it here.
	if more := t.leaks(); len(more) > 0 {
		o.leaks = append(o.leaks, more...)
		t.sweepLeaks()
	}
	return o
}

// restartDaemon stops the daemon (its VMs run on) and starts it with env.
func (t *T) restartDaemon(env ...string) {
	t.Banger("daemon", "stop")
	t.extraEnv = env
	t.StartDaemon()
	t.extraEnv = nil
}

// leakPattern matches the names banger gives staging and temporary files.
var leakPattern = regexp.MustCompile(`^\.(build|download|import|push|modules|initrd|partial|workspace|rotate|deleting|banger-write|banger-swap|banger-update|banger-stage)-|\.(partial|building|tmp|banger-tmp)$|\.pruning-|^(export|boot-test)-`)

// leaks lists what no record owns: VMM processes, VM directories,
// staging and temporary files and mounts under the home, store rows of
// VMs that are gone; and a store that fails its integrity check.
func (t *T) leaks() []string {
	var list api.VMListResult
	t.JSON(&list, "vm", "list")
	owned, live := map[string]bool{}, map[string]bool{}
	onBridge := 0
	for _, v := range list.VMs {
		owned[v.ID] = true
		live[v.ID] = v.State == api.VMRunning
		if live[v.ID] && v.Network == api.NetworkBridge {
			onBridge++
		}
	}
	var leaks []string
	// The bridge's taps and per-VM rules, chains and sets: a running
	// bridge VM's each.
	if t.netns != "" {
		if taps := t.Taps(); len(taps) > onBridge {
			leaks = append(leaks, fmt.Sprintf("taps %v for %d running bridge VM(s)", taps, onBridge))
		}
		for _, r := range t.perVM("banger-banger0") {
			id, isRule := strings.CutPrefix(r, "banger vm=")
			if (isRule && !live[id]) || (!isRule && onBridge == 0) {
				leaks = append(leaks, "nftables: "+r)
			}
		}
	}
	daemon := t.DaemonPID()
	idRE := regexp.MustCompile(`/vms/([0-9a-f]{32})`)
	for _, pid := range processesOf(t.home) {
		if pid == daemon {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		m := idRE.FindSubmatch(cmd)
		if m == nil || !live[string(m[1])] {
			leaks = append(leaks, fmt.Sprintf("process %d (%s)", pid, strings.ReplaceAll(string(cmd[:min(len(cmd), 80)]), "\x00", " ")))
		}
	}
	for _, parent := range []string{filepath.Join(t.home, "state", "vms"), filepath.Join(t.home, "run", "vms")} {
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			if len(e.Name()) == 32 && !owned[e.Name()] {
				leaks = append(leaks, "directory "+filepath.Join(parent, e.Name()))
			}
		}
	}
	// Kernel bundles and their records: each bundle a record's, each
	// record's bundle there.
	var kernels api.KernelListResult
	t.JSON(&kernels, "kernel", "list")
	bundles := map[string]bool{}
	for _, k := range kernels.Kernels {
		id := strings.TrimPrefix(k.ID, "sha256:")
		bundles[id] = true
		if _, err := os.Stat(filepath.Join(t.home, "state", "kernels", id, "vmlinux")); err != nil {
			leaks = append(leaks, "kernel "+k.Name+" without its bundle: "+err.Error())
		}
	}
	entries, _ := os.ReadDir(filepath.Join(t.home, "state", "kernels"))
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && !bundles[e.Name()] {
			leaks = append(leaks, "kernel bundle without a record: "+e.Name())
		}
	}
	// Images and their root file systems, the same way.
	var images api.ImageListResult
	t.JSON(&images, "image", "list")
	rootfses := map[string]bool{}
	for _, img := range images.Images {
		rootfses[filepath.Base(filepath.Dir(img.Rootfs))] = true
		if _, err := os.Stat(img.Rootfs); err != nil {
			leaks = append(leaks, "image "+img.Name+" without its rootfs: "+err.Error())
		}
	}
	entries, _ = os.ReadDir(filepath.Join(t.home, "state", "images"))
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && !rootfses[e.Name()] {
			leaks = append(leaks, "image rootfs without a record: "+e.Name())
		}
	}
	_ = filepath.WalkDir(t.home, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && p == filepath.Join(t.home, "logs") {
			return filepath.SkipDir
		}
		if leakPattern.MatchString(d.Name()) {
			leaks = append(leaks, "staging "+p)
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.Contains(line, t.home) && !slices.Contains(t.ownMounts, f[4]) {
				leaks = append(leaks, "mount "+line)
			}
		}
	}
	a, err := store.AuditFile(context.Background(), filepath.Join(t.home, "state", "banger.db"))
	switch {
	case err != nil:
		leaks = append(leaks, "store: "+err.Error())
	case a.Integrity != "ok":
		leaks = append(leaks, "store integrity: "+a.Integrity)
	}
	for _, o := range a.Orphans {
		leaks = append(leaks, "store: "+o)
	}
	return leaks
}

// sweepLeaks ends leaked processes (reset deleted every VM), so one
// run's leak does not count in the next.
func (t *T) sweepLeaks() {
	daemon := t.DaemonPID()
	for _, pid := range processesOf(t.home) {
		if pid != daemon {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// crashReport prints the outcomes, a line a step, and returns them as a
// markdown table with its totals, and the number of failures.
func crashReport(outcomes map[string][]crashOutcome) (string, int) {
	var b strings.Builder
	b.WriteString("| request | crash point | runs | reached | whole | absent | leaks | failures |\n|---|---|---|---|---|---|---|---|\n")
	verbs := make([]string, 0, len(outcomes))
	for v := range outcomes {
		verbs = append(verbs, v)
	}
	sort.Strings(verbs)
	var points, runs, leaks, failures int
	var detail []string
	for _, v := range verbs {
		byStep := map[string][]crashOutcome{}
		var order []string
		for _, o := range outcomes[v] {
			if _, ok := byStep[o.step]; !ok {
				order = append(order, o.step)
			}
			byStep[o.step] = append(byStep[o.step], o)
		}
		for _, step := range order {
			var reached, whole, absent, leaked, failed int
			for _, o := range byStep[step] {
				if o.reached {
					reached++
				}
				switch o.state {
				case "whole":
					whole++
				case "absent":
					absent++
				}
				if len(o.leaks) > 0 {
					leaked++
					detail = append(detail, fmt.Sprintf("%s at %s: leaked %s", v, step, strings.Join(o.leaks, "; ")))
				}
				if o.err != "" {
					failed++
					detail = append(detail, fmt.Sprintf("%s at %s: %s", v, step, o.err))
				}
			}
			points++
			runs += len(byStep[step])
			leaks += leaked
			failures += failed
			fmt.Fprintf(&b, "| %s | `%s` | %d | %d | %d | %d | %d | %d |\n", v, step, len(byStep[step]), reached, whole, absent, leaked, failed)
		}
	}
	fmt.Fprintf(&b, "\n%d crash points, %d runs: %d with a leak, %d failed.\n", points, runs, leaks, failures)
	for _, d := range detail {
		fmt.Fprintf(&b, "\n- %s", d)
	}
	return b.String(), leaks + failures
}

// crashPoints is the campaign (make reliability): every step of every
// case, -crash-runs times, the report written to -crash-report.
func crashPoints(t *T) {
	cases := crashCases
	if re := t.tools.crashVerbs; re != nil {
		cases = func(ref string) []crashCase {
			var out []crashCase
			for _, c := range crashCases(ref) {
				if re.MatchString(c.verb) {
					out = append(out, c)
				}
			}
			return out
		}
	}
	t.crashScenario(cases, t.tools.crashRuns, nil)
}

// crashPointsShort is its smoke (make test): one run of a few steps.
func crashPointsShort(t *T) {
	short := map[string]bool{"vm.boot:vmm started": true, "vm.create:waiting for the agent": true, "vm.delete:record deleted": true, "image.install:rootfs built": true}
	t.crashScenario(func(ref string) []crashCase {
		var out []crashCase
		for _, c := range crashCases(ref) {
			if c.verb == "vm.create" || c.verb == "vm.delete" || c.verb == "image.pull" {
				out = append(out, c)
			}
		}
		return out
	}, 1, func(step string) bool { return short[step] })
}

func (t *T) crashScenario(cases func(ref string) []crashCase, runs int, only func(string) bool) {
	reg := t.Registry()
	t.bin = t.tools.crashBin
	t.StartDaemon()
	t.Must("kernel", "import", "--deb", t.tools.kernelDeb)
	var k api.Kernel
	t.JSON(&k, "kernel", "show", "default")
	t.Must("kernel", "push", k.Name, reg+"/smoke/kernel:crash")
	ref := reg + "/smoke/busybox:crash"
	t.Push(ref, t.busyboxImage())
	t.Must("image", "pull", ref)
	start := time.Now()
	outcomes := t.crashCampaign(cases(ref), max(runs, 1), only)
	table, bad := crashReport(outcomes)
	fmt.Printf("%s: %s\n%s\n", t.name, time.Since(start).Round(time.Second), table)
	if t.tools.crashReport != "" {
		if err := report.Splice(t.tools.crashReport, "crash-points", fmt.Sprintf("%s, %d run(s) a point, %s.\n\n%s",
			runContext(), max(runs, 1), time.Since(start).Round(time.Second), table)); err != nil {
			t.Fatalf("%v", err)
		}
	}
	if bad > 0 {
		t.Fatalf("%d crash runs leaked or failed:\n%s", bad, table)
	}
}

// runContext says where and on what a campaign ran, the accelerator
// included.
func runContext() string { return report.Context("QEMU under " + accelerator()) }

// accelerator is what QEMU runs VMs with here.
func accelerator() string {
	if err := kvm.KVMUsable(); err != nil {
		return "TCG (no usable KVM)"
	}
	return "KVM"
}
