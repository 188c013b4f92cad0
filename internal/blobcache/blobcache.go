// Package blobcache is the OCI blob cache: content-addressed files at
// <dir>/blobs/sha256/<hex>, as in an OCI image layout. A blob lands under
// its final name only once its digest and size have been verified, so any
// file found there is whole; the cache is purely a re-download saver and may
// be pruned at any time.
package blobcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrDigestMismatch means a blob's bytes do not hash to its digest.
var ErrDigestMismatch = errors.New("digest mismatch")

// ErrSizeMismatch means a blob is not as long as its descriptor says.
var ErrSizeMismatch = errors.New("size mismatch")

// ErrBadDigest means a digest string is not "sha256:" and 64 hex digits.
var ErrBadDigest = errors.New("unsupported digest")

// Cache is a blob cache rooted at a directory.
type Cache struct {
	dir string
}

// New returns the cache at dir (created on first write).
func New(dir string) *Cache { return &Cache{dir: dir} }

// Dir is the cache's root.
func (c *Cache) Dir() string { return c.dir }

// ParseDigest checks a digest and returns its hex part. Only sha256 is
// accepted; the check also keeps a hostile digest out of file paths.
func ParseDigest(digest string) (string, error) {
	hexPart, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexPart) != 64 {
		return "", fmt.Errorf("%w %q", ErrBadDigest, digest)
	}
	if _, err := hex.DecodeString(hexPart); err != nil || strings.ToLower(hexPart) != hexPart {
		return "", fmt.Errorf("%w %q", ErrBadDigest, digest)
	}
	return hexPart, nil
}

func (c *Cache) blobDir() string { return filepath.Join(c.dir, "blobs", "sha256") }

// Path is where the blob with digest lives (or would).
func (c *Cache) Path(digest string) (string, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return "", err
	}
	return filepath.Join(c.blobDir(), h), nil
}

// Has reports whether the blob is cached with the expected size.
func (c *Cache) Has(digest string, size int64) bool {
	p, err := c.Path(digest)
	if err != nil {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && (size < 0 || fi.Size() == size)
}

// Put stores the blob read from r, verifying its digest and size (size < 0:
// unknown). progress, when non-nil, is called with the bytes read so far.
// On any failure nothing is left behind.
func (c *Cache) Put(ctx context.Context, digest string, size int64, r io.Reader, progress func(int64)) (err error) {
	final, err := c.Path(digest)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.blobDir(), 0o700); err != nil {
		return fmt.Errorf("creating the blob cache: %w", err)
	}
	tmp, err := os.CreateTemp(c.blobDir(), ".partial-*")
	if err != nil {
		return fmt.Errorf("creating a temporary blob: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	w := io.MultiWriter(tmp, h)
	buf := make([]byte, 256<<10)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, rerr := r.Read(buf)
		if m > 0 {
			if _, err := w.Write(buf[:m]); err != nil {
				return fmt.Errorf("writing blob %s: %w", digest, err)
			}
			n += int64(m)
			if size >= 0 && n > size {
				return fmt.Errorf("blob %s: %w: more than the %d bytes announced", digest, ErrSizeMismatch, size)
			}
			if progress != nil {
				progress(n)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reading blob %s: %w", digest, rerr)
		}
	}
	if size >= 0 && n != size {
		return fmt.Errorf("blob %s: %w: got %d of %d bytes", digest, ErrSizeMismatch, n, size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("blob %s: %w: the bytes hash to %s", digest, ErrDigestMismatch, got)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing blob %s: %w", digest, err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("storing blob %s: %w", digest, err)
	}
	return nil
}

// Open opens a cached blob. The reader fails at EOF if the bytes no longer
// hash to the digest (a cache corrupted on disk is caught, not trusted).
func (c *Cache) Open(digest string) (io.ReadCloser, error) {
	p, err := c.Path(digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	return NewVerifier(f, digest), nil
}

// Verifier hashes what it reads and fails at EOF on a mismatch.
type Verifier struct {
	r      io.ReadCloser
	h      interface{ Sum([]byte) []byte }
	w      io.Writer
	digest string
}

// NewVerifier wraps r, which must yield the bytes of digest.
func NewVerifier(r io.ReadCloser, digest string) *Verifier {
	h := sha256.New()
	return &Verifier{r: r, h: h, w: h, digest: digest}
}

func (v *Verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.w.Write(p[:n])
	if errors.Is(err, io.EOF) {
		if got := "sha256:" + hex.EncodeToString(v.h.Sum(nil)); got != v.digest {
			return n, fmt.Errorf("%w: %s hashes to %s", ErrDigestMismatch, v.digest, got)
		}
	}
	return n, err
}

// Close closes the underlying reader.
func (v *Verifier) Close() error { return v.r.Close() }

// Usage tallies the cached blobs. A missing cache is empty, not an error.
func (c *Cache) Usage() (bytes int64, blobs int, err error) {
	err = filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			bytes += fi.Size()
			if !strings.HasPrefix(d.Name(), ".partial-") {
				blobs++
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("measuring the blob cache: %w", err)
	}
	return bytes, blobs, nil
}

// PruneResult says what a prune freed (or would free).
type PruneResult struct {
	Bytes int64
	Blobs int
}

// Prune empties the cache: tally, rename the cache aside, recreate it
// empty, remove the aside directory. The rename makes the switch atomic: a
// pull that starts meanwhile sees either the old cache or the new empty
// one, and files it holds open survive the removal. dryRun only tallies.
func (c *Cache) Prune(dryRun bool) (PruneResult, error) {
	bytes, blobs, err := c.Usage()
	if err != nil {
		return PruneResult{}, err
	}
	res := PruneResult{Bytes: bytes, Blobs: blobs}
	if dryRun {
		return res, nil
	}
	if _, err := os.Stat(c.dir); errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	aside, err := os.MkdirTemp(filepath.Dir(c.dir), "."+filepath.Base(c.dir)+".pruning-")
	if err != nil {
		return PruneResult{}, fmt.Errorf("pruning the blob cache: %w", err)
	}
	target := filepath.Join(aside, "old")
	if err := os.Rename(c.dir, target); err != nil {
		os.Remove(aside)
		return PruneResult{}, fmt.Errorf("pruning the blob cache: %w", err)
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return PruneResult{}, fmt.Errorf("recreating the blob cache: %w", err)
	}
	if err := os.RemoveAll(aside); err != nil {
		return PruneResult{}, fmt.Errorf("removing the pruned blob cache: %w", err)
	}
	return res, nil
}

// Sweep removes what an interrupted write or prune left behind.
func (c *Cache) Sweep() error {
	parts, _ := filepath.Glob(filepath.Join(c.blobDir(), ".partial-*"))
	asides, _ := filepath.Glob(filepath.Join(filepath.Dir(c.dir), "."+filepath.Base(c.dir)+".pruning-*"))
	var errs []error
	for _, p := range append(parts, asides...) {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
