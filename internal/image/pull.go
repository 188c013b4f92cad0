package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/blobcache"
	"github.com/bangerdev/banger/internal/objdir"
	"github.com/bangerdev/banger/internal/ociref"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/rootfs"
	"github.com/bangerdev/banger/internal/store"
)

// Started is a pull or import in flight; the daemon answers with its
// summary and operations.wait follows it.
type Started = *opstate.Op[api.Image]

// Pull starts (or joins) the pull of a reference. Two pulls of the same
// reference and platform share one operation, provided both use the
// daemon's registry credentials or neither does: a caller who may not
// (Config.Credentials) pulls anonymously, and never joins a pull made
// with them.
func (s *Service) Pull(ctx context.Context, p api.ImagePullParams) (Started, error) {
	ref, err := ociref.Parse(p.Ref, p.Insecure)
	if err != nil {
		return nil, err
	}
	plat, err := parsePlatform(p.Platform)
	if err != nil {
		return nil, err
	}
	target := ociref.Normalize(ref)
	key := target + "|" + plat.String()
	var anonymous error // why the pull goes without the daemon's credentials
	if s.cfg.Credentials != nil {
		if anonymous = s.cfg.Credentials(ctx); anonymous != nil {
			key += "|anonymous"
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if op, ok := s.inflight[key]; ok {
		return op, nil
	}
	op := s.ops.Start(s.cfg.Lifetime, api.OpKindImagePull, target, func(ctx context.Context, op *opstate.Op[api.Image]) (api.Image, error) {
		defer func() {
			s.mu.Lock()
			delete(s.inflight, key)
			s.mu.Unlock()
		}()
		start := time.Now()
		img, err := s.pull(ctx, op, ref, plat, target, anonymous)
		if err != nil {
			s.cfg.Log.Warn("image pull failed", "ref", target, "err", err)
			return api.Image{}, err
		}
		s.cfg.Log.Info("image pulled", "ref", target, "id", img.ID, "took", time.Since(start).Round(time.Millisecond))
		s.event(api.EventImagePulled, img.Name, img.ID)
		return img, nil
	})
	s.inflight[key] = op
	return op, nil
}

func (s *Service) remoteOptions(ctx context.Context, plat *v1.Platform, anonymous bool) []remote.Option {
	auth := remote.WithAuthFromKeychain(s.cfg.Keychain)
	if anonymous {
		auth = remote.WithAuth(authn.Anonymous)
	}
	return []remote.Option{
		remote.WithContext(ctx),
		auth,
		remote.WithPlatform(*plat),
		remote.WithTransport(s.cfg.Transport),
		remote.WithJobs(s.cfg.Jobs),
	}
}

func (s *Service) pull(ctx context.Context, op *opstate.Op[api.Image], ref name.Reference, plat *v1.Platform, target string, anonymous error) (api.Image, error) {
	op.SetPhase("resolving")
	opts := s.remoteOptions(ctx, plat, anonymous != nil)
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return api.Image{}, registryError(target, ref, err, anonymous)
	}
	img, err := desc.Image() // picks the platform out of an index
	if err != nil {
		return api.Image{}, fmt.Errorf("resolving %s for %s: %w", target, plat, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return api.Image{}, fmt.Errorf("resolving %s: %w", target, err)
	}
	repoDigest := ""
	if desc.MediaType.IsIndex() {
		repoDigest = desc.Digest.String()
	}

	// Already here under this name and digest: nothing to fetch.
	var existing store.Image
	err = s.cfg.Store.View(ctx, func(tx *store.Tx) error {
		existing, err = tx.Image(ctx, target)
		return err
	})
	if err == nil && existing.Digest == digest.String() {
		if rp, _ := s.RootfsPath(existing.ID); fileExists(rp) {
			op.SetPhase("up to date")
			return s.toAPI(ctx, existing), nil
		}
	}

	rawConfig, cf, cfgName, layers, err := contents(img)
	if err != nil {
		return api.Image{}, fmt.Errorf("image %s: %w", target, err)
	}
	rec := store.Image{
		Name: target, ID: cfgName.String(), Digest: digest.String(), RepoDigest: repoDigest,
		Platform: platformOf(cf, plat), Config: rawConfig, Layers: len(layers), Source: "pull",
	}

	if rp, _ := s.RootfsPath(rec.ID); !fileExists(rp) {
		if err := s.download(ctx, op, target, layers); err != nil {
			return api.Image{}, err
		}
	}
	return s.installRecord(ctx, op, rec, func() ([]rootfs.Layer, error) {
		return s.cachedLayers(layers, cf.RootFS.DiffIDs)
	})
}

func platformOf(cf *v1.ConfigFile, fallback *v1.Platform) string {
	if cf.OS != "" && cf.Architecture != "" {
		p := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
		return p.String()
	}
	return fallback.String()
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// contents are what an image is built from: its config (as sent, and
// parsed), the config's digest (the image ID) and its layers, one per
// diff_id.
func contents(img v1.Image) (raw []byte, cf *v1.ConfigFile, id v1.Hash, layers []v1.Layer, err error) {
	if raw, err = img.RawConfigFile(); err != nil {
		return nil, nil, id, nil, fmt.Errorf("fetching the config: %w", err)
	}
	if cf, err = v1.ParseConfigFile(bytes.NewReader(raw)); err != nil {
		return nil, nil, id, nil, fmt.Errorf("reading the config: %w", err)
	}
	if id, err = img.ConfigName(); err != nil {
		return nil, nil, id, nil, fmt.Errorf("reading the config: %w", err)
	}
	if layers, err = img.Layers(); err != nil {
		return nil, nil, id, nil, fmt.Errorf("listing the layers: %w", err)
	}
	if len(layers) != len(cf.RootFS.DiffIDs) {
		return nil, nil, id, nil, fmt.Errorf("%d layers but %d diff_ids in its config", len(layers), len(cf.RootFS.DiffIDs))
	}
	return raw, cf, id, layers, nil
}

// download fetches the layers missing from the cache, a few at a time,
// with per-layer progress.
func (s *Service) download(ctx context.Context, op *opstate.Op[api.Image], target string, layers []v1.Layer) error {
	op.SetPhase("downloading")
	items := make([]opstate.Item, len(layers))
	var mu sync.Mutex
	report := func() {
		mu.Lock()
		defer mu.Unlock()
		op.SetItems(items, "bytes")
	}
	type job struct {
		i      int
		l      v1.Layer
		digest string
		size   int64
	}
	var jobs []job
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return fmt.Errorf("layer %d of %s: %w", i+1, target, err)
		}
		size, err := l.Size()
		if err != nil {
			return fmt.Errorf("layer %d of %s: %w", i+1, target, err)
		}
		if mt, err := l.MediaType(); err == nil && !mt.IsDistributable() {
			return fmt.Errorf("layer %d of %s: %w: foreign layers (%s) are not supported", i+1, target, api.ErrInvalidArgument, mt)
		}
		items[i] = opstate.Item{Name: api.ShortID(d.String()), Total: size}
		if s.cfg.Cache.Has(d.String(), size) {
			items[i].Done = size
			continue
		}
		jobs = append(jobs, job{i, l, d.String(), size})
	}
	report()

	work := make(chan job)
	errs := make(chan error, len(jobs))
	var wg sync.WaitGroup
	for range min(s.cfg.Jobs, max(len(jobs), 1)) {
		wg.Go(func() {
			for j := range work {
				errs <- s.fetch(ctx, j.l, j.digest, j.size, func(n int64) {
					mu.Lock()
					items[j.i].Done = n
					mu.Unlock()
					report()
				})
			}
		})
	}
	go func() {
		defer close(work)
		for _, j := range jobs {
			select {
			case work <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		if err != nil {
			all = append(all, err)
		}
	}
	if len(all) > 0 {
		return fmt.Errorf("pulling %s: %w", target, all[0])
	}
	return ctx.Err()
}

func (s *Service) fetch(ctx context.Context, l v1.Layer, digest string, size int64, progress func(int64)) error {
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("fetching layer %s: %w", api.ShortID(digest), err)
	}
	defer rc.Close()
	if err := s.cfg.Cache.Put(ctx, digest, size, rc, progress); err != nil {
		return fmt.Errorf("fetching layer %s: %w", api.ShortID(digest), err)
	}
	return nil
}

// cachedLayers opens each layer from the blob cache: its compressed
// digest is checked as it is read, it is decompressed whatever it is
// compressed with, and its uncompressed digest is checked against the
// image config's diff_id.
func (s *Service) cachedLayers(layers []v1.Layer, diffIDs []v1.Hash) ([]rootfs.Layer, error) {
	out := make([]rootfs.Layer, len(layers))
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		digest, diffID := d.String(), diffIDs[i].String()
		out[i] = rootfs.Layer{
			Name: fmt.Sprintf("layer %d (%s)", i+1, api.ShortID(digest)),
			Open: func() (io.ReadCloser, error) {
				rc, err := s.cfg.Cache.Open(digest)
				if err != nil {
					return nil, err
				}
				return uncompressed(rc, diffID)
			},
		}
	}
	return out, nil
}

// uncompressed decompresses a layer stream by sniffing it (gzip, zstd or
// plain tar), and verifies the result against diffID.
func uncompressed(rc io.ReadCloser, diffID string) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(rc, 64<<10)
	magic, _ := br.Peek(4)
	var r io.Reader
	var closeDec func()
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		gz, err := gzip.NewReader(br)
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("decompressing: %w", err)
		}
		r, closeDec = gz, func() { gz.Close() }
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("decompressing: %w", err)
		}
		r, closeDec = zr, zr.Close
	default:
		r, closeDec = br, func() {}
	}
	// The compressed stream must be read to its end too, so the blob's own
	// digest check runs: drain it once the decompressor is done.
	v := blobcache.NewVerifier(io.NopCloser(&drainAtEOF{r: r, under: br}), diffID)
	return &closer{Reader: v, close: func() error { closeDec(); return rc.Close() }}, nil
}

// drainAtEOF reads the rest of under when r ends, surfacing its errors
// (the compressed digest check).
type drainAtEOF struct {
	r     io.Reader
	under io.Reader
}

func (d *drainAtEOF) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if errors.Is(err, io.EOF) {
		if _, derr := io.Copy(io.Discard, d.under); derr != nil {
			return n, derr
		}
	}
	return n, err
}

type closer struct {
	io.Reader
	close func() error
}

func (c *closer) Close() error { return c.close() }

// installRecord builds the rootfs of rec.ID unless it exists, then records
// rec, under the install lock so a concurrent delete cannot interleave.
func (s *Service) installRecord(ctx context.Context, op *opstate.Op[api.Image], rec store.Image, open func() ([]rootfs.Layer, error)) (api.Image, error) {
	dir, err := s.rootfsDir(rec.ID)
	if err != nil {
		return api.Image{}, err
	}
	final := filepath.Join(dir, "rootfs.ext4")
	if !fileExists(final) {
		layers, err := open()
		if err != nil {
			return api.Image{}, err
		}
		op.SetPhase("building rootfs")
		stage, err := objdir.Stage(s.cfg.Dir, "rootfs", "image.install", "rootfs")
		if err != nil {
			return api.Image{}, fmt.Errorf("building the rootfs of %s: %w", rec.Name, err)
		}
		defer stage.Discard()
		tmp := stage.Path()
		f, err := os.Create(filepath.Join(tmp, "rootfs.ext4"))
		if err != nil {
			return api.Image{}, fmt.Errorf("building the rootfs of %s: %w", rec.Name, err)
		}
		start := time.Now()
		st, err := rootfs.Build(ctx, layers, f, s.cfg.Limits)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return api.Image{}, fmt.Errorf("building the rootfs of %s: %w", rec.Name, err)
		}
		s.cfg.Log.Info("rootfs built", "image", rec.Name, "id", rec.ID, "files", st.Files, "bytes", st.Bytes,
			"size", st.Size, "passes", st.Passes, "init", st.Init, "took", time.Since(start).Round(time.Millisecond))
		if st.Init != "" {
			if err := os.WriteFile(filepath.Join(tmp, initFile), []byte(st.Init), 0o644); err != nil {
				return api.Image{}, fmt.Errorf("building the rootfs of %s: %w", rec.Name, err)
			}
		}
		s.install.Lock()
		defer s.install.Unlock()
		if _, err := stage.Store(filepath.Base(dir)); err != nil && !fileExists(final) {
			return api.Image{}, fmt.Errorf("storing the rootfs of %s: %w", rec.Name, err)
		}
	} else {
		s.install.Lock()
		defer s.install.Unlock()
		if !fileExists(final) { // deleted while we looked
			return api.Image{}, fmt.Errorf("storing the rootfs of %s: removed concurrently; pull again", rec.Name)
		}
	}
	fi, err := os.Stat(final)
	if err != nil {
		return api.Image{}, err
	}
	rec.Size = fi.Size()
	rec.CreatedAt = time.Now().UTC()
	if err := s.cfg.Store.Update(ctx, func(tx *store.Tx) error { return tx.PutImage(ctx, rec) }); err != nil {
		return api.Image{}, err
	}
	return s.toAPI(ctx, rec), nil
}

// registryError names the usual registry failures and their fixes;
// anonymous, when set, is why the pull went without the daemon's
// credentials.
func registryError(target string, ref name.Reference, err error, anonymous error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("resolving %s: %w in the registry (%v)", target, api.ErrNotFound, err)
		case http.StatusUnauthorized, http.StatusForbidden:
			if anonymous != nil {
				return fmt.Errorf("resolving %s: %w; pulled anonymously: %v", target, err, anonymous)
			}
			return fmt.Errorf("resolving %s: %w; if it is private, log in with `docker login %s` (banger reads the docker config)", target, err, ref.Context().RegistryStr())
		}
	}
	return fmt.Errorf("resolving %s: %w", target, err)
}
