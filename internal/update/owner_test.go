package update

import (
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/bangerdev/banger/internal/roottest"
	"github.com/bangerdev/banger/internal/store"
)

// TestRootNeverWorksByPath plays the owner of an installed banger with a
// real second uid racing root: while root's update copies the store,
// checks it with a staged bangerd and puts the copy back (each step many
// times), the owner plants symlinks at every name those steps use in its
// state directory (the copy, the store's -wal and -shm, the copy's
// journal), on every inotify event, pointing at a root-owned file and at
// a path in a root-owned directory, both before root's step and, in
// rounds of its own, in place of what a step just made (so root's next
// step on it meets the link). Nothing outside the state directory
// changes: every step runs as the owner (Bangerd), who can touch only
// what the owner could; and the copies it made are the owner's. (Run as
// root, the same steps hand the root-owned file to the owner within a
// few runs: this test fails on the way update worked before.)
func TestRootNeverWorksByPath(t *testing.T) {
	roottest.Require(t, "to play the owner with a second uid racing root")
	owner, remove, err := roottest.AddUser("bgrace")
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	open := func(pattern string) string { // a root-owned directory others may traverse
		d, err := os.MkdirTemp("", pattern)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	bin := open("banger-race-bin-")
	bangerd := filepath.Join(bin, "bangerd")
	if out, err := exec.Command("go", "build", "-o", bangerd, "github.com/bangerdev/banger/cmd/bangerd").CombinedOutput(); err != nil {
		t.Fatalf("building bangerd: %v\n%s", err, out)
	}
	home := open("banger-race-home-")
	state := filepath.Join(home, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// freshStore makes the owner's store anew (the racer leaves the
	// owner's own state in any shape).
	freshStore := func() {
		entries, _ := os.ReadDir(state)
		for _, e := range entries {
			os.RemoveAll(filepath.Join(state, e.Name()))
		}
		st, err := store.Open(ctx, filepath.Join(state, "banger.db"))
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		entries, _ = os.ReadDir(state)
		for _, e := range append(entries, nil) {
			p := state
			if e != nil {
				p = filepath.Join(state, e.Name())
			}
			if err := os.Lchown(p, owner.UID, owner.GID); err != nil {
				t.Fatal(err)
			}
		}
	}
	freshStore()
	outside := open("banger-race-outside-")
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("root's own file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := roottest.Snapshot(t, outside)

	b := Bangerd{Owner: &Owner{UID: owner.UID, GID: owner.GID}, Env: []string{"BANGER_HOME=" + home}}
	backup := filepath.Join(state, "banger.db.before-9.9.9")
	names := "banger.db.before-9.9.9,banger.db.before-9.9.9-journal,banger.db-wal,banger.db-shm"
	const runs = 20
	planted, made := 0, 0
	racerBin := roottest.BuildRacer(t)

	// The control: the same steps run as root (as update did before)
	// lose to the racer, which has root give its file away.
	asRoot := Bangerd{Env: b.Env}
	racer := roottest.StartRacer(t, racerBin, owner, "/", "-dir", state, "-names", names, "-target", victim, "-replace")
	won := 0
	for run := 1; run <= 40 && won == 0; run++ {
		racer.Pause(t)
		freshStore()
		racer.Resume(t)
		_ = asRoot.Backup(ctx, bangerd, backup)
		if !maps.Equal(before, roottest.Snapshot(t, outside)) {
			won = run
		}
	}
	racer.Stop(t)
	if won == 0 {
		t.Fatal("the racer never won against root working by path in 40 runs: this test cannot tell the difference")
	}
	t.Logf("root working by path lost to the racer in run %d", won)
	if err := errors.Join(os.Chown(victim, 0, 0), os.Chmod(victim, 0o644), os.WriteFile(victim, []byte("root's own file\n"), 0o644)); err != nil {
		t.Fatal(err)
	}
	roottest.SameSnapshot(t, before, roottest.Snapshot(t, outside))
	for _, round := range []struct {
		target string
		mode   []string
	}{
		{victim, nil}, {victim, []string{"-replace"}},
		{filepath.Join(outside, "made-by-root"), nil}, {filepath.Join(outside, "made-by-root"), []string{"-replace"}},
	} {
		racer := roottest.StartRacer(t, racerBin, owner, "/", append([]string{"-dir", state, "-names", names, "-target", round.target}, round.mode...)...)
		for range runs {
			// Each run on a whole store: the racer leaves the owner's
			// own state in any shape.
			racer.Pause(t)
			freshStore()
			racer.Resume(t)
			if b.Backup(ctx, bangerd, backup) == nil {
				made++
				var st syscall.Stat_t
				if err := syscall.Lstat(backup, &st); err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG && int(st.Uid) != owner.UID {
					t.Fatalf("the copy is uid %d's, not the owner's", st.Uid)
				}
			}
			_, _, _ = b.CheckMigrations(ctx, bangerd)
			_ = b.Restore(ctx, bangerd, backup)
		}
		planted += racer.Stop(t)
	}
	if planted == 0 {
		t.Fatal("the racer planted nothing: this run proves nothing")
	}
	t.Logf("%d symlinks planted over %d runs; %d copies made", planted, 4*runs, made)
	roottest.SameSnapshot(t, before, roottest.Snapshot(t, outside))
	if _, err := os.Stat(filepath.Join(outside, "made-by-root")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file was made outside: %v", err)
	}
	// Without the racer the steps work as the owner: a copy, checked,
	// put back.
	freshStore()
	if err := b.Backup(ctx, bangerd, backup); err != nil {
		t.Fatal(err)
	}
	if m, msg, err := b.CheckMigrations(ctx, bangerd); err != nil || m == Refuses {
		t.Fatalf("check = %v %q %v", m, msg, err)
	}
	if err := b.Restore(ctx, bangerd, backup); err != nil {
		t.Fatal(err)
	}
	// A place that is not beside the store is refused.
	if err := b.Backup(ctx, bangerd, filepath.Join(outside, "copy")); err == nil {
		t.Fatal("a copy outside the state directory was allowed")
	}
}
