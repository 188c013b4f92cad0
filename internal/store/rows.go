package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// scanner is what a scan function reads: a *sql.Row or *sql.Rows.
type scanner interface{ Scan(...any) error }

// one is the single record query selects, read by scan; none is
// ErrNotFound. what names the record in errors ("image \"debian\"").
func one[T any](ctx context.Context, t *Tx, scan func(scanner) (T, error), what, query string, args ...any) (T, error) {
	v, err := scan(t.tx.QueryRowContext(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err != nil {
		return v, fmt.Errorf("reading %s: %w", what, err)
	}
	return v, nil
}

// all is every record query selects, read by scan. what names them in
// errors ("images").
func all[T any](ctx context.Context, t *Tx, scan func(scanner) (T, error), what, query string, args ...any) ([]T, error) {
	rows, err := t.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing %s: %w", what, err)
	}
	return out, nil
}

// deleteNamed removes the record named name from table (images or
// kernels) and counts the records left with the same id, which share
// its files on disk.
func deleteNamed(ctx context.Context, t *Tx, table, what, name, id string) (remaining int, err error) {
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM "+table+" WHERE name = ?", name); err != nil {
		return 0, fmt.Errorf("deleting %s %q: %w", what, name, err)
	}
	if err := t.tx.QueryRowContext(ctx, "SELECT count(*) FROM "+table+" WHERE id = ?", id).Scan(&remaining); err != nil {
		return 0, fmt.Errorf("counting %ss of %s: %w", what, id, err)
	}
	return remaining, nil
}
