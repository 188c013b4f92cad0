package vm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/logcap"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

func TestStopPaths(t *testing.T) {
	for _, tc := range []struct {
		name   string
		p      api.VMStopParams
		fault  vmmtest.Fault
		reason string
	}{
		{name: "graceful", reason: "stopped by `banger vm stop`"},
		{name: "the guest hangs on its way down", p: api.VMStopParams{Timeout: 1}, fault: vmmtest.IgnoreShutdown,
			reason: "killed by `banger vm stop`: the guest did not power off within 1s"},
		{name: "the agent does not answer", p: api.VMStopParams{Timeout: 1}, fault: vmmtest.Silent,
			reason: "killed by `banger vm stop`: the guest did not power off within 1s"},
		{name: "force", p: api.VMStopParams{Force: true}, reason: "killed by `banger vm stop --force`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			v := f.mustCreate("web")
			g := f.drv.Guest(f.svc.recs.run(v.ID))
			g.SetFault(tc.fault)
			if tc.fault == vmmtest.Silent {
				f.dropLink(v.ID, g) // the stop dials again, and gets no answer
			}
			tc.p.Name = "web"
			v, err := f.svc.Stop(context.Background(), tc.p)
			if err != nil || v.State != api.VMStopped || v.Reason != tc.reason {
				t.Fatalf("stop = %+v, %v; want reason %q", v, err, tc.reason)
			}
			waitGone(t, g.PID())
		})
	}
}

func TestKill(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v := f.mustCreate("web")
	if _, err := f.svc.Kill(ctx, api.VMKillParams{Name: "web", Signal: "USR1"}); !errors.Is(err, api.ErrInvalidArgument) {
		t.Fatalf("kill with an unknown signal = %v", err)
	}
	if _, err := f.svc.Kill(ctx, api.VMKillParams{Name: "web", Signal: "SIGTERM"}); err != nil {
		t.Fatal(err)
	}
	v = f.waitState("web", api.VMStopped)
	if v.Reason != "killed by `banger vm kill` (SIGTERM)" {
		t.Fatalf("reason %q", v.Reason)
	}
	if _, err := f.svc.Kill(ctx, api.VMKillParams{Name: "web"}); !errors.Is(err, api.ErrNotRunning) {
		t.Fatalf("kill of a stopped VM = %v", err)
	}
	// SIGKILL goes out ahead of the VM's lock, and the watcher may record
	// the stop before Kill takes the lock: still Kill's own success.
	for range 10 {
		if _, err := f.svc.Start(ctx, api.VMRefParams{Name: "web"}); err != nil {
			t.Fatal(err)
		}
		v, err := f.svc.Kill(ctx, api.VMKillParams{Name: "web"})
		if err != nil {
			t.Fatalf("kill -9: %v", err)
		}
		if v = f.waitState("web", api.VMStopped); v.Reason != "killed by `banger vm kill` (SIGKILL)" {
			t.Fatalf("reason %q", v.Reason)
		}
	}
	// A VMM that dies on its own is recorded so.
	v, _ = f.svc.Start(ctx, api.VMRefParams{Name: "web"})
	_ = syscall.Kill(v.PID, syscall.SIGKILL)
	v = f.waitState("web", api.VMStopped)
	if !strings.Contains(v.Reason, "its VMM (vmmtest) crashed: signal: killed") {
		t.Fatalf("reason %q", v.Reason)
	}
}

func TestExitReason(t *testing.T) {
	run := func(args ...string) *os.ProcessState {
		cmd := exec.Command(args[0], args[1:]...)
		_ = cmd.Run()
		return cmd.ProcessState
	}
	for _, c := range []struct {
		st   *os.ProcessState
		want string
	}{
		{nil, "the VM stopped on its own"},
		{run("true"), "the guest powered off"},
		{run("false"), "its VMM (qemu) crashed: exit status 1"},
		{run("sh", "-c", "kill -SEGV $$"), "its VMM (qemu) crashed: signal: segmentation fault"},
	} {
		if got := exitReason("web", "qemu", c.st); !strings.HasPrefix(got, c.want) {
			t.Errorf("%v: %q", c.st, got)
		}
	}
}

// TestReconcile: a daemon that restarts takes back the VMs still
// running, records those whose VMM died while it was down, undoes the
// creates it did not finish, ends a VMM no record has the pid of, and
// removes directories nobody owns.
func TestReconcile(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	kept := f.mustCreate("kept")
	died := f.mustCreate("died")
	if _, err := f.svc.Create(ctx, api.VMCreateParams{Name: "half"}); err != nil { // recorded, never built
		t.Fatal(err)
	}
	stray := filepath.Join(f.cfg.RunDir, strings.Repeat("f", 32))
	if err := os.MkdirAll(stray, 0o700); err != nil {
		t.Fatal(err)
	}
	// A VMM started for a stopped VM whose pid the daemon did not live
	// to record, and one in a directory no record owns.
	off, err := f.create(api.VMCreateParams{Name: "off", NoStart: true})
	if err != nil {
		t.Fatal(err)
	}
	var unrecorded []*exec.Cmd
	for _, dir := range []string{f.svc.recs.run(off.ID), stray} {
		// A loop: the shell stays, its $0 the path (one command alone it
		// may exec in its place).
		c := exec.Command("sh", "-c", "while :; do sleep 1; done", filepath.Join(dir, "console.log"))
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		unrecorded = append(unrecorded, c)
	}
	// The daemon goes: its store with it, so its watchers record nothing.
	f.st.Close()
	_ = syscall.Kill(died.PID, syscall.SIGKILL)
	waitGone(t, died.PID)

	f.open()
	if err := f.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if v := f.show("kept"); v.State != api.VMRunning || v.PID != kept.PID {
		t.Fatalf("kept = %+v", v)
	}
	if v := f.show("died"); v.State != api.VMStopped || !strings.Contains(v.Reason, "while the daemon was not running") {
		t.Fatalf("died = %+v", v)
	}
	if _, err := f.svc.Show(ctx, api.VMRefParams{Name: "half"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("an interrupted create is still there: %v", err)
	}
	if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a directory no VM owns survived: %v", err)
	}
	for _, c := range unrecorded {
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("a VMM no record accounts for: %v", err)
			}
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			t.Fatalf("a VMM no record accounts for (%v) was left running", c.Args)
		}
	}
	if _, err := os.Stat(f.svc.recs.run(kept.ID)); err != nil {
		t.Fatalf("a live VM's directory went: %v", err)
	}
	// The adopted VM answers (its agent dialed again) and stops as any.
	if out, code, err := f.exec("kept", "echo", "back"); err != nil || code != 0 || out != "back\n" {
		t.Fatalf("exec after the restart = %q %d %v", out, code, err)
	}
	if v, err := f.svc.Stop(ctx, api.VMStopParams{Name: "kept"}); err != nil || v.State != api.VMStopped || v.Reason != "stopped by `banger vm stop`" {
		t.Fatalf("stop after the restart = %+v, %v", v, err)
	}
	waitGone(t, kept.PID)
}

// TestBridgeVM: a bridge VM gets a lease with its record, a tap and its
// rules while it runs (removed before the record says stopped), and the
// lease goes with the VM.
func TestBridgeVM(t *testing.T) {
	fb := &fakeBridge{prefix: netip.MustParsePrefix("10.77.0.0/29")}
	f := newFixture(t, func(c *Config) { c.Bridge = fb; c.Defaults.Network = api.NetworkBridge })
	ctx := context.Background()
	a := f.mustCreate("a")
	b, err := f.create(api.VMCreateParams{Name: "b", NAT: new(true)})
	if err != nil {
		t.Fatal(err)
	}
	if a.IP != "10.77.0.2" || b.IP != "10.77.0.3" {
		t.Fatalf("leases %s, %s", a.IP, b.IP)
	}
	want := []string{a.ID + " 10.77.0.2 nat=false allow=[] isolate=false", b.ID + " 10.77.0.3 nat=true allow=[] isolate=false"}
	slices.Sort(want)
	if got := fb.attached(); !slices.Equal(got, want) {
		t.Fatalf("attached %v", got)
	}
	// What the .vm zone asks of the records.
	names := Names{Store: f.st, Prefix: fb.prefix, Gateway: fb.Gateway()}
	if addr, ok := names.AddrOf(ctx, "a"); !ok || addr.String() != "10.77.0.2" {
		t.Fatalf("AddrOf(a) = %v, %v", addr, ok)
	}
	for _, n := range []string{"nope", "A", "../a"} {
		if _, ok := names.AddrOf(ctx, n); ok {
			t.Errorf("AddrOf(%q) answered", n)
		}
	}
	// Off the bridge, only the host's loopback: the DNS server is no open
	// resolver for whoever reaches the gateway address.
	for addr, want := range map[string]string{"10.77.0.2": a.ID + " sandbox", "10.77.0.3": b.ID + " nat", "10.77.0.1": " nat",
		"10.77.0.5": " sandbox", "192.0.2.1": " sandbox", "127.0.0.1": " nat"} {
		if id, egress, _ := names.Source(ctx, netip.MustParseAddr(addr)); id+" "+egress != want {
			t.Errorf("Source(%s) = %s %s, want %s", addr, id, egress, want)
		}
	}
	if mode, _ := names.Egress(ctx, b.ID); mode != api.EgressNAT {
		t.Errorf("Egress(b) = %s", mode)
	}
	if mode, _ := names.Egress(ctx, "nope"); mode != api.EgressSandbox {
		t.Errorf("Egress(nope) = %s", mode)
	}
	if id, network, err := names.Lookup(ctx, "b"); id != b.ID || network != api.NetworkBridge || err != nil {
		t.Errorf("Lookup(b) = %s, %s, %v", id, network, err)
	}
	if _, _, err := names.Lookup(ctx, "nope"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Lookup(nope) = %v", err)
	}
	for addr, want := range map[string]bool{"10.77.0.4": true, "127.0.0.1": true, "192.0.2.1": false, "10.78.0.1": false} {
		if got := names.Local(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Local(%s) = %v, want %v", addr, got, want)
		}
	}
	if _, err := f.svc.Stop(ctx, api.VMStopParams{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if got := fb.attached(); !slices.Equal(got, []string{b.ID + " 10.77.0.3 nat=true allow=[] isolate=false"}) {
		t.Fatalf("after a stopped, attached %v", got)
	}
	if v := f.show("a"); v.IP != "10.77.0.2" {
		t.Fatalf("a stopped VM keeps its lease: %+v", v)
	}
	// The network has room for 5 VMs: 10.77.0.2-6.
	for _, n := range []string{"c", "d", "e"} {
		f.mustCreate(n)
	}
	if _, err := f.svc.Create(ctx, api.VMCreateParams{Name: "f"}); !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "no free address") {
		t.Fatalf("create on a full network = %v", err)
	}
	if _, err := f.svc.Delete(ctx, api.VMDeleteParams{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if v := f.mustCreate("f"); v.IP != "10.77.0.2" {
		t.Fatalf("the freed lease went elsewhere: %+v", v)
	}
	// A restart makes the running VMs' rules again and sweeps the rest.
	f.st.Close()
	f.open()
	if err := f.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if len(fb.synced) != 1 || len(fb.synced[0]) != 5 {
		t.Fatalf("synced %v", fb.synced)
	}
}

// TestEgressPolicy: allow-lists and isolation, chosen at create (the
// config's default list for bridge VMs), refused where no firewall can
// hold them, and changed on a running bridge VM at once.
func TestEgressPolicy(t *testing.T) {
	fb := &fakeBridge{prefix: netip.MustParsePrefix("10.77.0.0/29")}
	var changed []string
	f := newFixture(t, func(c *Config) {
		c.Bridge = fb
		c.Defaults.Network = api.NetworkBridge
		c.Defaults.Allow = []string{"deb.debian.org:80"}
		c.PolicyChanged = func(_ context.Context, id string, l allowlist.List) {
			changed = append(changed, id+" "+fmt.Sprint(l.Strings()))
		}
	})
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		p      api.VMCreateParams
		egress string
		allow  []string
	}{
		{"the config's list", api.VMCreateParams{Name: "d"}, api.EgressAllowList, []string{"deb.debian.org:80"}},
		{"its own list", api.VMCreateParams{Name: "l", Allow: []string{"GitHub.com:443", "10.0.0.0/8", "github.com:443"}, Isolate: true},
			api.EgressAllowList, []string{"github.com:443", "10.0.0.0/8"}},
		{"nat: no list", api.VMCreateParams{Name: "n", NAT: new(true)}, api.EgressNAT, nil},
		{"no nat: nothing", api.VMCreateParams{Name: "s", NAT: new(false), NoStart: true}, api.EgressSandbox, nil},
		{"user, not the config's list", api.VMCreateParams{Name: "u", Network: api.NetworkUser}, api.EgressSandbox, nil},
	} {
		v, err := f.create(tc.p)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if v.Egress != tc.egress || !slices.Equal(v.Allow, tc.allow) || v.NAT != (tc.egress != api.EgressSandbox) {
			t.Errorf("%s: egress %s, allow %q, nat %v; want %s, %q", tc.name, v.Egress, v.Allow, v.NAT, tc.egress, tc.allow)
		}
	}
	if got := fb.attached(); !slices.Contains(got, f.show("l").ID+" 10.77.0.3 nat=true allow=[github.com:443 10.0.0.0/8] isolate=true") {
		t.Errorf("attached %q", got)
	}
	for _, tc := range []struct {
		name   string
		p      api.VMCreateParams
		saying string
	}{
		{"a list on the user network", api.VMCreateParams{Name: "x", Network: api.NetworkUser, Allow: []string{"github.com"}}, "--allow needs the bridge network"},
		{"a list without a network", api.VMCreateParams{Name: "x", Network: api.NetworkNone, Allow: []string{"github.com"}}, "--allow needs the bridge network"},
		{"a list and no nat", api.VMCreateParams{Name: "x", Allow: []string{"github.com"}, NAT: new(false)}, "pass one"},
		{"a bad rule", api.VMCreateParams{Name: "x", Allow: []string{"github.com:http"}}, `invalid allow rule "github.com:http"`},
	} {
		if _, err := f.svc.Create(ctx, tc.p); !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.saying) {
			t.Errorf("%s: %v; want invalid_argument saying %q", tc.name, err, tc.saying)
		}
	}
	// A running bridge VM changes at once; its DNS server hears of it.
	n := f.show("n")
	v, err := f.svc.Set(ctx, api.VMSetParams{Name: "n", Allow: []string{"example.com:443"}, Isolate: new(true)})
	if err != nil {
		t.Fatal(err)
	}
	if v.Egress != api.EgressAllowList || !v.Isolate || fb.policy(n.ID) != "nat=true allow=[example.com:443] isolate=true" ||
		!slices.Equal(changed, []string{n.ID + " [example.com:443]"}) {
		t.Errorf("after set --allow: %+v, firewall %q, told %q", v, fb.policy(n.ID), changed)
	}
	if v, err = f.svc.Set(ctx, api.VMSetParams{Name: "n", NAT: new(false)}); err != nil || v.Egress != api.EgressSandbox || v.Allow != nil ||
		fb.policy(n.ID) != "nat=false allow=[] isolate=true" {
		t.Errorf("after set --nat=false: %+v, %v, firewall %q", v, err, fb.policy(n.ID))
	}
	// A firewall that refuses the change leaves the record as it was.
	fb.fail = errors.New("nftables said no")
	if _, err := f.svc.Set(ctx, api.VMSetParams{Name: "n", NAT: new(true)}); err == nil || !strings.Contains(err.Error(), "nftables said no") {
		t.Errorf("a refused change: %v", err)
	}
	fb.fail = nil
	if v := f.show("n"); v.Egress != api.EgressSandbox {
		t.Errorf("a refused change was recorded: %+v", v)
	}
	// A user-mode VM's way out is its VMM's: it changes while stopped.
	if _, err := f.svc.Set(ctx, api.VMSetParams{Name: "u", NAT: new(true)}); !errors.Is(err, api.ErrInUse) {
		t.Errorf("set --nat on a running user-mode VM: %v", err)
	}
	if _, err := f.svc.Set(ctx, api.VMSetParams{Name: "u", Allow: []string{"github.com"}}); !errors.Is(err, api.ErrInvalidArgument) {
		t.Errorf("set --allow on a user-mode VM: %v", err)
	}
	// A stopped VM's change waits for its start.
	if v, err := f.svc.Set(ctx, api.VMSetParams{Name: "s", Allow: []string{"192.0.2.0/24:22"}}); err != nil || v.Egress != api.EgressAllowList {
		t.Errorf("set --allow on a stopped VM: %+v, %v", v, err)
	}
	if fb.policy(f.show("s").ID) != "" {
		t.Error("a stopped VM's firewall was touched")
	}
}

func TestLogs(t *testing.T) {
	f := newFixture(t)
	v := f.mustCreate("web")
	ctx := context.Background()
	if got := logsOf(t, f, api.VMLogsParams{Name: "web"}); got != vmmtest.ConsoleBoot {
		t.Fatalf("logs = %q", got)
	}
	console := filepath.Join(f.svc.recs.run(v.ID), "console.log")
	if err := os.WriteFile(console, []byte("one\ntwo\nthree\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := logsOf(t, f, api.VMLogsParams{Name: "web", Tail: 2}); got != "two\nthree\n" {
		t.Fatalf("tail 2 = %q", got)
	}
	// Following: the tail first, then what the console receives.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var got []string
	done := make(chan error, 1)
	go func() {
		_, err := f.svc.Logs(fctx, api.VMLogsParams{Name: "web", Tail: 1, Follow: true}, func(r api.VMLogsResult) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, r.Console)
			if len(got) == 1 {
				fh, _ := os.OpenFile(console, os.O_APPEND|os.O_WRONLY, 0)
				fh.WriteString("four\n")
				fh.Close()
			}
			if strings.Contains(strings.Join(got, ""), "four") {
				cancel()
			}
			return nil
		})
		done <- err
	}()
	select {
	case err := <-done:
		mu.Lock()
		defer mu.Unlock()
		if err != nil || strings.Join(got, "") != "three\nfour\n" {
			t.Fatalf("follow = %q, %v", got, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("following never saw the new line")
	}
	if _, err := f.svc.Logs(ctx, api.VMLogsParams{Name: "nope"}, nil); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("logs of a missing VM = %v", err)
	}
}

// TestConsoleFloodIsCapped: a guest that writes its console without end
// costs the host at most the cap (plus one sweep's writing), and the
// newest lines stay readable.
func TestConsoleFloodIsCapped(t *testing.T) {
	const capBytes = 256 << 10
	f := newFixture(t, func(c *Config) { c.LogMaxBytes = capBytes })
	v := f.mustCreate("web")
	console := filepath.Join(f.svc.recs.run(v.ID), "console.log")
	w, err := os.OpenFile(console, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	line := strings.Repeat("flood ", 16) + "\n"
	var written, worst int64
	start := time.Now()
	for written < 48*capBytes {
		for range 100 {
			n, _ := w.WriteString(line)
			written += int64(n)
		}
		var on int64
		for _, p := range []string{console, console + logcap.Older} {
			if fi, err := os.Stat(p); err == nil {
				on += fi.Size()
			}
		}
		worst = max(worst, on)
		time.Sleep(time.Millisecond) // a guest writing at about 10 MB/s
	}
	if _, err := w.WriteString("newest\n"); err != nil {
		t.Fatal(err)
	}
	// What the guest can write between two sweeps comes on top; twice
	// that, for a sweep that runs late on a busy machine.
	rate := float64(written) / time.Since(start).Seconds()
	if bound := capBytes + int64(rate*logSweep.Seconds()*2); worst > bound || worst >= written/2 {
		t.Fatalf("%d bytes on the host for a cap of %d (bound %d at %.0f B/s)", worst, capBytes, bound, rate)
	}
	if got := logsOf(t, f, api.VMLogsParams{Name: "web", Tail: 1}); got != "newest\n" {
		t.Fatalf("tail = %q", got)
	}
	t.Logf("wrote %d bytes at %.1f MB/s; at most %d on the host (cap %d)", written, rate/1e6, worst, capBytes)
}

// TestForceNeverWaitsBehindAGracefulStop: a graceful stop of a guest that
// ignores the power-off holds the VM for its whole timeout; stop --force,
// kill and delete --force each end the VM at once all the same.
func TestForceNeverWaitsBehindAGracefulStop(t *testing.T) {
	for _, tc := range []struct {
		name  string
		force func(f *fixture) error
	}{
		{"stop --force", func(f *fixture) error {
			_, err := f.svc.Stop(context.Background(), api.VMStopParams{Name: "web", Force: true})
			return err
		}},
		{"kill", func(f *fixture) error {
			_, err := f.svc.Kill(context.Background(), api.VMKillParams{Name: "web"})
			if errors.Is(err, api.ErrNotRunning) {
				err = nil // the graceful stop saw the VMM die first and recorded it
			}
			return err
		}},
		{"delete --force", func(f *fixture) error {
			_, err := f.svc.Delete(context.Background(), api.VMDeleteParams{Name: "web", Force: true})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			v := f.mustCreate("web")
			g := f.drv.Guest(f.svc.recs.run(v.ID))
			g.SetFault(vmmtest.IgnoreShutdown)
			graceful := make(chan error, 1)
			go func() {
				_, err := f.svc.Stop(context.Background(), api.VMStopParams{Name: "web", Timeout: 600})
				graceful <- err
			}()
			// The graceful stop has the VM once the guest got its power-off.
			for g.Shutdowns() == 0 {
				time.Sleep(time.Millisecond)
			}
			forced := make(chan error, 1)
			go func() { forced <- tc.force(f) }()
			select {
			case err := <-forced:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s still waits behind a graceful stop", tc.name)
			}
			waitGone(t, g.PID())
			<-graceful
		})
	}
}

// TestStalledGuestHarmsNoOther: a guest whose agent stops reading its
// link fails its own calls as unresponsive once the link's write timeout
// passes; another VM's calls go on meanwhile, and stop --force ends the
// stalled one at once.
func TestStalledGuestHarmsNoOther(t *testing.T) {
	f := newFixture(t)
	f.mustCreate("good")
	evil := f.mustCreate("evil")
	g := f.drv.Guest(f.svc.recs.run(evil.ID))
	g.SetFault(vmmtest.Stalled)
	f.dropLink(evil.ID, g) // the next link is the stalled one
	stalled := make(chan error, 1)
	start := time.Now()
	go func() {
		_, _, err := f.exec("evil", "true")
		stalled <- err
	}()
	for i := range 3 {
		if out, code, err := f.exec("good", "echo", "fine"); err != nil || code != 0 || out != "fine\n" {
			t.Fatalf("exec %d in the good VM beside a stalled one = %q %d %v", i, out, code, err)
		}
	}
	select {
	case err := <-stalled:
		if !errors.Is(err, api.ErrUnresponsive) {
			t.Fatalf("exec in the stalled VM = %v; want unresponsive", err)
		}
		if took := time.Since(start); took > client.WriteTimeout+10*time.Second {
			t.Fatalf("the stalled exec took %s", took)
		}
	case <-time.After(client.WriteTimeout + 20*time.Second):
		t.Fatal("the stalled exec never ended")
	}
	forced := make(chan error, 1)
	go func() {
		_, err := f.svc.Stop(context.Background(), api.VMStopParams{Name: "evil", Force: true})
		forced <- err
	}()
	select {
	case err := <-forced:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stop --force of a stalled VM still waits")
	}
}

// TestModulesDiskFailureOnce: a bundle whose modules disk cannot be made
// (here: modules, and no version to name their directory) gives its VMs
// none, warned once, not a build attempt at every start.
func TestModulesDiskFailureOnce(t *testing.T) {
	var mu sync.Mutex
	warned := 0
	f := newFixture(t)
	kernelDir := filepath.Join(f.dir, "kernel")
	if err := os.MkdirAll(filepath.Join(kernelDir, "modules", "kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.svc.cfg.Log = slog.New(countingHandler{func(r slog.Record) {
		if strings.Contains(r.Message, "initramfs's modules alone") {
			mu.Lock()
			warned++
			mu.Unlock()
		}
	}})
	for _, name := range []string{"a", "b"} {
		v := f.mustCreate(name)
		if n := len(f.drv.Guest(f.svc.recs.run(v.ID)).Spec.Disks); n != 2 {
			t.Fatalf("%s has %d disks", name, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if warned != 1 {
		t.Fatalf("warned %d times", warned)
	}
}
