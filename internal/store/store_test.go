package store

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a writer process that the
// kill-mid-write test SIGKILLs.
const helperEnv = "BANGER_STORE_WRITER"

func TestMain(m *testing.M) {
	if file := os.Getenv(helperEnv); file != "" {
		writer(file)
		return
	}
	os.Exit(m.Run())
}

// writer commits pairs of keys forever, each pair in one transaction, and
// prints the number of each committed pair.
func writer(file string) {
	ctx := context.Background()
	s, err := Open(ctx, file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := 0; ; i++ {
		err := s.Update(ctx, func(tx *Tx) error {
			if err := tx.SetMeta(ctx, fmt.Sprintf("a-%d", i), strconv.Itoa(i)); err != nil {
				return err
			}
			// A large value makes each transaction span several pages.
			return tx.SetMeta(ctx, fmt.Sprintf("b-%d", i), fmt.Sprintf("%d-%0*d", i, 8000, 0))
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println(i)
	}
}

func TestOpenMigratesAndReopens(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.SchemaVersion(), LatestVersion(); got != want || want < 1 {
		t.Fatalf("SchemaVersion = %d, want %d (>= 1)", got, want)
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.SetMeta(ctx, "k", "v") }); err != nil {
		t.Fatal(err)
	}
	var mode string
	if err := s.db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	s.Close()
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("database mode = %v, %v; want 0600", fi.Mode(), err)
	}

	s, err = Open(ctx, file)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	err = s.View(ctx, func(tx *Tx) error {
		v, err := tx.Meta(ctx, "k")
		if err != nil || v != "v" {
			return fmt.Errorf("Meta(k) = %q, %v", v, err)
		}
		_, err = tx.Meta(ctx, "missing")
		if !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("Meta(missing) = %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestUpdateIsAtomic(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.SetMeta(ctx, "half", "written"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	err = s.View(ctx, func(tx *Tx) error {
		_, err := tx.Meta(ctx, "half")
		return err
	})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("write of a failed transaction is visible: %v", err)
	}
}

func setUserVersion(t *testing.T, file string, v int) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+file)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "banger.db")
	latest := LatestVersion()

	res, err := Check(ctx, file)
	if err != nil || res.Exists || !res.CanOpen() || res.NeedsMigration() {
		t.Fatalf("Check(missing) = %+v, %v", res, err)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Check created the database")
	}

	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	res, err = Check(ctx, file)
	if err != nil || !res.Exists || res.Version != latest || !res.CanOpen() || res.NeedsMigration() {
		t.Fatalf("Check(current) = %+v, %v", res, err)
	}

	setUserVersion(t, file, latest+1)
	res, err = Check(ctx, file)
	if err != nil || res.CanOpen() || res.Version != latest+1 {
		t.Fatalf("Check(newer) = %+v, %v; want CanOpen false", res, err)
	}
	if _, err := Open(ctx, file); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open(newer) = %v, want ErrSchemaTooNew", err)
	}
}

func TestOpenMigratesOlderSchema(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "banger.db")
	// An empty database is version 0, the oldest possible.
	setUserVersion(t, file, 0)
	res, err := Check(ctx, file)
	if err != nil || !res.NeedsMigration() || !res.CanOpen() {
		t.Fatalf("Check(v0) = %+v, %v", res, err)
	}
	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.SchemaVersion() != LatestVersion() {
		t.Fatalf("version after migration = %d", s.SchemaVersion())
	}
}

func TestMigrationsAreNumberedWithoutGaps(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if m.Version != i+1 || m.SQL == "" {
			t.Fatalf("migration %d = %+v", i, m)
		}
	}
}

// TestKilledMidWriteReopensCleanly SIGKILLs a process while it commits
// transactions, then checks the database opens, passes SQLite's integrity
// check, holds every transaction the writer reported committed, and holds
// no half of a transaction.
func TestKilledMidWriteReopensCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a writer process")
	}
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "banger.db")
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+file)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		last := -1
		// Kill after a varying number of commits, mid-stream.
		for sc.Scan() {
			last, _ = strconv.Atoi(sc.Text())
			if last >= 40+round*37 {
				break
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if last < 0 {
			t.Fatal("writer committed nothing")
		}

		s, err := Open(ctx, file)
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		if err := s.IntegrityCheck(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		var as, bs int
		if err := s.db.QueryRow("SELECT count(*) FROM meta WHERE key LIKE 'a-%'").Scan(&as); err != nil {
			t.Fatal(err)
		}
		if err := s.db.QueryRow("SELECT count(*) FROM meta WHERE key LIKE 'b-%'").Scan(&bs); err != nil {
			t.Fatal(err)
		}
		if as != bs {
			t.Fatalf("round %d: %d a-keys but %d b-keys: a transaction landed in part", round, as, bs)
		}
		if as < last+1 {
			t.Fatalf("round %d: writer reported %d commits, store holds %d", round, last+1, as)
		}
		// Clear for the next round so counts are per round.
		if _, err := s.db.Exec("DELETE FROM meta"); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

func TestImages(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	a := Image{Name: "docker.io/library/debian:bookworm", ID: "sha256:cc", Digest: "sha256:aa", RepoDigest: "sha256:ii", Platform: "linux/amd64",
		Config: []byte(`{"config":{}}`), Layers: 1, Size: 100, Source: "pull", CreatedAt: now}
	b := a
	b.Name = "debian:alias"
	err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.PutImage(ctx, a); err != nil {
			return err
		}
		return tx.PutImage(ctx, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(ctx, func(tx *Tx) error {
		got, err := tx.Image(ctx, a.Name)
		if err != nil {
			return err
		}
		if got.Digest != a.Digest || !got.CreatedAt.Equal(now) || string(got.Config) != string(a.Config) {
			t.Errorf("Image = %+v", got)
		}
		all, err := tx.Images(ctx)
		if err != nil || len(all) != 2 || all[0].Name != "debian:alias" {
			t.Errorf("Images = %+v, %v", all, err)
		}
		if _, err := tx.Image(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing image = %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var left []int
	err = s.Update(ctx, func(tx *Tx) error {
		for _, name := range []string{a.Name, b.Name} {
			n, err := tx.DeleteImage(ctx, name)
			if err != nil {
				return err
			}
			left = append(left, n)
		}
		return nil
	})
	if err != nil || left[0] != 1 || left[1] != 0 {
		t.Fatalf("DeleteImage remaining = %v, %v", left, err)
	}
}

func TestKernels(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	old := Kernel{Name: "debian-6.1.0-55", ID: "sha256:aa", Version: "6.1.0-55-amd64", Source: "debian", Origin: "linux-image-6.1.0-55-amd64", Size: 1, Modules: 2, CreatedAt: time.Unix(100, 0)}
	newer := old
	newer.Name, newer.CreatedAt = "debian-6.1.0-56", time.Unix(200, 0)
	alias := newer
	alias.Name = "mine"
	err := s.Update(ctx, func(tx *Tx) error {
		for _, k := range []Kernel{old, newer, alias} {
			if err := tx.PutKernel(ctx, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, func(tx *Tx) error {
		all, err := tx.Kernels(ctx)
		if err != nil || len(all) != 3 || all[0].Name != "debian-6.1.0-56" || all[2].Name != "debian-6.1.0-55" {
			t.Errorf("Kernels = %+v, %v", all, err)
		}
		if n, err := tx.DeleteKernel(ctx, "mine"); err != nil || n != 2 {
			t.Errorf("DeleteKernel = %d, %v", n, err)
		}
		if _, err := tx.Kernel(ctx, "mine"); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted kernel = %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestVMs(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	a := VM{Name: "a", ID: "id-a", State: "running", ImageID: "img1", KernelID: "k1", VCPU: 1, MemoryMiB: 256, DiskSize: 1 << 30,
		Network: "none", PID: 42, PIDStart: 1 << 40, CreatedAt: time.Unix(100, 0).UTC(), StartedAt: time.Unix(101, 0).UTC(),
		NAT: true, AutoStop: "30m", Isolate: true, Allow: []string{"github.com:443", "10.0.0.0/8"}, Creator: "mcp:agent", NoShare: true}
	b := a
	b.Name, b.ID, b.State, b.PID, b.PIDStart, b.CreatedAt, b.StartedAt = "b", "id-b", "stopped", 0, 0, time.Unix(200, 0).UTC(), time.Time{}
	err := s.Update(ctx, func(tx *Tx) error {
		for _, v := range []VM{a, b} {
			if err := tx.InsertVM(ctx, v); err != nil {
				return err
			}
		}
		return tx.InsertVM(ctx, a)
	})
	if !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("a second VM named a: %v", err)
	}
	// The failed transaction wrote nothing.
	err = s.Update(ctx, func(tx *Tx) error {
		for _, v := range []VM{a, b} {
			if err := tx.InsertVM(ctx, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(ctx, func(tx *Tx) error {
		got, err := tx.VM(ctx, "a")
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Errorf("VM(a) = %+v, %v; want %+v", got, err, a)
		}
		all, err := tx.VMs(ctx)
		if err != nil || len(all) != 2 || all[0].Name != "a" || all[1].StartedAt != (time.Time{}) {
			t.Errorf("VMs = %+v, %v", all, err)
		}
		running, other, err := tx.VMsUsing(ctx, "image_id", "img1")
		if err != nil || running != 1 || other != 1 {
			t.Errorf("VMsUsing(image) = %d, %d, %v", running, other, err)
		}
		if _, _, err := tx.VMsUsing(ctx, "name; DROP TABLE vms", "x"); err == nil {
			t.Error("VMsUsing took a column it does not know")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, func(tx *Tx) error { return tx.DeleteVM(ctx, "a") })
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, func(tx *Tx) error { return tx.DeleteVM(ctx, "a") })
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting a missing VM: %v", err)
	}
}

func TestLeases(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	first, last := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.4")
	lease := func(id string) (netip.Addr, error) {
		var a netip.Addr
		err := s.Update(ctx, func(tx *Tx) error {
			if _, err := tx.VM(ctx, id); errors.Is(err, ErrNotFound) {
				if err := tx.InsertVM(ctx, VM{Name: id, ID: id, CreatedAt: time.Unix(1, 0)}); err != nil {
					return err
				}
			}
			var err error
			a, err = tx.AllocateLease(ctx, id, first, last)
			return err
		})
		return a, err
	}
	for _, tc := range []struct {
		vm   string
		want string
	}{
		{"a", "10.0.0.2"},
		{"b", "10.0.0.3"},
		{"a", "10.0.0.2"}, // a VM keeps its lease
		{"c", "10.0.0.4"},
	} {
		got, err := lease(tc.vm)
		if err != nil || got.String() != tc.want {
			t.Fatalf("lease for %s = %v, %v; want %s", tc.vm, got, err, tc.want)
		}
	}
	if _, err := lease("d"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("a fourth lease from three addresses: %v", err)
	}
	// Deleting b frees its address, and only that one.
	if err := s.Update(ctx, func(tx *Tx) error { return tx.DeleteVM(ctx, "b") }); err != nil {
		t.Fatal(err)
	}
	if got, err := lease("d"); err != nil || got.String() != "10.0.0.3" {
		t.Fatalf("lease after freeing b = %v, %v", got, err)
	}
	err := s.View(ctx, func(tx *Tx) error {
		v, err := tx.VM(ctx, "c")
		if err != nil || v.Addr.String() != "10.0.0.4" {
			t.Errorf("VM(c).Addr = %v, %v", v.Addr, err)
		}
		all, err := tx.VMs(ctx)
		for _, v := range all {
			if !v.Addr.IsValid() && v.Name != "" {
				t.Errorf("VMs: %s has no address", v.Name)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// The primary key refuses a second holder of one address, whatever
	// the caller does.
	err = s.Update(ctx, func(tx *Tx) error {
		_, err := tx.tx.ExecContext(ctx, "INSERT INTO leases(addr, vm_id) VALUES('10.0.0.2', 'x')")
		return err
	})
	if err == nil {
		t.Fatal("an address was leased twice")
	}
}

// openTemp opens a store in a new temporary directory, closed with the
// test.
func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestAuditFile: a whole store passes; a lease and a forward whose VM
// has no record are named.
func TestAuditFile(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := AuditFile(ctx, file)
	if err != nil || a.Integrity != "ok" || len(a.Orphans) != 0 {
		t.Fatalf("empty store: %+v, %v", a, err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO leases(addr, vm_id) VALUES('10.0.0.2', 'gone');
		INSERT INTO forwards(vm_id, guest_port, guest_addr, host_addr) VALUES('gone', 80, '127.0.0.1:80', '127.0.0.1:4000')`); err != nil {
		t.Fatal(err)
	}
	a, err = AuditFile(ctx, file)
	if err != nil || len(a.Orphans) != 2 || !strings.Contains(strings.Join(a.Orphans, ";"), "lease 10.0.0.2 of gone") {
		t.Fatalf("orphans: %+v, %v", a, err)
	}
}
