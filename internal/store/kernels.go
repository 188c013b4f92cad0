package store

import (
	"context"
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

func scanKernel(row scanner) (Kernel, error) {
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
	return one(ctx, t, scanKernel, fmt.Sprintf("kernel %q", name), "SELECT "+kernelColumns+" FROM kernels WHERE name = ?", name)
}

// Kernels lists every record, newest first.
func (t *Tx) Kernels(ctx context.Context) ([]Kernel, error) {
	return all(ctx, t, scanKernel, "kernels", "SELECT "+kernelColumns+" FROM kernels ORDER BY created_at DESC, name")
}

// DeleteKernel removes the record named name and returns how many records
// still use its bundle.
func (t *Tx) DeleteKernel(ctx context.Context, name string) (remaining int, err error) {
	k, err := t.Kernel(ctx, name)
	if err != nil {
		return 0, err
	}
	return deleteNamed(ctx, t, "kernels", "kernel", name, k.ID)
}
