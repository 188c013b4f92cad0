package vm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

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
	key := f.drv.Guest(f.svc.recs.run(v.ID)).HostKey
	// Its VMM's sockets (QEMU's control socket among them) are the owner's alone.
	if fi, err := os.Stat(f.svc.recs.run(v.ID)); err != nil || fi.Mode().Perm() != 0o700 {
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
	if _, err := os.Stat(f.svc.recs.suspended(r.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the used state is still there: %v", err)
	}
	if g := f.drv.Guest(f.svc.recs.run(r.ID)); !bytes.Equal(g.HostKey.Marshal(), key.Marshal()) {
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
	if _, err := os.Stat(f.svc.recs.suspended(s.ID)); !errors.Is(err, os.ErrNotExist) {
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
	if _, err := os.Stat(f.svc.recs.state(s.ID)); !errors.Is(err, os.ErrNotExist) {
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
	unlock := f.svc.recs.lock("web")
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
	in, err := f.drv.Start(ctx, vmm.Spec{Dir: f.svc.recs.run(v.ID)})
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

// TestFork: copies of a running VM, each its own (name, ID, identity,
// work disk), the original running on; all or none; names checked.
func TestFork(t *testing.T) {
	f := newFixture(t, withTemplates)
	ctx := context.Background()
	o := f.mustCreate("orig")
	if err := os.WriteFile(f.svc.recs.work(o.ID), []byte("the original's disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The state files a fork carries go to each copy (a workspace's).
	f.svc.cfg.ForkCarries = []string{"carried.json", "absent.json"}
	if err := os.WriteFile(filepath.Join(f.svc.recs.state(o.ID), "carried.json"), []byte(`{"host":"/src"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range res.VMs {
		if b, err := os.ReadFile(filepath.Join(f.svc.recs.state(v.ID), "carried.json")); err != nil || string(b) != `{"host":"/src"}` {
			t.Fatalf("%s did not inherit the carried state: %q, %v", v.Name, b, err)
		}
	}
	if len(res.VMs) != 2 || res.VMs[0].Name != "orig-fork-1" || res.VMs[1].Name != "orig-fork-2" {
		t.Fatalf("fork = %+v", res)
	}
	for _, v := range res.VMs {
		if v.State != api.VMRunning || v.ID == o.ID {
			t.Fatalf("copy %+v", v)
		}
		if b, _ := os.ReadFile(f.svc.recs.work(v.ID)); string(b) != "the original's disk" {
			t.Fatalf("%s's disk = %q", v.Name, b)
		}
		ids := f.drv.Guest(f.svc.recs.run(v.ID)).Identities()
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
	if entries, _ := filepath.Glob(filepath.Join(f.svc.recs.state(o.ID), forkPrefix+"*")); len(entries) != 0 {
		t.Fatalf("a fork's scratch is left: %v", entries)
	}
	// A partial fork keeps the copies that started and names the rest.
	f.drv.SetFaultWhere("banger.hostname=part-2", vmmtest.StartFails)
	res, err = f.svc.Fork(ctx, api.VMForkParams{Name: "orig", Count: 3, Prefix: "part", Partial: true})
	if err != nil || len(res.VMs) != 2 || len(res.Failed) != 1 || res.Failed[0].Name != "part-2" || !strings.Contains(res.Failed[0].Error, "exec format error") {
		t.Fatalf("partial fork = %+v, %v", res, err)
	}
	if _, err := f.svc.Show(ctx, api.VMRefParams{Name: "part-2"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("the failed copy is left: %v", err)
	}
	for _, name := range []string{"part-1", "part-3"} {
		if f.show(name).State != api.VMRunning {
			t.Fatalf("%s is not running", name)
		}
	}
	// Without partial, the same failure takes the others with it.
	f.drv.SetFaultWhere("banger.hostname=whole-2", vmmtest.StartFails)
	if _, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig", Count: 2, Prefix: "whole"}); err == nil {
		t.Fatal("a fork with a failed copy succeeded")
	}
	if _, err := f.svc.Show(ctx, api.VMRefParams{Name: "whole-1"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("an all-or-none fork left a copy: %v", err)
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
	disk := f.svc.recs.work(v.ID)
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
	if ids := f.drv.Guest(f.svc.recs.run(v.ID)).Identities(); len(ids) != 1 || ids[0].NewHostKey {
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
	half := f.svc.recs.checkpoint(v.ID, "half") + partial
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

// TestForkFromCheckpoint: copies start from a checkpoint, disk and shape
// as it was, whatever the original has become (here: changed and
// stopped); an unknown checkpoint is refused.
// checkpointed is a fixture with VM orig, checkpointed as "green" with
// "at the checkpoint" on its work disk.
func checkpointed(t *testing.T) (*fixture, api.VM) {
	t.Helper()
	f := newFixture(t, withTemplates)
	o := f.mustCreate("orig")
	if err := os.WriteFile(f.svc.recs.work(o.ID), []byte("at the checkpoint"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.SnapshotCreate(context.Background(), api.VMSnapshotParams{Name: "orig", Tag: "green"}); err != nil {
		t.Fatal(err)
	}
	return f, o
}

func TestForkFromCheckpoint(t *testing.T) {
	f, o := checkpointed(t)
	ctx := context.Background()
	if err := os.WriteFile(f.svc.recs.work(o.ID), []byte("since"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Stop(ctx, api.VMStopParams{Name: "orig"}); err != nil {
		t.Fatal(err)
	}
	res, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig", Checkpoint: "green", Prefix: "again"})
	if err != nil || len(res.VMs) != 1 || res.VMs[0].Name != "again" || res.VMs[0].State != api.VMRunning {
		t.Fatalf("fork from a checkpoint = %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(f.svc.recs.work(res.VMs[0].ID)); string(b) != "at the checkpoint" {
		t.Fatalf("the copy's disk = %q", b)
	}
	if f.show("orig").State != api.VMStopped {
		t.Fatal("the original was started")
	}
	if _, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig", Checkpoint: "nope"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("an unknown checkpoint = %v", err)
	}
	// The checkpoint is still whole: the original goes back to it.
	if _, err := f.svc.SnapshotRestore(ctx, api.VMSnapshotParams{Name: "orig", Tag: "green"}); err != nil {
		t.Fatalf("restoring after a fork from it: %v", err)
	}
}

// TestForkStopped: a stopped copy holds the checkpoint as its own, so it
// outlives the original, and copies start from it (the E2B snapshot).
func TestForkStopped(t *testing.T) {
	f, _ := checkpointed(t)
	ctx := context.Background()
	if _, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig", Stopped: true}); !errors.Is(err, api.ErrInvalidArgument) {
		t.Fatalf("--stopped without a checkpoint = %v", err)
	}
	res, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig", Checkpoint: "green", Prefix: "held", Stopped: true})
	if err != nil || len(res.VMs) != 1 || res.VMs[0].State != api.VMStopped {
		t.Fatalf("a stopped fork = %+v, %v", res, err)
	}
	if _, err := f.svc.Delete(ctx, api.VMDeleteParams{Name: "orig", Force: true}); err != nil {
		t.Fatal(err)
	}
	cps, err := f.svc.SnapshotList(ctx, api.VMRefParams{Name: "held"})
	if err != nil || len(cps.Snapshots) != 1 || cps.Snapshots[0].Tag != "green" {
		t.Fatalf("the held copy's checkpoints = %+v, %v", cps, err)
	}
	two, err := f.svc.Fork(ctx, api.VMForkParams{Name: "held", Checkpoint: "green", Prefix: "from-held", Count: 2})
	if err != nil || len(two.VMs) != 2 {
		t.Fatalf("forking the held copy = %+v, %v", two, err)
	}
	for _, v := range two.VMs {
		if b, _ := os.ReadFile(f.svc.recs.work(v.ID)); string(b) != "at the checkpoint" || v.State != api.VMRunning {
			t.Fatalf("copy %s: %s, disk %q", v.Name, v.State, b)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(f.svc.recs.state(res.VMs[0].ID), checkpointsDir)); len(entries) != 1 {
		t.Fatalf("the held copy's checkpoints dir has %d entries (a partial left?)", len(entries))
	}
}
