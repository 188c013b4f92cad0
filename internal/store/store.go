// Package store is the daemon's embedded transactional state: one SQLite
// database (pure Go, modernc.org/sqlite) in WAL mode, with forward-only
// schema migrations embedded in the binary. The schema version is SQLite's
// user_version, written in the same transaction as the migration it records,
// so a crash mid-migration leaves the previous version intact.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// ErrSchemaTooNew means the database was written by a newer binary.
var ErrSchemaTooNew = errors.New("store schema is newer than this binary")

// ErrNotFound is returned by lookups that find nothing.
var ErrNotFound = errors.New("not found in store")

// ErrAlreadyExists is returned by inserts of a key already there.
var ErrAlreadyExists = errors.New("already in store")

// Migration is one forward step of the schema.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in order. File names are
// NNNN_name.sql; numbers start at 1 and have no gaps.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("reading migrations: %s is not named NNNN_name.sql", e.Name())
		}
		b, err := migrationFS.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("reading migrations: expected version %d, found %d (%s)", i+1, m.Version, m.Name)
		}
	}
	return ms, nil
}

// LatestVersion is the schema version this binary writes.
func LatestVersion() int {
	ms, err := Migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// Store is an open database.
type Store struct {
	db      *sql.DB
	path    string
	version int
}

func dsn(file string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Set("mode", "ro")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		// NORMAL in WAL mode never corrupts and loses nothing when the
		// process dies; only an OS crash can drop the last commits.
		q.Add("_pragma", "synchronous(NORMAL)")
	}
	q.Set("_txlock", "immediate")
	return "file:" + file + "?" + q.Encode()
}

// Open opens (creating if needed) the database at file and migrates it to
// LatestVersion. It refuses a database written by a newer binary.
func Open(ctx context.Context, file string) (*Store, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn(file, false))
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", file, err)
	}
	// One connection: SQLite serialises writers anyway, and a single
	// connection makes every transaction's view trivially consistent.
	db.SetMaxOpenConns(1)
	s := &Store{db: db, path: file}
	if err := s.migrate(ctx, ms); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening store %s: %w", file, err)
	}
	if err := os.Chmod(file, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening store %s: %w", file, err)
	}
	return s, nil
}

func userVersion(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int, error) {
	var v int
	if err := q.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return v, nil
}

func (s *Store) migrate(ctx context.Context, ms []Migration) error {
	current, err := userVersion(ctx, s.db)
	if err != nil {
		return err
	}
	latest := len(ms)
	if current > latest {
		return fmt.Errorf("%w: it is at version %d, this binary knows up to %d; run the newer banger or restore a backup", ErrSchemaTooNew, current, latest)
	}
	for _, m := range ms[current:] {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("applying migration %d (%s): %w", m.Version, m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			tx.Rollback()
			return fmt.Errorf("applying migration %d (%s): %w", m.Version, m.Name, err)
		}
		// PRAGMA takes no bound parameters; the version is an int we made.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", m.Version)); err != nil {
			tx.Rollback()
			return fmt.Errorf("applying migration %d (%s): %w", m.Version, m.Name, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("applying migration %d (%s): %w", m.Version, m.Name, err)
		}
	}
	s.version = latest
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path is the database file.
func (s *Store) Path() string { return s.path }

// SchemaVersion is the schema version of the open database.
func (s *Store) SchemaVersion() int { return s.version }

// Tx is a transaction; all of its writes land together or not at all.
type Tx struct{ tx *sql.Tx }

// Access is what a service needs of the store: transactions. *Store
// has it; a test may give a service something else that does.
type Access interface {
	Update(ctx context.Context, f func(*Tx) error) error
	View(ctx context.Context, f func(*Tx) error) error
}

// Update runs f in a write transaction, committing when f returns nil.
func (s *Store) Update(ctx context.Context, f func(*Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	if err := f(&Tx{tx: tx}); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing transaction: %w", err)
	}
	return nil
}

// View runs f in a read transaction.
func (s *Store) View(ctx context.Context, f func(*Tx) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	defer tx.Rollback()
	return f(&Tx{tx: tx})
}

// Meta returns the value of a meta key, or ErrNotFound.
func (t *Tx) Meta(ctx context.Context, key string) (string, error) {
	var v string
	err := t.tx.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = ?", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("meta %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading meta %q: %w", key, err)
	}
	return v, nil
}

// SetMeta writes a meta key.
func (t *Tx) SetMeta(ctx context.Context, key, value string) error {
	_, err := t.tx.ExecContext(ctx, "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", key, value)
	if err != nil {
		return fmt.Errorf("writing meta %q: %w", key, err)
	}
	return nil
}

// CheckResult tells whether this binary can open an existing store.
type CheckResult struct {
	Path          string
	Exists        bool
	Version       int // the database's schema version
	BinaryVersion int // the newest version this binary knows
}

// CanOpen reports whether Open would succeed schema-wise.
func (r CheckResult) CanOpen() bool { return r.Version <= r.BinaryVersion }

// NeedsMigration reports whether Open would migrate.
func (r CheckResult) NeedsMigration() bool { return r.Exists && r.Version < r.BinaryVersion }

// Check reads the schema version of the database at file without writing
// to it (or creating it).
func Check(ctx context.Context, file string) (CheckResult, error) {
	res := CheckResult{Path: file, BinaryVersion: LatestVersion()}
	if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
		return res, nil
	} else if err != nil {
		return res, fmt.Errorf("checking store %s: %w", file, err)
	}
	res.Exists = true
	db, err := sql.Open("sqlite", dsn(file, true))
	if err != nil {
		return res, fmt.Errorf("checking store %s: %w", file, err)
	}
	defer db.Close()
	v, err := userVersion(ctx, db)
	if err != nil {
		return res, fmt.Errorf("checking store %s: %w", file, err)
	}
	res.Version = v
	return res, nil
}

// IntegrityCheck runs SQLite's integrity check and returns its verdict.
func (s *Store) IntegrityCheck(ctx context.Context) error {
	var verdict string
	if err := s.db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&verdict); err != nil {
		return fmt.Errorf("checking integrity: %w", err)
	}
	if verdict != "ok" {
		return fmt.Errorf("checking integrity: %s", verdict)
	}
	return nil
}

// Backup writes a consistent copy of the database at file to dst (which
// must not exist), while a daemon may be writing to it: SQLite's VACUUM
// INTO reads one snapshot. The copy gets the original's owner and mode
// 0600, so it can take the original's place.
func Backup(ctx context.Context, file, dst string) error {
	fi, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("backing up store %s: %w", file, err)
	}
	db, err := sql.Open("sqlite", dsn(file, true))
	if err != nil {
		return fmt.Errorf("backing up store %s: %w", file, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", dst); err != nil {
		return fmt.Errorf("backing up store %s to %s: %w", file, dst, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := os.Chown(dst, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("backing up store %s: %w", file, err)
		}
	}
	return os.Chmod(dst, 0o600)
}

// Restore puts a Backup in file's place, its -wal and -shm removed; no
// process may have the database open.
func Restore(backup, file string) error {
	for _, f := range []string{file + "-wal", file + "-shm"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restoring store %s: %w", file, err)
		}
	}
	if err := os.Rename(backup, file); err != nil {
		return fmt.Errorf("restoring store %s: %w", file, err)
	}
	return nil
}

// Audit is what a read-only look at a store finds wrong.
type Audit struct {
	Integrity string   // PRAGMA integrity_check's verdict: "ok" when whole
	Orphans   []string // leases and forwards of VMs that have no record
}

// AuditFile checks the store at file without writing to it, while a
// daemon may be using it: SQLite's integrity check, and rows that name
// a VM no record holds (the reliability campaign's leak check).
func AuditFile(ctx context.Context, file string) (Audit, error) {
	var a Audit
	db, err := sql.Open("sqlite", dsn(file, true))
	if err != nil {
		return a, fmt.Errorf("auditing store %s: %w", file, err)
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&a.Integrity); err != nil {
		return a, fmt.Errorf("auditing store %s: %w", file, err)
	}
	rows, err := db.QueryContext(ctx, `SELECT 'lease ' || addr || ' of ' || vm_id FROM leases WHERE vm_id NOT IN (SELECT id FROM vms)
		UNION ALL SELECT 'forward ' || host_addr || ' of ' || vm_id FROM forwards WHERE vm_id NOT IN (SELECT id FROM vms)`)
	if err != nil {
		return a, fmt.Errorf("auditing store %s: %w", file, err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return a, err
		}
		a.Orphans = append(a.Orphans, s)
	}
	return a, rows.Err()
}
