package vm

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
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
				g.DropLinks() // the stop dials again, and gets no answer
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
	// A VMM that dies on its own is recorded so.
	v, _ = f.svc.Start(ctx, api.VMRefParams{Name: "web"})
	_ = syscall.Kill(v.PID, syscall.SIGKILL)
	v = f.waitState("web", api.VMStopped)
	if !strings.Contains(v.Reason, "stopped on its own") {
		t.Fatalf("reason %q", v.Reason)
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
// running, records those whose VMM died while it was down, fails the
// creates it did not finish, and removes directories nobody owns.
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
	if v := f.show("half"); v.State != api.VMFailed || !strings.Contains(v.Reason, "create was interrupted") {
		t.Fatalf("half = %+v", v)
	}
	if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a directory no VM owns survived: %v", err)
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
	want := []string{a.ID + " 10.77.0.2 false", b.ID + " 10.77.0.3 true"}
	slices.Sort(want)
	if got := fb.attached(); !slices.Equal(got, want) {
		t.Fatalf("attached %v", got)
	}
	if _, err := f.svc.Stop(ctx, api.VMStopParams{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if got := fb.attached(); !slices.Equal(got, []string{b.ID + " 10.77.0.3 true"}) {
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
	// A restart sweeps what no running VM owns.
	f.st.Close()
	f.open()
	if err := f.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if len(fb.swept) != 1 || len(fb.swept[0]) != 5 {
		t.Fatalf("swept keeping %v", fb.swept)
	}
}
