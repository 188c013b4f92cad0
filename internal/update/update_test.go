package update

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/release"
	"github.com/bangerdev/banger/internal/store"
)

// fixture is an installed banger (binaries whose content is their
// version) and a signed release source next to it.
type fixture struct {
	t        *testing.T
	bin, src string
	key      minisign.PrivateKey
	pub      release.Key
	ix       release.Index
	ops      []api.OperationSummary
	restarts int
	stops    int
	store    string
	doctor   error
	restart  error
	migrate  Migration
	said     []string
	mark     string    // the high-water mark's file
	issued   time.Time // what the next signature says
}

func newFixture(t *testing.T) *fixture {
	pub, key, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, bin: t.TempDir(), src: t.TempDir(), key: key, pub: pub, issued: time.Now()}
	f.mark = filepath.Join(t.TempDir(), MarkName)
	f.store = filepath.Join(t.TempDir(), "banger.db")
	st, err := store.Open(context.Background(), f.store)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	for _, name := range release.Binaries {
		if err := os.WriteFile(filepath.Join(f.bin, name), []byte("1.0.0"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// publish adds a release whose binaries say version, and signs the index.
func (f *fixture) publish(version string) {
	dir := f.t.TempDir()
	for _, name := range release.Binaries {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(version), 0o755); err != nil {
			f.t.Fatal(err)
		}
	}
	tarball, err := release.Pack(dir, version)
	if err != nil {
		f.t.Fatal(err)
	}
	f.add(version, tarball)
}

// add serves tarball as version's, in a signed index.
func (f *fixture) add(version string, tarball []byte) {
	e := release.Entry{Version: version, File: release.TarballName(version)}
	copy(e.Sum[:], sha256Of(tarball))
	f.ix = append(f.ix, e)
	f.write(e.File, tarball)
	sums := f.ix.Bytes()
	f.write(release.SumsName, sums)
	f.write(release.SigName, release.Sign(f.key, sums, f.issued, release.DefaultValidity))
}

func (f *fixture) write(name string, b []byte) {
	if err := os.WriteFile(filepath.Join(f.src, name), b, 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) host() Host {
	paths := map[string]string{}
	for _, name := range release.Binaries {
		paths[name] = filepath.Join(f.bin, name)
	}
	return Host{
		Current: "1.0.0", Paths: paths, KeepDir: filepath.Join(f.bin, PreviousDir), Store: f.store, MarkFile: f.mark,
		StoreSteps: fakeSteps{f: f},
		Daemon:     fakeDaemon{f: f},
		InFlight:   func(context.Context) ([]api.OperationSummary, error) { return f.ops, nil },
		Version: func(_ context.Context, bangerd string) (string, error) {
			b, err := os.ReadFile(bangerd)
			return string(b), err
		},
		Doctor: func(context.Context, string) error { return f.doctor },
		Say:    func(format string, args ...any) { f.said = append(f.said, fmt.Sprintf(format, args...)) },
	}
}

// fakeSteps are the store commands on the fixture's store; check, when
// set, answers --check-migrations instead of f.migrate.
type fakeSteps struct {
	f     *fixture
	check func(ctx context.Context, bangerd string) (Migration, string, error)
}

func (s fakeSteps) CheckMigrations(ctx context.Context, bangerd string) (Migration, string, error) {
	if s.check != nil {
		return s.check(ctx, bangerd)
	}
	return s.f.migrate, "schema 10", nil
}

func (s fakeSteps) Backup(ctx context.Context, _, dst string) error {
	return store.Backup(ctx, s.f.store, dst)
}

func (s fakeSteps) Restore(_ context.Context, _, backup string) error {
	return store.Restore(backup, s.f.store)
}

// fakeDaemon counts stops and restarts; restart, when set, restarts
// instead (and counts its own).
type fakeDaemon struct {
	f       *fixture
	restart func(context.Context) error
}

func (d fakeDaemon) Stop(context.Context) error { d.f.stops++; return nil }

func (d fakeDaemon) Restart(ctx context.Context) error {
	if d.restart != nil {
		return d.restart(ctx)
	}
	d.f.restarts++
	return d.f.restart
}

func (f *fixture) options(to string) Options {
	src, err := release.OpenSource(f.src)
	if err != nil {
		f.t.Fatal(err)
	}
	return Options{From: src, Key: f.pub, To: to}
}

// installed is the version every binary in place says.
func (f *fixture) installed() string {
	var v []string
	for _, name := range release.Binaries {
		b, err := os.ReadFile(filepath.Join(f.bin, name))
		if err != nil {
			f.t.Fatal(err)
		}
		v = append(v, string(b))
	}
	if len(slices.Compact(slices.Clone(v))) != 1 {
		f.t.Fatalf("mixed binaries %q", v)
	}
	return v[0]
}

// untouched checks nothing was changed: the old binaries, nothing kept,
// nothing staged.
func (f *fixture) untouched() {
	f.t.Helper()
	if v := f.installed(); v != "1.0.0" {
		f.t.Fatalf("binaries of %s in place", v)
	}
	entries, _ := os.ReadDir(f.bin)
	if len(entries) != len(release.Binaries) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		f.t.Fatalf("left in the binaries' directory: %q", names)
	}
	if f.restarts != 0 {
		f.t.Fatalf("restarted %d times", f.restarts)
	}
}

func TestUpdate(t *testing.T) {
	f := newFixture(t)
	f.publish("1.0.0")
	f.publish("1.1.0")
	f.publish("1.2.0-rc.1")
	ctx := context.Background()
	res, err := Apply(ctx, f.host(), f.options(""))
	if err != nil || !res.Updated || res.Target != "1.2.0-rc.1" || res.Previous != "1.0.0" || res.Migration != "schema 10" {
		t.Fatalf("update = %+v, %v", res, err)
	}
	if v := f.installed(); v != "1.2.0-rc.1" || f.restarts != 1 {
		t.Fatalf("after the update: %s, %d restarts", v, f.restarts)
	}
	kept, _ := os.ReadFile(filepath.Join(f.bin, PreviousDir, "VERSION"))
	if string(kept) != "1.0.0\n" {
		t.Fatalf("kept %q", kept)
	}
	// Up to date now.
	h := f.host()
	h.Current = "1.2.0-rc.1"
	if res, err := Apply(ctx, h, f.options("")); err != nil || !res.UpToDate || res.Updated {
		t.Fatalf("second update = %+v, %v", res, err)
	}
	// --rollback, twice: back and forth.
	if res, err := Rollback(ctx, h); err != nil || res.Target != "1.0.0" || f.installed() != "1.0.0" {
		t.Fatalf("rollback = %+v, %v; %s in place", res, err, f.installed())
	}
	if res, err := Rollback(ctx, f.host()); err != nil || res.Target != "1.2.0-rc.1" || f.installed() != "1.2.0-rc.1" {
		t.Fatalf("second rollback = %+v, %v; %s in place", res, err, f.installed())
	}
	// --to an older one is a downgrade: refused unless asked for with
	// --allow-downgrade; one not there is named.
	h.Current = "1.2.0-rc.1"
	if _, err := Apply(ctx, h, f.options("1.1.0")); !errors.Is(err, ErrDowngrade) || !strings.Contains(err.Error(), "--allow-downgrade") || f.installed() != "1.2.0-rc.1" {
		t.Fatalf("update --to 1.1.0 = %v", err)
	}
	o := f.options("1.1.0")
	o.AllowDowngrade = true
	if res, err := Apply(ctx, h, o); err != nil || f.installed() != "1.1.0" {
		t.Fatalf("update --to 1.1.0 --allow-downgrade = %+v, %v", res, err)
	}
	o = f.options("")
	o.AllowDowngrade = true
	if _, err := Apply(ctx, h, o); !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "goes with --to") {
		t.Fatalf("--allow-downgrade without --to = %v", err)
	}
	if _, err := Apply(ctx, h, f.options("9.9.9")); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), "1.0.0, 1.1.0, 1.2.0-rc.1") {
		t.Fatalf("update --to 9.9.9 = %v", err)
	}
}

// Each of these is refused before anything is changed.
func TestRefused(t *testing.T) {
	ctx := context.Background()
	symlink := tarOf(t, &tar.Header{Name: "banger-2.0.0/banger", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"})
	climbing := tarOf(t, &tar.Header{Name: "../../banger", Typeflag: tar.TypeReg, Mode: 0o755})
	for _, c := range []struct {
		name  string
		setup func(f *fixture)
		want  error
		say   string
	}{
		{"an index signed by another key", func(f *fixture) {
			other := newFixture(t)
			sums, _ := os.ReadFile(filepath.Join(f.src, release.SumsName))
			f.write(release.SigName, release.Sign(other.key, sums, time.Now(), time.Hour))
		}, release.ErrBadSignature, "not signed by the release key"},
		{"an index changed after signing", func(f *fixture) {
			sums, _ := os.ReadFile(filepath.Join(f.src, release.SumsName))
			f.write(release.SumsName, bytes.Replace(sums, []byte("2.0.0"), []byte("2.0.1"), 1))
		}, release.ErrBadSignature, ""},
		{"no signature", func(f *fixture) { os.Remove(filepath.Join(f.src, release.SigName)) }, nil, "SHA256SUMS.minisig"},
		{"a tampered tarball", func(f *fixture) {
			b, _ := os.ReadFile(filepath.Join(f.src, release.TarballName("2.0.0")))
			b[len(b)/2] ^= 1
			f.write(release.TarballName("2.0.0"), b)
		}, release.ErrBadChecksum, "tampered or corrupt"},
		{"a signed tarball with a symlink", func(f *fixture) { f.ix = nil; f.add("2.0.0", symlink) }, release.ErrBadTarball, "not a regular file"},
		{"a signed tarball that climbs", func(f *fixture) { f.ix = nil; f.add("2.0.0", climbing) }, release.ErrBadTarball, "not NAME or DIR/NAME"},
		{"a tarball of another version", func(f *fixture) {
			f.ix = nil
			dir := t.TempDir()
			for _, name := range release.Binaries {
				os.WriteFile(filepath.Join(dir, name), []byte("1.5.0"), 0o755)
			}
			b, _ := release.Pack(dir, "2.0.0")
			f.add("2.0.0", b)
		}, release.ErrBadTarball, "holds bangerd 1.5.0"},
		{"an operation in flight", func(f *fixture) {
			f.ops = []api.OperationSummary{
				{ID: "op-1", Kind: api.OpKindVMCreate, Target: "web", Phase: "booting"},
				{ID: "op-2", Kind: api.OpKindImagePull, Target: "debian", Done: true},
			}
		}, api.ErrInUse, "1 operation(s) in flight: vm.create web (booting) op-1"},
		{"a store the new daemon cannot open", func(f *fixture) { f.migrate = Refuses }, api.ErrInvalidArgument, "cannot open the store: schema 10"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.publish("2.0.0")
			c.setup(f)
			_, err := Apply(ctx, f.host(), f.options(""))
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.say) {
				t.Fatalf("update = %v; want %v saying %q", err, c.want, c.say)
			}
			f.untouched()
		})
	}
	t.Run("a dry run", func(t *testing.T) {
		f := newFixture(t)
		f.publish("2.0.0")
		o := f.options("")
		o.DryRun = true
		if res, err := Apply(ctx, f.host(), o); err != nil || res.Target != "2.0.0" || res.Updated {
			t.Fatalf("dry run = %+v, %v", res, err)
		}
		f.untouched()
	})
	t.Run("nothing to roll back to", func(t *testing.T) {
		f := newFixture(t)
		if _, err := Rollback(ctx, f.host()); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("rollback = %v", err)
		}
		f.untouched()
	})
}

// TestIndexFreshness: a mirror cannot freeze or roll back this host. An
// expired index is refused; once an index is verified, one issued before
// it (a mirror replaying the old one, signed and whole) is refused; the
// mark survives (a file), and a mark that does not parse stops the
// update rather than let an old index in.
func TestIndexFreshness(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	old := time.Now().Add(-48 * time.Hour)
	f.issued = old
	f.publish("2.0.0")
	oldSums, _ := os.ReadFile(filepath.Join(f.src, release.SumsName))
	oldSig, _ := os.ReadFile(filepath.Join(f.src, release.SigName))

	h := f.host()
	h.Now = func() time.Time { return old.Add(release.DefaultValidity + time.Hour) }
	if _, err := Apply(ctx, h, f.options("")); !errors.Is(err, release.ErrExpired) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("an expired index = %v", err)
	}
	f.untouched()
	if m, err := ReadMark(f.mark); err != nil || !m.IndexIssued.IsZero() {
		t.Fatalf("a refused index raised the mark: %+v, %v", m, err)
	}

	// A newer index, verified: the mark rises to it.
	f.issued = time.Now()
	f.publish("2.1.0")
	if _, _, err := Check(ctx, f.host(), f.options("")); err != nil {
		t.Fatal(err)
	}
	m, err := ReadMark(f.mark)
	if err != nil || !m.IndexIssued.Equal(f.issued.Truncate(time.Second).UTC()) || m.Version != "2.1.0" {
		t.Fatalf("the mark after a newer index: %+v, %v", m, err)
	}
	// The mirror serves the old index again (it lacks 2.1.0): refused.
	f.write(release.SumsName, oldSums)
	f.write(release.SigName, oldSig)
	if _, err := Apply(ctx, f.host(), f.options("")); !errors.Is(err, release.ErrStale) || !strings.Contains(err.Error(), "holding updates back") {
		t.Fatalf("a replayed older index = %v", err)
	}
	f.untouched()
	// A mark that does not parse: refused, naming the file.
	os.WriteFile(f.mark, []byte("{"), 0o644)
	if _, err := Apply(ctx, f.host(), f.options("")); err == nil || !strings.Contains(err.Error(), f.mark) {
		t.Fatalf("a broken mark = %v", err)
	}
	f.untouched()
}

// A release whose daemon does not start or whose doctor fails is rolled
// back, saying why; what --rollback goes to stays what it was.
func TestRollsBack(t *testing.T) {
	for _, c := range []struct {
		name     string
		doctor   error
		restart  error
		restarts int
		say      string
	}{
		{"doctor fails", errors.New("kvm: fail"), nil, 3, "doctor failed: kvm: fail"},
		{"the daemon does not start", nil, errors.New("bangerd exited during start-up"), 3, "the daemon did not start again: bangerd exited"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.publish("1.1.0")
			ctx := context.Background()
			if _, err := Apply(ctx, f.host(), f.options("")); err != nil {
				t.Fatal(err)
			}
			f.publish("2.0.0")
			h := f.host()
			h.Current = "1.1.0"
			h.Daemon = fakeDaemon{f: f, restart: func(context.Context) error {
				f.restarts++
				if f.installed() == "2.0.0" {
					return c.restart
				}
				return nil
			}}
			h.Doctor = func(context.Context, string) error {
				if f.installed() == "2.0.0" {
					return c.doctor
				}
				return nil
			}
			res, err := Apply(ctx, h, f.options(""))
			if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), c.say) || !res.RolledBack || res.Updated {
				t.Fatalf("update = %+v, %v", res, err)
			}
			if v := f.installed(); v != "1.1.0" || f.restarts != c.restarts {
				t.Fatalf("after rolling back: %s, %d restarts", v, f.restarts)
			}
			kept, _ := os.ReadFile(filepath.Join(f.bin, PreviousDir, "VERSION"))
			if string(kept) != "1.0.0\n" {
				t.Fatalf("kept %q", kept)
			}
			if entries, _ := os.ReadDir(f.bin); len(entries) != len(release.Binaries)+1 {
				t.Fatalf("left %d entries in the binaries' directory", len(entries))
			}
		})
	}
}

// A release that migrates the store: copied first, put back when that
// release is rolled back; --rollback past a migration is refused (the
// copy would lose what changed since), naming the copy.
func TestMigration(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.publish("2.0.0")
	f.migrate = WillMigrate
	events := func() int {
		st, err := store.Open(ctx, f.store)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var n int
		_ = st.View(ctx, func(tx *store.Tx) error {
			all, err := tx.Events(ctx, time.Unix(0, 0))
			n = len(all)
			return err
		})
		return n
	}
	h := f.host()
	h.Daemon = fakeDaemon{f: f, restart: func(context.Context) error {
		f.restarts++
		if f.installed() == "2.0.0" { // the new daemon writes to the store
			st, err := store.Open(ctx, f.store)
			if err != nil {
				return err
			}
			defer st.Close()
			return st.Update(ctx, func(tx *store.Tx) error {
				return tx.AddEvents(ctx, []api.Event{{Type: api.EventVMCreated, VM: "new", Time: time.Now()}}, 10)
			})
		}
		return nil
	}}
	h.Doctor = func(context.Context, string) error { return errors.New("kvm: fail") }
	if _, err := Apply(ctx, h, f.options("")); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("update = %v", err)
	}
	if n := events(); n != 0 || f.stops != 1 || f.installed() != "1.0.0" {
		t.Fatalf("after the rollback: %d events, %d stops, %s", n, f.stops, f.installed())
	}
	if _, err := os.Stat(f.store + ".before-2.0.0"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the copy after it was put back: %v", err)
	}

	h.Doctor = func(context.Context, string) error { return nil }
	if _, err := Apply(ctx, h, f.options("")); err != nil {
		t.Fatal(err)
	}
	if n := events(); n != 1 {
		t.Fatalf("after the update: %d events", n)
	}
	if _, err := os.Stat(f.store + ".before-2.0.0"); err != nil {
		t.Fatalf("the copy made before the update: %v", err)
	}
	h.Current = "2.0.0"
	h.StoreSteps = fakeSteps{f: f, check: func(_ context.Context, bangerd string) (Migration, string, error) {
		return Refuses, "schema 11 is newer than this binary's 10", nil
	}}
	if _, err := Rollback(ctx, h); !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), ".before-*") {
		t.Fatalf("rollback past a migration = %v", err)
	}
	if f.installed() != "2.0.0" {
		t.Fatal("a refused rollback changed the binaries")
	}
}

func tarOf(t *testing.T, hdrs ...*tar.Header) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func sha256Of(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}
