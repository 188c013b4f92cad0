package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Image is one image record.
type Image struct {
	Name       string
	ID         string
	Digest     string
	RepoDigest string
	Platform   string
	Config     []byte
	Layers     int
	Size       int64
	Source     string
	CreatedAt  time.Time
}

const imageColumns = "name, id, digest, repo_digest, platform, config, layers, size, source, created_at"

func scanImage(row interface{ Scan(...any) error }) (Image, error) {
	var img Image
	var created string
	if err := row.Scan(&img.Name, &img.ID, &img.Digest, &img.RepoDigest, &img.Platform, &img.Config, &img.Layers, &img.Size, &img.Source, &created); err != nil {
		return Image{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, created)
	if err != nil {
		return Image{}, fmt.Errorf("image %q: created_at %q: %w", img.Name, created, err)
	}
	img.CreatedAt = t
	return img, nil
}

// PutImage inserts or replaces the record of img.Name.
func (t *Tx) PutImage(ctx context.Context, img Image) error {
	_, err := t.tx.ExecContext(ctx, "INSERT OR REPLACE INTO images("+imageColumns+") VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		img.Name, img.ID, img.Digest, img.RepoDigest, img.Platform, img.Config, img.Layers, img.Size, img.Source,
		img.CreatedAt.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("writing image %q: %w", img.Name, err)
	}
	return nil
}

// Image returns the record named name, or ErrNotFound.
func (t *Tx) Image(ctx context.Context, name string) (Image, error) {
	img, err := scanImage(t.tx.QueryRowContext(ctx, "SELECT "+imageColumns+" FROM images WHERE name = ?", name))
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, fmt.Errorf("image %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Image{}, fmt.Errorf("reading image %q: %w", name, err)
	}
	return img, nil
}

// Images lists every record, by name.
func (t *Tx) Images(ctx context.Context) ([]Image, error) {
	rows, err := t.tx.QueryContext(ctx, "SELECT "+imageColumns+" FROM images ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	defer rows.Close()
	var out []Image
	for rows.Next() {
		img, err := scanImage(rows)
		if err != nil {
			return nil, fmt.Errorf("listing images: %w", err)
		}
		out = append(out, img)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	return out, nil
}

// DeleteImage removes the record named name and returns how many records
// still use its id (and so its rootfs).
func (t *Tx) DeleteImage(ctx context.Context, name string) (remaining int, err error) {
	img, err := t.Image(ctx, name)
	if err != nil {
		return 0, err
	}
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM images WHERE name = ?", name); err != nil {
		return 0, fmt.Errorf("deleting image %q: %w", name, err)
	}
	if err := t.tx.QueryRowContext(ctx, "SELECT count(*) FROM images WHERE id = ?", img.ID).Scan(&remaining); err != nil {
		return 0, fmt.Errorf("counting images of %s: %w", img.ID, err)
	}
	return remaining, nil
}

// ImageByID returns a record of the image id, or ErrNotFound.
func (t *Tx) ImageByID(ctx context.Context, id string) (Image, error) {
	img, err := scanImage(t.tx.QueryRowContext(ctx, "SELECT "+imageColumns+" FROM images WHERE id = ? ORDER BY name LIMIT 1", id))
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, fmt.Errorf("image %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Image{}, fmt.Errorf("reading image %s: %w", id, err)
	}
	return img, nil
}
