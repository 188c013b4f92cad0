package store

import (
	"context"
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

func scanImage(row scanner) (Image, error) {
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
	return one(ctx, t, scanImage, fmt.Sprintf("image %q", name), "SELECT "+imageColumns+" FROM images WHERE name = ?", name)
}

// Images lists every record, by name.
func (t *Tx) Images(ctx context.Context) ([]Image, error) {
	return all(ctx, t, scanImage, "images", "SELECT "+imageColumns+" FROM images ORDER BY name")
}

// DeleteImage removes the record named name and returns how many records
// still use its id (and so its rootfs).
func (t *Tx) DeleteImage(ctx context.Context, name string) (remaining int, err error) {
	img, err := t.Image(ctx, name)
	if err != nil {
		return 0, err
	}
	return deleteNamed(ctx, t, "images", "image", name, img.ID)
}

// ImageByID returns a record of the image id, or ErrNotFound.
func (t *Tx) ImageByID(ctx context.Context, id string) (Image, error) {
	return one(ctx, t, scanImage, "image "+id, "SELECT "+imageColumns+" FROM images WHERE id = ? ORDER BY name LIMIT 1", id)
}
