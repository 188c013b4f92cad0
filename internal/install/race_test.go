package install

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/roottest"
)

// raceSetup is a base directory every user may traverse, holding a
// root-owned "outside" tree (the files a racer tries to have root
// change) and staging roots of root-only layouts.
type raceSetup struct {
	base, outside string
	owner         roottest.User
	racer         string
	n             int
}

func newRaceSetup(t *testing.T) *raceSetup {
	roottest.Require(t, "it plays the owner with a second uid racing root")
	owner, remove, err := roottest.AddUser("bgr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	base, err := os.MkdirTemp("", "banger-install-race-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	must(t, os.Chmod(base, 0o755))
	s := &raceSetup{base: base, outside: filepath.Join(base, "outside"), owner: owner, racer: roottest.BuildRacer(t)}
	s.makeOutside(t)
	return s
}

// makeOutside makes the outside tree anew. It holds what a path through
// a swapped directory names: the layout's own names (layout), so that a
// walk which lists a directory and then goes on by path through it meets
// them there.
func (s *raceSetup) makeOutside(t *testing.T) {
	must(t, os.RemoveAll(s.outside))
	names := []string{"work.ext4", "banger.db", "sub/x", "blobs/x", "bangerd.log"}
	for i := range layoutVMs {
		names = append(names, fmt.Sprintf("%03d/work.ext4", i), fmt.Sprintf("%03d/sub/x", i))
	}
	for _, p := range names {
		must(t, os.MkdirAll(filepath.Join(s.outside, filepath.Dir(p)), 0o755))
		must(t, os.WriteFile(filepath.Join(s.outside, p), []byte("root's\n"), 0o644))
	}
}

// layoutVMs is how many VM directories a layout holds.
const layoutVMs = 200

// layout makes a staging root holding a root-only layout of many
// directories (so a walk takes a while), and returns the root.
func (s *raceSetup) layout(t *testing.T) string {
	s.n++
	root := filepath.Join(s.base, fmt.Sprintf("stage-%d", s.n))
	for _, d := range []string{"", "var", "var/lib", "var/cache", "var/log", "etc"} {
		must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
		must(t, os.Chmod(filepath.Join(root, d), 0o755))
	}
	must(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(fmt.Sprintf("root:x:0:0::/root:/bin/sh\n%s:x:%d:%d::/nonexistent:/usr/sbin/nologin\n", s.owner.Name, s.owner.UID, s.owner.GID)), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc/group"), []byte(fmt.Sprintf("root:x:0:\n%s:x:%d:\n", s.owner.Name, s.owner.GID)), 0o644))
	files := []string{"var/lib/banger/banger.db", "var/log/banger/bangerd.log", "var/cache/banger/oci/blobs/x"}
	for i := range layoutVMs {
		files = append(files, fmt.Sprintf("var/lib/banger/vms/%03d/work.ext4", i), fmt.Sprintf("var/lib/banger/vms/%03d/sub/x", i))
	}
	for _, f := range files {
		must(t, os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o700))
		must(t, os.WriteFile(filepath.Join(root, f), []byte("old\n"), 0o600))
	}
	return root
}

// race runs do on a fresh layout with the owner racing in its state
// directory (every directory below it swapped for a symlink to the
// outside as soon as the owner may), and says whether the outside
// changed (then made whole again).
func (s *raceSetup) race(t *testing.T, do func(root string)) (changed bool, planted int) {
	root := s.layout(t)
	before := roottest.Snapshot(t, s.outside)
	rel, _ := filepath.Rel(s.base, filepath.Join(root, "var/lib/banger"))
	racer := roottest.StartRacer(t, s.racer, s.owner, s.base, "-dir", rel, "-swap", "-target", s.outside)
	do(root)
	planted = racer.Stop(t)
	after := roottest.Snapshot(t, s.outside)
	os.RemoveAll(root)
	if !maps.Equal(before, after) {
		s.makeOutside(t)
		return true, planted
	}
	return false, planted
}

// mustLose shows the racer can win: do, the same work done by path,
// must change the outside within 40 runs, or the test cannot tell
// banger's way from it.
func (s *raceSetup) mustLose(t *testing.T, what string, do func(root string)) {
	for run := 1; run <= 40; run++ {
		if changed, _ := s.race(t, do); changed {
			t.Logf("%s lost to the racer in run %d", what, run)
			return
		}
	}
	t.Fatalf("the racer never won against %s in 40 runs: this test cannot tell banger's way from it", what)
}

// TestTakeOverRace: install's take-over of a root-only layout, raced by
// the owner, who may swap any directory it is given for a symlink to a
// root-owned tree. A walk by path (filepath.WalkDir and Lchown, what
// install did before) loses: the racer has root give away files outside
// the layout within a few runs. The take-over does not, over many runs:
// it works through descriptors, never following a link, and gives each
// directory away only once it is done with what is below it.
func TestTakeOverRace(t *testing.T) {
	s := newRaceSetup(t)
	byPath := func(root string) {
		_ = filepath.WalkDir(filepath.Join(root, "var/lib/banger"), func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			return os.Lchown(p, s.owner.UID, s.owner.GID)
		})
	}
	s.mustLose(t, "a walk by path", byPath)

	const runs = 20
	for run := range runs {
		var applyErr error
		changed, _ := s.race(t, func(root string) {
			_, _, applyErr = Apply(Options{Root: root, Owner: Account{s.owner.Name, s.owner.UID},
				OwnerGroup: Account{s.owner.Name, s.owner.GID}, From: binaries(t)})
		})
		if changed {
			t.Fatalf("run %d: the take-over changed files outside the layout", run)
		}
		if applyErr != nil {
			t.Fatalf("run %d: %v", run, applyErr)
		}
	}
}

// TestTakeOverRefusesAnotherUsersTree: a layout whose state directory
// is neither root's nor the owner's is another user's to change under
// root's feet: refused, naming it, and nothing is given away.
func TestTakeOverRefusesAnotherUsersTree(t *testing.T) {
	s := newRaceSetup(t)
	other, remove, err := roottest.AddUser("bgo")
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	root := s.layout(t)
	state := filepath.Join(root, "var/lib/banger")
	must(t, os.Lchown(state, other.UID, other.GID))
	_, _, err = Apply(Options{Root: root, Owner: Account{s.owner.Name, s.owner.UID}, OwnerGroup: Account{s.owner.Name, s.owner.GID}, From: binaries(t)})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("uid %d's", other.UID)) {
		t.Fatalf("Apply = %v", err)
	}
	if m := metaOf(t, filepath.Join(state, "banger.db")); m.uid != 0 {
		t.Fatalf("a refused take-over gave banger.db to %d", m.uid)
	}
}

// TestPurgeRace: `system uninstall --purge` removes the owner's state
// while the owner swaps its directories for symlinks to a root-owned
// tree. A removal by path (list, then remove each name) loses: it
// removes files outside within a few runs. The purge does not: it goes
// through descriptors and never follows a link (os.RemoveAll: unlinkat,
// openat with O_NOFOLLOW).
func TestPurgeRace(t *testing.T) {
	s := newRaceSetup(t)
	owned := func(root string) string {
		state := filepath.Join(root, "var/lib/banger")
		if _, err := giveTree(state, s.owner.UID, s.owner.GID); err != nil { // installed: the owner's
			t.Fatal(err)
		}
		return state
	}
	byPath := func(root string) {
		state := owned(root)
		var files []string
		_ = filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				files = append(files, p)
			}
			return nil
		})
		for _, f := range files {
			_ = os.Remove(f)
		}
	}
	s.mustLose(t, "a removal by path", byPath)
	const runs = 15
	planted := 0
	for run := range runs {
		changed, n := s.race(t, func(root string) {
			owned(root)
			for i := 0; i < 3; i++ {
				if err := Uninstall(root, true, nil); err == nil {
					break
				}
			}
		})
		planted += n
		if changed {
			t.Fatalf("run %d: the purge changed files outside the layout", run)
		}
	}
	if planted == 0 {
		t.Fatal("the racer planted nothing: this run proves nothing")
	}
	t.Logf("%d symlinks planted over %d purges", planted, runs)
	if _, err := os.Stat(filepath.Join(s.outside, "work.ext4")); err != nil {
		t.Fatalf("the outside lost a file: %v", err)
	}
}

// binaries are stand-in binaries for an install.
func binaries(t *testing.T) Binaries {
	bin := t.TempDir()
	for _, name := range []string{"banger", "bangerd", "banger-agent"} {
		must(t, os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755))
	}
	return Binaries{CLI: filepath.Join(bin, "banger"), Daemon: filepath.Join(bin, "bangerd"), Agent: filepath.Join(bin, "banger-agent")}
}
