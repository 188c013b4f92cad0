package vm

import (
	"bytes"
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

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/logcap"
	"github.com/bangerdev/banger/internal/sshkey"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

// The VM service against vmmtest's driver: real stand-in VMM processes
// (pids, signals, exits, adoption) and the real agent server over pipes,
// so every lifecycle verb and failure path runs without QEMU. Booting
// itself is test/vmtest's and the smoke suite's to prove.

func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v := f.mustCreate("web")
	if v.State != api.VMRunning || v.PID == 0 || !alive(v.PID) || v.VMM != "vmmtest" || v.ImageID != "sha256:img" || v.StartedAt == nil {
		t.Fatalf("created VM = %+v", v)
	}
	if fi, err := os.Stat(f.svc.workDisk(v.ID)); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("work disk: %v, %v", fi, err)
	}
	if !strings.Contains(knownHosts(t, f), "web.vm ssh-ed25519 ") {
		t.Fatalf("known_hosts lacks the guest's key:\n%s", knownHosts(t, f))
	}
	if out, code, err := f.exec("web", "sh", "-c", "echo hello; exit 3"); err != nil || code != 3 || out != "hello\n" {
		t.Fatalf("exec = %q %d %v", out, code, err)
	}
	info, err := f.svc.SSH(ctx, api.VMRefParams{Name: "web"})
	if err != nil || info.Host != "web.vm" || info.User != "root" {
		t.Fatalf("ssh info = %+v, %v", info, err)
	}

	// A graceful stop goes through the agent's power-off.
	pid := v.PID
	v, err = f.svc.Stop(ctx, api.VMStopParams{Name: "web"})
	if err != nil || v.State != api.VMStopped || v.Reason != "stopped by `banger vm stop`" || v.PID != 0 {
		t.Fatalf("stop = %+v, %v", v, err)
	}
	waitGone(t, pid)
	if _, _, err := f.exec("web", "true"); !errors.Is(err, api.ErrNotRunning) {
		t.Fatalf("exec in a stopped VM = %v", err)
	}
	if _, err := f.svc.Stop(ctx, api.VMStopParams{Name: "web"}); err != nil {
		t.Fatalf("stopping a stopped VM: %v", err)
	}

	v, err = f.svc.Start(ctx, api.VMRefParams{Name: "web"})
	if err != nil || v.State != api.VMRunning || v.PID == pid || v.Reason != "" {
		t.Fatalf("start = %+v, %v", v, err)
	}
	again, err := f.svc.Start(ctx, api.VMRefParams{Name: "web"})
	if err != nil || again.PID != v.PID {
		t.Fatalf("starting a running VM = %+v, %v", again, err)
	}
	pid = v.PID
	v, err = f.svc.Restart(ctx, api.VMRefParams{Name: "web"})
	if err != nil || v.State != api.VMRunning || v.PID == pid {
		t.Fatalf("restart = %+v, %v", v, err)
	}
	waitGone(t, pid)

	list, err := f.svc.List(ctx)
	if err != nil || len(list.VMs) != 1 || list.VMs[0].Name != "web" {
		t.Fatalf("list = %+v, %v", list, err)
	}

	if _, err := f.svc.Delete(ctx, api.VMDeleteParams{Name: "web"}); !errors.Is(err, api.ErrInUse) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("delete of a running VM = %v", err)
	}
	pid = v.PID
	if _, err := f.svc.Delete(ctx, api.VMDeleteParams{Name: "web", Force: true}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	if _, err := f.svc.Show(ctx, api.VMRefParams{Name: "web"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("show after delete = %v", err)
	}
	for _, d := range []string{f.svc.runDir(v.ID), f.svc.stateDir(v.ID)} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after delete: %v", d, err)
		}
	}
	if strings.Contains(knownHosts(t, f), "web.vm") {
		t.Fatalf("known_hosts keeps a deleted VM:\n%s", knownHosts(t, f))
	}
}

func TestCreateRefusals(t *testing.T) {
	f := newFixture(t)
	f.mustCreate("taken")
	for _, tc := range []struct {
		name   string
		p      api.VMCreateParams
		setup  func()
		want   error
		saying string
	}{
		{name: "duplicate name", p: api.VMCreateParams{Name: "taken"}, want: api.ErrAlreadyExists, saying: "pick another --name"},
		{name: "bad name", p: api.VMCreateParams{Name: "Bad_Name"}, want: api.ErrInvalidArgument, saying: "VM name"},
		{name: "too little memory", p: api.VMCreateParams{Name: "small", MemoryMiB: 64}, want: api.ErrInvalidArgument, saying: "--memory"},
		{name: "nat without a network", p: api.VMCreateParams{Name: "nn", NAT: new(true)}, want: api.ErrInvalidArgument, saying: "--nat"},
		{name: "bridge without one", p: api.VMCreateParams{Name: "br", Network: api.NetworkBridge}, want: api.ErrInvalidArgument, saying: "--network user"},
		{name: "driver unavailable", p: api.VMCreateParams{Name: "nodrv"}, setup: func() { f.drv.SetUnavailable(errors.New("no VMM here")) },
			want: api.ErrInvalidArgument, saying: "no VMM here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
				defer f.drv.SetUnavailable(nil)
			}
			_, err := f.svc.Create(context.Background(), tc.p)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.saying) {
				t.Fatalf("create = %v, want %v saying %q", err, tc.want, tc.saying)
			}
		})
	}
	list, _ := f.svc.List(context.Background())
	if len(list.VMs) != 1 {
		t.Fatalf("refused creates left records: %+v", list.VMs)
	}
	// A create without a name gets a readable one.
	v := f.mustCreate("")
	if !validName.MatchString(v.Name) || !strings.Contains(v.Name, "-") {
		t.Fatalf("generated name %q", v.Name)
	}
}

// TestCreateFailures: a create that fails keeps the VM, failed, with the
// reason; no VMM process outlives it.
func TestCreateFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fault  vmmtest.Fault
		image  string
		saying []string
	}{
		{name: "VMM exits at once", fault: vmmtest.ExitAtStart,
			saying: []string{"the VM stopped before its agent answered", "Kernel panic", "vmmtest said:", "could not open the disk image"}},
		{name: "agent never answers", fault: vmmtest.Silent, saying: []string{"waiting for the agent", "the console ends with:", "guest up"}},
		{name: "VMM does not start", fault: vmmtest.StartFails, saying: []string{"exec format error"}},
		{name: "image missing", image: "nope", saying: []string{"image nope", "not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.drv.SetFault(tc.fault)
			_, err := f.create(api.VMCreateParams{Name: "bad", Image: tc.image})
			if err == nil {
				t.Fatal("the create succeeded")
			}
			v := f.show("bad")
			if v.State != api.VMFailed || v.PID != 0 || v.StoppedAt == nil {
				t.Fatalf("after a failed create: %+v", v)
			}
			for _, s := range tc.saying {
				if !strings.Contains(err.Error(), s) || !strings.Contains(v.Reason, s) {
					t.Errorf("error %q / reason %q lacks %q", err, v.Reason, s)
				}
			}
			if g := f.drv.Guest(f.svc.runDir(v.ID)); g != nil {
				waitGone(t, g.PID())
			}
			// A failed VM starts again once what failed is fixed.
			f.drv.SetFault(vmmtest.Healthy)
			f.cfg.Image = func(context.Context, string) (api.Image, error) {
				return api.Image{Name: "debian", ID: "sha256:img", Rootfs: filepath.Join(f.dir, "rootfs.ext4")}, nil
			}
			f.svc.cfg.Image = f.cfg.Image
			if tc.image != "" {
				return // its record names no image ID to start from
			}
			if v, err := f.svc.Start(context.Background(), api.VMRefParams{Name: "bad"}); err != nil || v.State != api.VMRunning {
				t.Fatalf("start after the fault = %+v, %v", v, err)
			}
		})
	}
}

// TestCreateCanceled: a create canceled mid-phase leaves nothing: no
// record, no directory, no process.
func TestCreateCanceled(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.BootTimeout = time.Minute })
	f.drv.SetFault(vmmtest.Silent)
	c, err := f.svc.Create(context.Background(), api.VMCreateParams{Name: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	phases := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		_, err := f.svc.Build(ctx, func(p string) { phases <- p }, c)
		done <- err
	}()
	for p := range phases {
		if p == "waiting for the agent" {
			break
		}
	}
	g := f.drv.Guest(f.svc.runDir(c.rec.ID))
	if g == nil || !alive(g.PID()) {
		t.Fatal("no VMM running while waiting for the agent")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled build = %v", err)
	}
	waitGone(t, g.PID())
	if _, err := f.svc.Show(context.Background(), api.VMRefParams{Name: "gone"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a canceled create left its record: %v", err)
	}
	for _, d := range []string{f.cfg.RunDir, f.cfg.StateDir} {
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			t.Errorf("a canceled create left %v in %s", entries, d)
		}
	}
}

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
			g := f.drv.Guest(f.svc.runDir(v.ID))
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

// The lifecycle is told as events, each stop with its reason.
func TestEvents(t *testing.T) {
	var mu sync.Mutex
	var got []api.Event
	f := newFixture(t, func(c *Config) {
		c.Event = func(e api.Event) {
			mu.Lock()
			got = append(got, e)
			mu.Unlock()
		}
	})
	ctx := context.Background()
	f.mustCreate("web")
	if _, err := f.svc.Stop(ctx, api.VMStopParams{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	v, err := f.svc.Start(ctx, api.VMRefParams{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	_ = syscall.Kill(v.PID, syscall.SIGKILL)
	f.waitState("web", api.VMStopped)
	if _, err := f.svc.Delete(ctx, api.VMDeleteParams{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	want := []struct{ typ, reason string }{
		{api.EventVMCreated, ""}, {api.EventVMStarted, ""},
		{api.EventVMStopped, "stopped by `banger vm stop`"}, {api.EventVMStarted, ""},
		{api.EventVMStopped, "its VMM (vmmtest) crashed"}, {api.EventVMDeleted, ""},
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("events %+v", got)
	}
	for i, w := range want {
		if e := got[i]; e.Type != w.typ || e.VM != "web" || e.Image != "debian" || !strings.HasPrefix(e.Reason, w.reason) {
			t.Errorf("event %d = %+v, want %s %q", i, e, w.typ, w.reason)
		}
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

func TestSet(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.mustCreate("web")
	if _, err := f.svc.Set(ctx, api.VMSetParams{Name: "web", VCPU: 2}); !errors.Is(err, api.ErrInUse) || !strings.Contains(err.Error(), "banger vm stop web") {
		t.Fatalf("set cpus of a running VM = %v", err)
	}
	v, err := f.svc.Set(ctx, api.VMSetParams{Name: "web", AutoStop: "30m"})
	if err != nil || v.AutoStop != "30m" {
		t.Fatalf("set auto-stop of a running VM = %+v, %v", v, err)
	}
	if _, err := f.svc.Stop(ctx, api.VMStopParams{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		p      api.VMSetParams
		saying string
	}{
		{api.VMSetParams{DiskSize: 32 << 20}, "only grows"},
		{api.VMSetParams{VCPU: 999}, "--cpus"},
		{api.VMSetParams{AutoStop: "soon"}, "--auto-stop"},
	} {
		tc.p.Name = "web"
		if _, err := f.svc.Set(ctx, tc.p); !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.saying) {
			t.Errorf("set %+v = %v", tc.p, err)
		}
	}
	v, err = f.svc.Set(ctx, api.VMSetParams{Name: "web", VCPU: 2, MemoryMiB: 512, DiskSize: 128 << 20, AutoStop: "default", NAT: new(false)})
	if err != nil || v.VCPU != 2 || v.MemoryMiB != 512 || v.DiskSize != 128<<20 || v.AutoStop != "" {
		t.Fatalf("set = %+v, %v", v, err)
	}
	if fi, err := os.Stat(f.svc.workDisk(v.ID)); err != nil || fi.Size() != 128<<20 {
		t.Fatalf("the grown work disk: %v, %v", fi, err)
	}
}

func TestPruneAndAutoStop(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.mustCreate("up")
	f.mustCreate("down")
	f.drv.SetFault(vmmtest.ExitAtStart)
	if _, err := f.create(api.VMCreateParams{Name: "broken"}); err == nil {
		t.Fatal("a broken create succeeded")
	}
	f.drv.SetFault(vmmtest.Healthy)
	if _, err := f.svc.Stop(ctx, api.VMStopParams{Name: "down"}); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.Prune(ctx)
	slices.Sort(r.Deleted)
	if err != nil || !slices.Equal(r.Deleted, []string{"broken", "down"}) {
		t.Fatalf("prune = %+v, %v", r, err)
	}

	// Auto-stop leaves a VM that a verb holds alone, and stops it
	// gracefully otherwise, with the reason given.
	unlock := f.svc.lock("up")
	if stopped, err := f.svc.AutoStop(ctx, "up", "idle"); stopped || err != nil {
		t.Fatalf("auto-stop of a held VM = %v, %v", stopped, err)
	}
	unlock()
	if stopped, err := f.svc.AutoStop(ctx, "up", "stopped automatically: idle"); !stopped || err != nil {
		t.Fatalf("auto-stop = %v, %v", stopped, err)
	}
	if v := f.show("up"); v.State != api.VMStopped || v.Reason != "stopped automatically: idle" {
		t.Fatalf("after auto-stop: %+v", v)
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
	for _, dir := range []string{f.svc.runDir(off.ID), stray} {
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
	if _, err := os.Stat(f.svc.runDir(kept.ID)); err != nil {
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
	if names.Egress(ctx, b.ID) != api.EgressNAT || names.Egress(ctx, "nope") != api.EgressSandbox {
		t.Errorf("Egress(b) = %s", names.Egress(ctx, b.ID))
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

// logsOf is what a vm.logs call sends, chunks and answer together.
func logsOf(t *testing.T, f *fixture, p api.VMLogsParams) string {
	t.Helper()
	var b strings.Builder
	r, err := f.svc.Logs(context.Background(), p, func(r api.VMLogsResult) error { b.WriteString(r.Console); return nil })
	if err != nil {
		t.Fatalf("logs %+v: %v", p, err)
	}
	return b.String() + r.Console
}

func TestLogs(t *testing.T) {
	f := newFixture(t)
	v := f.mustCreate("web")
	ctx := context.Background()
	if got := logsOf(t, f, api.VMLogsParams{Name: "web"}); got != vmmtest.ConsoleBoot {
		t.Fatalf("logs = %q", got)
	}
	console := filepath.Join(f.svc.runDir(v.ID), "console.log")
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
	console := filepath.Join(f.svc.runDir(v.ID), "console.log")
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

// fixture is a VM service on a temporary store and directories.
type fixture struct {
	t      *testing.T
	dir    string
	db     string
	drv    *vmmtest.Driver
	bridge *fakeBridge
	svc    *Service
	st     *store.Store
	cfg    Config
}

func newFixture(t *testing.T, change ...func(*Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, dir: dir, db: filepath.Join(dir, "banger.db"), drv: &vmmtest.Driver{}}
	t.Cleanup(f.drv.Close)
	agentBin := filepath.Join(dir, "banger-agent")
	if err := os.WriteFile(agentBin, []byte("not really an agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	kernelDir := filepath.Join(dir, "kernel") // no modules: all built in
	rootfs := filepath.Join(dir, "rootfs.ext4")
	if err := os.MkdirAll(kernelDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rootfs, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	key, err := sshkey.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = Config{
		StateDir: filepath.Join(dir, "state"),
		RunDir:   filepath.Join(dir, "run"),
		Lifetime: context.Background(),
		Image: func(_ context.Context, name string) (api.Image, error) {
			if name != "debian" && name != "sha256:img" {
				return api.Image{}, fmt.Errorf("image %q: %w", name, api.ErrNotFound)
			}
			return api.Image{Name: "debian", ID: "sha256:img", Rootfs: rootfs}, nil
		},
		Kernel: func(_ context.Context, name string) (api.Kernel, error) {
			return api.Kernel{Name: "6.1", ID: "sha256:k", Dir: kernelDir}, nil
		},
		Driver:      f.drv,
		Agent:       agentBin,
		BootTimeout: 3 * time.Second,
		Defaults:    Defaults{Image: "debian", Kernel: "default", VCPU: 1, MemoryMiB: 256, DiskSize: 64 << 20, Network: api.NetworkNone},
		SSH: SSHConfig{Key: key.PublicKey(), IdentityFile: filepath.Join(dir, "id"),
			KnownHostsFile: filepath.Join(dir, "known_hosts")},
	}
	for _, c := range change {
		c(&f.cfg)
	}
	if b, ok := f.cfg.Bridge.(*fakeBridge); ok {
		f.bridge = b
	}
	f.open()
	return f
}

// open starts a service (again, as a restarted daemon) on the store.
func (f *fixture) open() {
	f.t.Helper()
	st, err := store.Open(context.Background(), f.db)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { st.Close() })
	f.st = st
	cfg := f.cfg
	cfg.Store = st
	cfg.Log = slog.New(slog.DiscardHandler)
	f.svc = New(cfg)
}

// create runs a whole create, as the daemon's vm.create operation does.
func (f *fixture) create(p api.VMCreateParams) (api.VM, error) {
	f.t.Helper()
	c, err := f.svc.Create(context.Background(), p)
	if err != nil {
		return api.VM{}, err
	}
	return f.svc.Build(context.Background(), func(string) {}, c)
}

func (f *fixture) mustCreate(name string) api.VM {
	f.t.Helper()
	v, err := f.create(api.VMCreateParams{Name: name})
	if err != nil {
		f.t.Fatalf("create %s: %v", name, err)
	}
	return v
}

func (f *fixture) show(name string) api.VM {
	f.t.Helper()
	v, err := f.svc.Show(context.Background(), api.VMRefParams{Name: name})
	if err != nil {
		f.t.Fatalf("show %s: %v", name, err)
	}
	return v
}

// waitState waits for the record to say state.
func (f *fixture) waitState(name, state string) api.VM {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v := f.show(name)
		if v.State == state {
			return v
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("vm %s is %s (%s), want %s", name, v.State, v.Reason, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// waitGone waits for a stand-in VMM to have exited (and been reaped).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the VMM (pid %d) still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (f *fixture) exec(name string, args ...string) (string, int, error) {
	var out strings.Builder
	r, err := f.svc.Exec(context.Background(), api.VMExecParams{Name: name, Args: args}, func(ev api.VMExecEvent) error {
		out.Write(ev.Data)
		return nil
	})
	return out.String(), r.ExitCode, err
}

// dropLink breaks the VM's agent link and waits until the service sees
// it broken: its next call dials again, meeting the guest's fault.
func (f *fixture) dropLink(id string, g *vmmtest.Guest) {
	f.svc.mu.Lock()
	l := f.svc.live[id]
	f.svc.mu.Unlock()
	l.mu.Lock()
	old := l.client
	l.mu.Unlock()
	g.DropLinks()
	<-old.Done()
}

func knownHosts(t *testing.T, f *fixture) string {
	t.Helper()
	b, err := os.ReadFile(f.cfg.SSH.KnownHostsFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// fakeBridge stands in for hostnet: it records what the service asks.
type fakeBridge struct {
	prefix netip.Prefix

	mu       sync.Mutex
	attaches map[string]string
	synced   [][]string
	fail     error // SetPolicy's answer
}

func (b *fakeBridge) Prefix() netip.Prefix { return b.prefix }
func (b *fakeBridge) Gateway() netip.Addr  { return b.prefix.Addr().Next() }
func (b *fakeBridge) Range() (netip.Addr, netip.Addr) {
	return b.Gateway().Next(), netip.MustParseAddr("10.77.0.6")
}

func policyString(p hostnet.Policy) string {
	return fmt.Sprintf("nat=%v allow=%v isolate=%v", p.NAT, p.Allow.Strings(), p.Isolate)
}

func (b *fakeBridge) Attach(a hostnet.Attachment) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.attaches == nil {
		b.attaches = map[string]string{}
	}
	b.attaches[a.ID] = fmt.Sprintf("%s %s %s", a.ID, a.Addr, policyString(a.Policy))
	return "tap-" + a.ID[:8], nil
}

func (b *fakeBridge) SetPolicy(a hostnet.Attachment) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	b.attaches[a.ID] = fmt.Sprintf("%s %s %s", a.ID, a.Addr, policyString(a.Policy))
	return nil
}

// policy is what the firewall holds for the VM id; "" when not attached.
func (b *fakeBridge) policy(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, p, _ := strings.Cut(b.attaches[id], " ")
	_, p, _ = strings.Cut(p, " ")
	return p
}

func (b *fakeBridge) Detach(vmID string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.attaches, vmID)
	return nil
}

func (b *fakeBridge) Sync(running []hostnet.Attachment) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for _, a := range running {
		ids = append(ids, a.ID)
	}
	b.synced = append(b.synced, ids)
	return nil, nil
}

func (b *fakeBridge) attached() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := slices.Collect(func(yield func(string) bool) {
		for _, v := range b.attaches {
			if !yield(v) {
				return
			}
		}
	})
	slices.Sort(out)
	return out
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
			g := f.drv.Guest(f.svc.runDir(v.ID))
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

// TestHostKeyInjection: what a guest reports as its SSH host key reaches
// known_hosts only as one key the host re-encoded: a second line naming
// a certificate authority for every host, options or a comment never do.
func TestHostKeyInjection(t *testing.T) {
	f := newFixture(t)
	v := f.mustCreate("web")
	g := f.drv.Guest(f.svc.runDir(v.ID))
	good := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(g.HostKey)))
	before := knownHosts(t, f)
	for _, tc := range []struct {
		name, key string
		ok        bool
	}{
		{"a second line: @cert-authority for every host", good + "\n@cert-authority * " + good + "\n", false},
		{"a second key", good + "\n" + good, false},
		{"garbage", "not a key\n*.example.com " + good, false},
		{"a comment and options", `command="rm -rf ~" ` + good + " evil@comment", true},
		{"20 KiB", strings.Repeat("A", 20<<10), false},
	} {
		g.ReportHostKey(tc.key)
		_, err := f.svc.SSH(context.Background(), api.VMRefParams{Name: "web"})
		kh := knownHosts(t, f)
		if strings.Contains(kh, "@cert-authority") || strings.Contains(kh, "evil") || strings.Contains(kh, "command=") || strings.Count(kh, "\n") != strings.Count(before, "\n") {
			t.Fatalf("%s: known_hosts became\n%s", tc.name, kh)
		}
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, api.ErrGuestRefused)) {
			t.Fatalf("%s: ssh = %v", tc.name, err)
		}
		if tc.ok && !strings.Contains(kh, "web.vm "+good+"\n") {
			t.Fatalf("%s: known_hosts lacks the key:\n%s", tc.name, kh)
		}
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
	g := f.drv.Guest(f.svc.runDir(evil.ID))
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

// TestSuspendResume: a suspended VM has no VMM and a saved state on
// disk, survives a daemon restart, and comes back by resume, exec, ssh or
// start with the same guest; stop discards the state, delete removes it.
func TestSuspendResume(t *testing.T) {
	var mu sync.Mutex
	var told []string
	f := newFixture(t, func(c *Config) {
		c.Event = func(e api.Event) {
			mu.Lock()
			told = append(told, e.Type)
			mu.Unlock()
		}
	})
	ctx := context.Background()
	v := f.mustCreate("web")
	key := f.drv.Guest(f.svc.runDir(v.ID)).HostKey
	// Its VMM's sockets (QEMU's control socket among them) are the owner's alone.
	if fi, err := os.Stat(f.svc.runDir(v.ID)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the VM's runtime directory: %v, %v", fi.Mode().Perm(), err)
	}
	if _, err := f.svc.Resume(ctx, api.VMRefParams{Name: "web"}); err != nil {
		t.Fatalf("resume of a running VM: %v", err)
	}
	suspend := func() api.VM {
		t.Helper()
		s, err := f.svc.Suspend(ctx, api.VMRefParams{Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		if s.State != api.VMSuspended || s.PID != 0 || s.StateBytes == 0 || !strings.Contains(s.Reason, "banger vm resume") {
			t.Fatalf("suspended = %+v", s)
		}
		return s
	}
	suspend()
	waitGone(t, v.PID)
	if again, err := f.svc.Suspend(ctx, api.VMRefParams{Name: "web"}); err != nil || again.State != api.VMSuspended {
		t.Fatalf("a second suspend = %+v, %v", again, err)
	}

	// The daemon goes and comes back: still suspended, its state kept.
	f.st.Close()
	f.open()
	if err := f.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if s := f.show("web"); s.State != api.VMSuspended || s.StateBytes == 0 {
		t.Fatalf("after a restart = %+v", s)
	}
	// exec resumes it: the same guest, its state used once.
	if out, code, err := f.exec("web", "true"); err != nil || code != 0 {
		t.Fatalf("exec of a suspended VM = %q, %d, %v", out, code, err)
	}
	r := f.show("web")
	if r.State != api.VMRunning || r.PID == 0 || f.drv.Restores() != 1 {
		t.Fatalf("after exec = %+v, %d restores", r, f.drv.Restores())
	}
	if _, err := os.Stat(f.svc.suspendDir(r.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the used state is still there: %v", err)
	}
	if g := f.drv.Guest(f.svc.runDir(r.ID)); !bytes.Equal(g.HostKey.Marshal(), key.Marshal()) {
		t.Fatal("the resumed guest is another one")
	}
	// start and ssh resume too.
	suspend()
	if s, err := f.svc.Start(ctx, api.VMRefParams{Name: "web"}); err != nil || s.State != api.VMRunning {
		t.Fatalf("start of a suspended VM = %+v, %v", s, err)
	}
	suspend()
	if _, err := f.svc.SSH(ctx, api.VMRefParams{Name: "web"}); err != nil || f.show("web").State != api.VMRunning {
		t.Fatalf("ssh of a suspended VM: %v", err)
	}
	// stop discards the saved memory; start boots afresh.
	suspend()
	s, err := f.svc.Stop(ctx, api.VMStopParams{Name: "web"})
	if err != nil || s.State != api.VMStopped || !strings.Contains(s.Reason, "discarded") {
		t.Fatalf("stop of a suspended VM = %+v, %v", s, err)
	}
	if _, err := os.Stat(f.svc.suspendDir(s.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a discarded state is still there: %v", err)
	}
	if _, err := f.svc.Suspend(ctx, api.VMRefParams{Name: "web"}); !errors.Is(err, api.ErrNotRunning) {
		t.Fatalf("suspend of a stopped VM = %v", err)
	}
	if _, err := f.svc.Resume(ctx, api.VMRefParams{Name: "web"}); !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "banger vm start web") {
		t.Fatalf("resume of a stopped VM = %v", err)
	}
	restores := f.drv.Restores()
	if _, err := f.svc.Start(ctx, api.VMRefParams{Name: "web"}); err != nil || f.drv.Restores() != restores {
		t.Fatalf("start after a discard: %v, %d restores", err, f.drv.Restores())
	}
	// A suspended VM is deleted with its state.
	suspend()
	if _, err := f.svc.Delete(ctx, api.VMDeleteParams{Name: "web"}); err != nil {
		t.Fatalf("delete of a suspended VM: %v", err)
	}
	if _, err := os.Stat(f.svc.stateDir(s.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("its directory after delete: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{api.EventVMCreated, api.EventVMStarted, api.EventVMSuspended, api.EventVMResumed, api.EventVMSuspended, api.EventVMResumed,
		api.EventVMSuspended, api.EventVMResumed, api.EventVMSuspended, api.EventVMStopped, api.EventVMStarted, api.EventVMSuspended, api.EventVMDeleted}
	if !slices.Equal(told, want) {
		t.Fatalf("events\n%q\nwant\n%q", told, want)
	}
}

// TestAutoSuspend: the idle sweep's suspend records its reason, leaves a
// VM a lifecycle verb holds alone, and vm set takes the idle action.
func TestAutoSuspend(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.mustCreate("web")
	for _, c := range []struct {
		set, want string
		bad       bool
	}{{"suspend", "suspend", false}, {"hibernate", "", true}, {"default", "", false}, {"stop", "stop", false}} {
		v, err := f.svc.Set(ctx, api.VMSetParams{Name: "web", IdleAction: c.set})
		if c.bad {
			if !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "stop, suspend or default") {
				t.Fatalf("--idle-action %s = %v", c.set, err)
			}
			continue
		}
		if err != nil || v.IdleAction != c.want {
			t.Fatalf("--idle-action %s = %+v, %v", c.set, v, err)
		}
	}
	unlock := f.svc.lock("web")
	if done, err := f.svc.AutoSuspend(ctx, "web", "idle"); done || err != nil {
		t.Fatalf("auto-suspend of a held VM = %v, %v", done, err)
	}
	unlock()
	reason := "suspended automatically: idle for 2m0s (auto-stop after 1m0s)"
	if done, err := f.svc.AutoSuspend(ctx, "web", reason); !done || err != nil {
		t.Fatalf("auto-suspend = %v, %v", done, err)
	}
	if v := f.show("web"); v.State != api.VMSuspended || v.Reason != reason {
		t.Fatalf("after auto-suspend = %+v", v)
	}
	if done, err := f.svc.AutoSuspend(ctx, "web", reason); done || err != nil {
		t.Fatalf("auto-suspend of a suspended VM = %v, %v", done, err)
	}
}

// TestResumeCutShort: a daemon that dies mid-resume has recorded the
// restored VMM's pid; the next one ends that VMM, and the VM stays
// suspended with its state, to be resumed again.
func TestResumeCutShort(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v := f.mustCreate("web")
	if _, err := f.svc.Suspend(ctx, api.VMRefParams{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	// The VMM a resume started, recorded, before the daemon died.
	in, err := f.drv.Start(ctx, vmm.Spec{Dir: f.svc.runDir(v.ID)})
	if err != nil {
		t.Fatal(err)
	}
	id := in.ID()
	if err := f.st.Update(ctx, func(tx *store.Tx) error {
		rec, err := tx.VM(ctx, "web")
		if err != nil {
			return err
		}
		rec.PID, rec.PIDStart = id.PID, id.StartTime
		return tx.PutVM(ctx, rec)
	}); err != nil {
		t.Fatal(err)
	}
	f.st.Close()
	f.open()
	if err := f.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	waitGone(t, id.PID)
	s := f.show("web")
	if s.State != api.VMSuspended || s.PID != 0 || s.StateBytes == 0 || !strings.Contains(s.Reason, "cut short") {
		t.Fatalf("after the restart = %+v", s)
	}
	if _, code, err := f.exec("web", "true"); err != nil || code != 0 {
		t.Fatalf("exec after a cut-short resume: %d, %v", code, err)
	}
}
