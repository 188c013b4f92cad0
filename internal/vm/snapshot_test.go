package vm

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

// record is a VM's record in the store.
func (f *fixture) record(name string) store.VM {
	f.t.Helper()
	rec, err := f.svc.find(context.Background(), name)
	if err != nil {
		f.t.Fatal(err)
	}
	return rec
}

func sshAuthorized(k ssh.PublicKey) []byte { return ssh.MarshalAuthorizedKey(k) }

func withTemplates(c *Config) { c.TemplateDir = filepath.Join(filepath.Dir(c.StateDir), "templates") }

// TestWarmCreate: the first create of a shape makes its template, every
// create of it then restores it, each guest given its own identity (its
// name, its ID as machine-id, fresh entropy, a new host key, which
// known_hosts records); another shape gets a template of its own, --cold
// boots, and a template that no longer loads is made again.
func TestWarmCreate(t *testing.T) {
	f := newFixture(t, withTemplates, func(c *Config) { c.Defaults.Network = api.NetworkUser })
	ctx := context.Background()
	// The fake driver counts a restore as a start too.
	boots := func() int { return f.drv.Starts() - f.drv.Restores() }
	a := f.mustCreate("a")
	if f.drv.Restores() != 1 || boots() != 1 {
		t.Fatalf("first create: %d restores, %d boots; want the template booted and a restore", f.drv.Restores(), boots())
	}
	b := f.mustCreate("b")
	if f.drv.Restores() != 2 || boots() != 1 {
		t.Fatalf("second create: %d restores, %d boots; want a restore alone", f.drv.Restores(), boots())
	}
	ids := map[string]proto.IdentityParams{}
	for _, v := range []api.VM{a, b} {
		g := f.drv.Guest(f.svc.runDir(v.ID))
		got := g.Identities()
		if len(got) != 1 {
			t.Fatalf("%s was given %d identities", v.Name, len(got))
		}
		p := got[0]
		bp, err := proto.ParseBootParams(p.Boot)
		if err != nil {
			t.Fatal(err)
		}
		if bp.Hostname != v.Name || p.MachineID != v.ID || !p.NewHostKey || len(p.Entropy) < 32 || p.UnixNano == 0 ||
			bp.Net == nil || len(bp.SSHKeys) != 1 {
			t.Fatalf("%s's identity: %+v (%+v)", v.Name, p, bp)
		}
		ids[v.Name] = p
		line, err := hostKeyLine(string(sshAuthorized(g.HostKey)))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(knownHosts(t, f), line) {
			t.Fatalf("known_hosts lacks %s's new host key", v.Name)
		}
	}
	if bytes.Equal(ids["a"].Entropy, ids["b"].Entropy) {
		t.Fatal("two VMs were given the same entropy")
	}
	if l, err := f.svc.Templates(ctx); err != nil || len(l.Templates) != 1 || l.Templates[0].Image != "debian" || l.Templates[0].Kernel != "6.1" ||
		l.Templates[0].NIC != "user" || l.Templates[0].StateBytes == 0 || l.Templates[0].MemoryMiB != 256 {
		t.Fatalf("templates = %+v, %v", l, err)
	}
	// Another size, another template.
	if _, err := f.create(api.VMCreateParams{Name: "big", MemoryMiB: 512}); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(f.cfg.TemplateDir); len(entries) != 2 || boots() != 2 {
		t.Fatalf("templates after another shape: %v, %d boots", entries, boots())
	}
	// --cold boots.
	restores := f.drv.Restores()
	if _, err := f.create(api.VMCreateParams{Name: "cold", Cold: true}); err != nil || f.drv.Restores() != restores {
		t.Fatalf("a cold create: %v, %d restores", err, f.drv.Restores())
	}
	// A template its VMM refuses is made again.
	k := keyOf(f.record("a"))
	st := filepath.Join(f.svc.templateDir(k), templateState, vmm.StateFile)
	b2, err := os.ReadFile(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st, bytes.Replace(b2, []byte(`"memory_mib": 256`), []byte(`"memory_mib": 999`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	before := boots()
	if _, err := f.create(api.VMCreateParams{Name: "again"}); err != nil {
		t.Fatal(err)
	}
	if boots() != before+1 {
		t.Fatalf("a stale template was not made again: %d boots", boots())
	}
	// Its kernel gone, or its image, its templates go.
	image, kernel := f.svc.cfg.Image, f.svc.cfg.Kernel
	f.svc.cfg.Kernel = func(context.Context, string) (api.Kernel, error) { return api.Kernel{}, api.ErrNotFound }
	f.svc.DropTemplates(ctx)
	if entries, _ := os.ReadDir(f.cfg.TemplateDir); len(entries) != 0 {
		t.Fatalf("templates of a deleted kernel: %v", entries)
	}
	f.svc.cfg.Kernel = kernel
	if _, err := f.svc.Warm(ctx, api.ImageWarmParams{Image: "debian"}); err != nil {
		t.Fatal(err)
	}
	f.svc.cfg.Image = func(context.Context, string) (api.Image, error) { return api.Image{}, api.ErrNotFound }
	f.svc.DropTemplates(ctx)
	if entries, _ := os.ReadDir(f.cfg.TemplateDir); len(entries) != 0 {
		t.Fatalf("templates of a deleted image: %v", entries)
	}
	f.svc.cfg.Image = image
}

// TestTemplateBuildCutShort: a daemon that died while making a template
// left its VMM and half a template; the next one ends and removes both.
func TestTemplateBuildCutShort(t *testing.T) {
	f := newFixture(t, withTemplates)
	f.mustCreate("a")
	k := keyOf(f.record("a"))
	dir := f.svc.templateDir(k) + building
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	runDir := f.svc.templateRunDir(k)
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	in, err := f.drv.Start(context.Background(), vmm.Spec{Dir: runDir})
	if err != nil {
		t.Fatal(err)
	}
	id := in.ID()
	if err := os.WriteFile(filepath.Join(dir, templatePID), []byte(strconv.Itoa(id.PID)+" "+strconv.FormatUint(id.StartTime, 10)), 0o600); err != nil {
		t.Fatal(err)
	}
	f.st.Close()
	f.open()
	if err := f.svc.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitGone(t, id.PID)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a template build cut short is left: %v", err)
	}
}

// TestFork: copies of a running VM, each its own (name, ID, identity,
// work disk), the original running on; all or none; names checked.
func TestFork(t *testing.T) {
	f := newFixture(t, withTemplates)
	ctx := context.Background()
	o := f.mustCreate("orig")
	if err := os.WriteFile(f.svc.workDisk(o.ID), []byte("the original's disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.VMs) != 2 || res.VMs[0].Name != "orig-fork-1" || res.VMs[1].Name != "orig-fork-2" {
		t.Fatalf("fork = %+v", res)
	}
	for _, v := range res.VMs {
		if v.State != api.VMRunning || v.ID == o.ID {
			t.Fatalf("copy %+v", v)
		}
		if b, _ := os.ReadFile(f.svc.workDisk(v.ID)); string(b) != "the original's disk" {
			t.Fatalf("%s's disk = %q", v.Name, b)
		}
		ids := f.drv.Guest(f.svc.runDir(v.ID)).Identities()
		if len(ids) != 1 || ids[0].MachineID != v.ID || !strings.Contains(ids[0].Boot, "banger.hostname="+v.Name) {
			t.Fatalf("%s's identity: %+v", v.Name, ids)
		}
	}
	if f.show("orig").State != api.VMRunning {
		t.Fatal("the original stopped")
	}
	// Numbers go on; a taken name refuses the whole fork.
	res, err = f.svc.Fork(ctx, api.VMForkParams{Name: "orig"})
	if err != nil || res.VMs[0].Name != "orig-fork-3" {
		t.Fatalf("third = %+v, %v", res, err)
	}
	before, _ := f.svc.List(ctx)
	if _, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig", Count: 2, Prefix: "try"}); err != nil {
		t.Fatalf("prefix: %v", err)
	}
	if _, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig", Prefix: "orig-fork-1"}); !errors.Is(err, api.ErrAlreadyExists) {
		t.Fatalf("fork onto a taken name = %v", err)
	}
	for _, bad := range []api.VMForkParams{{Name: "orig", Count: 17}, {Name: "orig", Count: -1}, {Name: "orig", Prefix: "Bad_Name"}} {
		if _, err := f.svc.Fork(ctx, bad); !errors.Is(err, api.ErrInvalidArgument) {
			t.Fatalf("fork %+v = %v", bad, err)
		}
	}
	after, _ := f.svc.List(ctx)
	if len(after.VMs) != len(before.VMs)+2 {
		t.Fatalf("refused forks left VMs: %d, then %d", len(before.VMs), len(after.VMs))
	}
	// A copy that fails takes the others with it.
	f.drv.SetFault(vmmtest.Silent)
	if _, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig", Count: 2, Prefix: "doomed"}); err == nil {
		t.Fatal("a fork whose copies never answer succeeded")
	}
	f.drv.SetFault(vmmtest.Healthy)
	if _, err := f.svc.Show(ctx, api.VMRefParams{Name: "doomed-1"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a failed fork's copy is left: %v", err)
	}
	if entries, _ := filepath.Glob(filepath.Join(f.svc.stateDir(o.ID), forkPrefix+"*")); len(entries) != 0 {
		t.Fatalf("a fork's scratch is left: %v", entries)
	}
	// Only a running VM forks.
	if _, err := f.svc.Stop(ctx, api.VMStopParams{Name: "orig"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig"}); !errors.Is(err, api.ErrNotRunning) {
		t.Fatalf("fork of a stopped VM = %v", err)
	}
}

// TestCheckpoints: create, list, restore (memory and disk back; the
// checkpoint kept), refused for another shape with nothing undone,
// delete; tags checked.
func TestCheckpoints(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v := f.mustCreate("cp")
	disk := f.svc.workDisk(v.ID)
	if err := os.WriteFile(disk, []byte("before"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := f.svc.SnapshotCreate(ctx, api.VMSnapshotParams{Name: "cp", Tag: "clean"})
	if err != nil || c.Tag != "clean" || c.StateBytes == 0 {
		t.Fatalf("create = %+v, %v", c, err)
	}
	if _, err := f.svc.SnapshotCreate(ctx, api.VMSnapshotParams{Name: "cp", Tag: "clean"}); !errors.Is(err, api.ErrAlreadyExists) {
		t.Fatalf("a second clean = %v", err)
	}
	for _, tag := range []string{"../../etc", "a/b", "UP", ".hidden"} {
		if _, err := f.svc.SnapshotCreate(ctx, api.VMSnapshotParams{Name: "cp", Tag: tag}); !errors.Is(err, api.ErrInvalidArgument) {
			t.Fatalf("tag %q = %v", tag, err)
		}
	}
	if _, err := f.svc.SnapshotCreate(ctx, api.VMSnapshotParams{Name: "cp"}); err != nil {
		t.Fatalf("a tag by time: %v", err)
	}
	l, err := f.svc.SnapshotList(ctx, api.VMRefParams{Name: "cp"})
	if err != nil || len(l.Snapshots) != 2 || l.Snapshots[0].Tag != "clean" {
		t.Fatalf("list = %+v, %v", l, err)
	}
	if err := os.WriteFile(disk, []byte("after"), 0o600); err != nil {
		t.Fatal(err)
	}
	pid := f.show("cp").PID
	r, err := f.svc.SnapshotRestore(ctx, api.VMSnapshotParams{Name: "cp", Tag: "clean"})
	if err != nil || r.State != api.VMRunning || r.PID == pid {
		t.Fatalf("restore = %+v, %v", r, err)
	}
	if b, _ := os.ReadFile(disk); string(b) != "before" {
		t.Fatalf("the disk after a rollback: %q", b)
	}
	waitGone(t, pid)
	if ids := f.drv.Guest(f.svc.runDir(v.ID)).Identities(); len(ids) != 1 || ids[0].NewHostKey {
		t.Fatalf("a rolled back VM's identity: %+v", ids)
	}
	if _, err := f.svc.SnapshotRestore(ctx, api.VMSnapshotParams{Name: "cp", Tag: "nosuch"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("restore of no checkpoint = %v", err)
	}
	// Another shape: refused before anything is undone.
	if _, err := f.svc.Stop(ctx, api.VMStopParams{Name: "cp"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Set(ctx, api.VMSetParams{Name: "cp", MemoryMiB: 512}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(disk, []byte("its own"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.SnapshotRestore(ctx, api.VMSnapshotParams{Name: "cp", Tag: "clean"}); !errors.Is(err, vmm.ErrStateMismatch) {
		t.Fatalf("restore into another shape = %v", err)
	}
	if b, _ := os.ReadFile(disk); string(b) != "its own" || f.show("cp").State != api.VMStopped {
		t.Fatalf("a refused rollback changed the VM: disk %q, %+v", b, f.show("cp"))
	}
	if d, err := f.svc.SnapshotDelete(ctx, api.VMSnapshotParams{Name: "cp", Tag: "clean"}); err != nil || d.Tag != "clean" {
		t.Fatalf("delete = %+v, %v", d, err)
	}
	if l, _ := f.svc.SnapshotList(ctx, api.VMRefParams{Name: "cp"}); len(l.Snapshots) != 1 {
		t.Fatalf("after delete: %+v", l)
	}
	// A checkpoint cut short is swept at start.
	half := f.svc.checkpointDir(v.ID, "half") + partial
	if err := os.MkdirAll(half, 0o700); err != nil {
		t.Fatal(err)
	}
	f.st.Close()
	f.open()
	if err := f.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(half); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a checkpoint cut short is left: %v", err)
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

// TestHostileIdentityAnswer: a guest (its memory carried into a fork's
// copies) answers its new identity with a host key line crafted to
// widen known_hosts; the fork is refused as the guest's doing, no copy
// is left, and known_hosts is as it was.
func TestHostileIdentityAnswer(t *testing.T) {
	f := newFixture(t)
	v := f.mustCreate("web")
	g := f.drv.Guest(f.svc.runDir(v.ID))
	good := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(g.HostKey)))
	before := knownHosts(t, f)
	g.ReportHostKey(good + "\n@cert-authority * " + good + "\n")
	_, err := f.svc.Fork(context.Background(), api.VMForkParams{Name: "web", Count: 2})
	if !errors.Is(err, api.ErrGuestRefused) {
		t.Fatalf("fork of a hostile guest = %v", err)
	}
	if kh := knownHosts(t, f); kh != before {
		t.Fatalf("known_hosts became\n%s", kh)
	}
	if l, _ := f.svc.List(context.Background()); len(l.VMs) != 1 {
		t.Fatalf("a refused fork left %d VMs", len(l.VMs))
	}
}

// FuzzHostKeyLine: whatever a guest reports as its host key, what
// reaches known_hosts is one line of one key, or nothing.
func FuzzHostKeyLine(f *testing.F) {
	f.Add("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl banger")
	f.Add("@cert-authority * ssh-ed25519 AAAA\nx")
	f.Fuzz(func(t *testing.T, reported string) {
		line, err := hostKeyLine(reported)
		if err != nil {
			return
		}
		if strings.ContainsAny(line, "\r\n@") || len(strings.Fields(line)) != 2 {
			t.Fatalf("%q became %q", reported, line)
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
			t.Fatalf("%q became %q, which is no key: %v", reported, line, err)
		}
	})
}

// TestTemplateFailureRemembered: a template that cannot be made leaves
// the create to boot, and the next creates of that shape boot too for a
// while, rather than each paying for another attempt.
func TestTemplateFailureRemembered(t *testing.T) {
	f := newFixture(t, withTemplates)
	// A file where the templates go: no template can be made.
	if err := os.WriteFile(f.cfg.TemplateDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if v := f.mustCreate("a"); v.State != api.VMRunning || f.drv.Restores() != 0 {
		t.Fatalf("a create whose template failed: %+v, %d restores", v, f.drv.Restores())
	}
	if err := os.Remove(f.cfg.TemplateDir); err != nil {
		t.Fatal(err)
	}
	if v := f.mustCreate("b"); v.State != api.VMRunning || f.drv.Restores() != 0 {
		t.Fatalf("the next create tried the template again: %d restores", f.drv.Restores())
	}
	if _, err := os.Stat(f.cfg.TemplateDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a template was made: %v", err)
	}
	// image warm tries again, and the next create starts from it.
	if _, err := f.svc.Warm(context.Background(), api.ImageWarmParams{Image: "debian"}); err != nil {
		t.Fatalf("image warm after a failure: %v", err)
	}
	f.mustCreate("c")
	if f.drv.Restores() != 1 {
		t.Fatalf("after image warm: %d restores", f.drv.Restores())
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
		if n := len(f.drv.Guest(f.svc.runDir(v.ID)).Spec.Disks); n != 2 {
			t.Fatalf("%s has %d disks", name, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if warned != 1 {
		t.Fatalf("warned %d times", warned)
	}
}

// countingHandler passes every record to fn.
type countingHandler struct{ fn func(slog.Record) }

func (h countingHandler) Enabled(context.Context, slog.Level) bool      { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error { h.fn(r); return nil }
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h countingHandler) WithGroup(string) slog.Handler                 { return h }
