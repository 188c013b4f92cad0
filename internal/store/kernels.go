package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Kernel is one kernel record.
type Kernel struct {
	Name      string
	ID        string
	Version   string
	Source    string
	Origin    string
	Size      int64
	Modules   int
	CreatedAt time.Time
}

const kernelColumns = "name, id, version, source, origin, size, modules, created_at"

func scanKernel(row interface{ Scan(...any) error }) (Kernel, error) {
	var k Kernel
	var created string
	if err := row.Scan(&k.Name, &k.ID, &k.Version, &k.Source, &k.Origin, &k.Size, &k.Modules, &created); err != nil {
		return Kernel{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, created)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel %q: created_at %q: %w", k.Name, created, err)
	}
	k.CreatedAt = t
	return k, nil
}

// PutKernel inserts or replaces the record of k.Name.
func (t *Tx) PutKernel(ctx context.Context, k Kernel) error {
	_, err := t.tx.ExecContext(ctx, "INSERT OR REPLACE INTO kernels("+kernelColumns+") VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
		k.Name, k.ID, k.Version, k.Source, k.Origin, k.Size, k.Modules, k.CreatedAt.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("writing kernel %q: %w", k.Name, err)
	}
	return nil
}

// Kernel returns the record named name, or ErrNotFound.
func (t *Tx) Kernel(ctx context.Context, name string) (Kernel, error) {
	k, err := scanKernel(t.tx.QueryRowContext(ctx, "SELECT "+kernelColumns+" FROM kernels WHERE name = ?", name))
	if errors.Is(err, sql.ErrNoRows) {
		return Kernel{}, fmt.Errorf("kernel %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Kernel{}, fmt.Errorf("reading kernel %q: %w", name, err)
	}
	return k, nil
}

// Kernels lists every record, newest first.
func (t *Tx) Kernels(ctx context.Context) ([]Kernel, error) {
	rows, err := t.tx.QueryContext(ctx, "SELECT "+kernelColumns+" FROM kernels ORDER BY created_at DESC, name")
	if err != nil {
		return nil, fmt.Errorf("listing kernels: %w", err)
	}
	defer rows.Close()
	var out []Kernel
	for rows.Next() {
		k, err := scanKernel(rows)
		if err != nil {
			return nil, fmt.Errorf("listing kernels: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteKernel removes the record named name and returns how many records
// still use its bundle.
func (t *Tx) DeleteKernel(ctx context.Context, name string) (remaining int, err error) {
	k, err := t.Kernel(ctx, name)
	if err != nil {
		return 0, err
	}
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM kernels WHERE name = ?", name); err != nil {
		return 0, fmt.Errorf("deleting kernel %q: %w", name, err)
	}
	if err := t.tx.QueryRowContext(ctx, "SELECT count(*) FROM kernels WHERE id = ?", k.ID).Scan(&remaining); err != nil {
		return 0, fmt.Errorf("counting kernels of %s: %w", k.ID, err)
	}
	return remaining, nil
}
