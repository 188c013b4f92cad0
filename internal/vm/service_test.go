package vm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

// The front's verbs end to end: create, the lifecycle, events, set, prune.

func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v := f.mustCreate("web")
	if v.State != api.VMRunning || v.PID == 0 || !alive(v.PID) || v.VMM != "vmmtest" || v.ImageID != "sha256:img" || v.StartedAt == nil {
		t.Fatalf("created VM = %+v", v)
	}
	if fi, err := os.Stat(f.svc.recs.work(v.ID)); err != nil || fi.Size() != 64<<20 {
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
	for _, d := range []string{f.svc.recs.run(v.ID), f.svc.recs.state(v.ID)} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after delete: %v", d, err)
		}
	}
	if strings.Contains(knownHosts(t, f), "web.vm") {
		t.Fatalf("known_hosts keeps a deleted VM:\n%s", knownHosts(t, f))
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
			if g := f.drv.Guest(f.svc.recs.run(v.ID)); g != nil {
				waitGone(t, g.PID())
			}
			// A failed VM starts again once what failed is fixed.
			f.drv.SetFault(vmmtest.Healthy)
			f.cfg.Images = imageFunc(func(context.Context, string) (api.Image, error) {
				return api.Image{Name: "debian", ID: "sha256:img", Rootfs: filepath.Join(f.dir, "rootfs.ext4")}, nil
			})
			f.svc.cfg.Images = f.cfg.Images
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
	g := f.drv.Guest(f.svc.recs.run(c.rec.ID))
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
	if fi, err := os.Stat(f.svc.recs.work(v.ID)); err != nil || fi.Size() != 128<<20 {
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
	unlock := f.svc.recs.lock("up")
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

// TestTrackedVerbs: long verbs show as operations with their phases;
// while one runs on a VM another is refused with in_use, naming it,
// and an exec (which resumes, untracked) is not.
func TestTrackedVerbs(t *testing.T) {
	type op struct{ kind, target string }
	var mu sync.Mutex
	var ops []op
	var phases []string
	hold, held := make(chan struct{}), make(chan struct{})
	f := newFixture(t, func(c *Config) {
		c.Track = func(kind, target string) (context.Context, func(string), func(error)) {
			mu.Lock()
			ops = append(ops, op{kind, target})
			mu.Unlock()
			return context.Background(), func(p string) {
				mu.Lock()
				phases = append(phases, kind+": "+p)
				mu.Unlock()
				if kind == api.OpKindVMSnapshot && p == "saving" {
					close(held)
					<-hold
				}
			}, func(error) {}
		}
	})
	ctx := context.Background()
	f.mustCreate("web")
	errc := make(chan error, 1)
	go func() {
		_, err := f.svc.SnapshotCreate(ctx, api.VMSnapshotParams{Name: "web", Tag: "one"})
		errc <- err
	}()
	<-held
	_, err := f.svc.Suspend(ctx, api.VMRefParams{Name: "web"})
	if !errors.Is(err, api.ErrInUse) || !strings.Contains(err.Error(), "vm.snapshot.create web (saving)") {
		t.Fatalf("a suspend during a checkpoint = %v", err)
	}
	if _, err := f.svc.Fork(ctx, api.VMForkParams{Name: "web"}); !errors.Is(err, api.ErrInUse) {
		t.Fatalf("a fork during a checkpoint = %v", err)
	}
	close(hold)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Suspend(ctx, api.VMRefParams{Name: "web"}); err != nil {
		t.Fatalf("a suspend once the checkpoint is done: %v", err)
	}
	if _, _, err := f.exec("web", "true"); err != nil {
		t.Fatalf("exec of the suspended VM: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []op{{api.OpKindVMSnapshot, "web"}, {api.OpKindVMSuspend, "web"}}
	if !slices.Equal(ops, want) {
		t.Fatalf("operations %v, want %v", ops, want)
	}
	if !slices.Contains(phases, api.OpKindVMSuspend+": saving") {
		t.Fatalf("phases %v", phases)
	}
}
