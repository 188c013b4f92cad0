// Package image is the image service: it pulls images from registries and
// imports them from files, builds each one's read-only root file system
// (internal/rootfs), keeps the records in the store and the layer blobs in
// the blob cache, and deletes and prunes them.
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/blobcache"
	"github.com/bangerdev/banger/internal/objdir"
	"github.com/bangerdev/banger/internal/ociref"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/rootfs"
	"github.com/bangerdev/banger/internal/store"
)

// Config wires a Service.
type Config struct {
	Store store.Access
	Cache *blobcache.Cache
	// Dir holds one directory per image ID with its rootfs.ext4.
	Dir    string
	Log    *slog.Logger
	Limits rootfs.Limits
	// Lifetime is the parent of every operation (the daemon's life).
	Lifetime context.Context
	// Retention is how long finished operations stay listed.
	Retention time.Duration
	// UsedBy counts the VMs using an image ID, in the caller's
	// transaction (the store takes one at a time); nil means none do.
	UsedBy func(ctx context.Context, tx *store.Tx, id string) (running, stopped int, err error)
	// Keychain resolves registry credentials (default: the docker config).
	Keychain authn.Keychain
	// Credentials says whether the caller of a request may have the
	// daemon use Keychain for it (peer.Host.Credentials): a caller it
	// refuses pulls anonymously. nil: every caller may.
	Credentials func(ctx context.Context) error
	// Transport reaches registries (default: http.DefaultTransport).
	Transport http.RoundTripper
	// Jobs bounds parallel layer downloads (default 3).
	Jobs int
	// HostFile is the path to read for a host path the request's caller
	// named, until release (internal/peer: the caller's rights checked);
	// nil reads every path as named.
	HostFile func(ctx context.Context, path string) (use string, release func(), err error)
	// Event is told of each image pulled, imported and deleted; nil
	// tells no one.
	Event func(api.Event)
}

// Service is the image service.
type Service struct {
	cfg Config
	ops *opstate.Registry[api.Image]

	mu       sync.Mutex
	inflight map[string]*opstate.Op[api.Image] // by pull key: one op per ref and platform

	// install serialises the steps that tie records to rootfs directories
	// (reuse-or-install then record; delete record then rootfs), so a pull
	// never records a rootfs a concurrent delete is removing.
	install sync.Mutex
}

// New returns a Service and removes what an interrupted run left behind.
func New(cfg Config) (*Service, error) {
	if cfg.Keychain == nil {
		cfg.Keychain = authn.DefaultKeychain
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport
	}
	if cfg.Jobs <= 0 {
		cfg.Jobs = 3
	}
	if cfg.Lifetime == nil {
		cfg.Lifetime = context.Background()
	}
	if cfg.Retention <= 0 {
		cfg.Retention = time.Hour
	}
	if cfg.Limits == (rootfs.Limits{}) {
		cfg.Limits = rootfs.DefaultLimits()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", cfg.Dir, err)
	}
	s := &Service{cfg: cfg, ops: opstate.NewRegistry[api.Image](cfg.Retention, time.Now), inflight: map[string]*opstate.Op[api.Image]{}}
	if err := s.sweep(); err != nil {
		cfg.Log.Warn("cleaning up after an interrupted run", "err", err)
	}
	return s, nil
}

// Operations is the service's operations registry, for operations.*.
func (s *Service) Operations() *opstate.Registry[api.Image] { return s.ops }

// sweep makes the images directory agree with the store after a daemon
// that died mid-request (objdir.Sweep: staging goes, a rootfs no record
// owns goes, a rootfs set aside by a delete that never committed comes
// back), and removes the cache's partial blobs.
func (s *Service) sweep() error {
	var errs []error
	var recorded map[string]bool
	if s.cfg.Store != nil {
		recorded = map[string]bool{}
		ctx := context.Background()
		err := s.cfg.Store.View(ctx, func(tx *store.Tx) error {
			imgs, err := tx.Images(ctx)
			for _, img := range imgs {
				if dir, err := s.rootfsDir(img.ID); err == nil {
					recorded[filepath.Base(dir)] = true
				}
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("listing images: %w", err)
		}
	}
	errs = append(errs, objdir.Sweep(s.cfg.Dir, recorded, s.cfg.Log, "image rootfs"))
	errs = append(errs, s.cfg.Cache.Sweep())
	return errors.Join(errs...)
}

// rootfsDir is where the rootfs of an image ID lives.
func (s *Service) rootfsDir(id string) (string, error) {
	h, err := blobcache.ParseDigest(id)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.cfg.Dir, h), nil
}

// RootfsPath is the rootfs image of an image ID.
func (s *Service) RootfsPath(id string) (string, error) {
	dir, err := s.rootfsDir(id)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "rootfs.ext4"), nil
}

// initFile, beside an image's rootfs, names the systemd found in it
// when it was built (rootfs.Stats.Init); absent, the image has none.
const initFile = "init"

// initOf is the systemd the rootfs of id was built with; "" for none,
// or for a rootfs built before banger looked.
func (s *Service) initOf(id string) string {
	dir, err := s.rootfsDir(id)
	if err != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(dir, initFile))
	if err != nil || !rootfs.IsInit(string(b)) {
		return ""
	}
	return string(b)
}

func hostPlatform() string { return "linux/" + runtime.GOARCH }

func parsePlatform(p string) (*v1.Platform, error) {
	if p == "" {
		p = hostPlatform()
	}
	plat, err := v1.ParsePlatform(p)
	if err != nil || plat.OS == "" || plat.Architecture == "" {
		return nil, fmt.Errorf("%w: platform %q is not os/arch[/variant], e.g. linux/amd64", api.ErrInvalidArgument, p)
	}
	return plat, nil
}

// toAPI turns a record into its public shape.
func (s *Service) toAPI(ctx context.Context, rec store.Image) api.Image {
	img := api.Image{
		Name: rec.Name, ID: rec.ID, Digest: rec.Digest, RepoDigest: rec.RepoDigest, Platform: rec.Platform,
		Layers: rec.Layers, Size: rec.Size, Source: rec.Source, CreatedAt: rec.CreatedAt,
	}
	img.Rootfs, _ = s.RootfsPath(rec.ID)
	img.Init = s.initOf(rec.ID)
	var cf v1.ConfigFile
	if err := json.Unmarshal(rec.Config, &cf); err == nil {
		img.Config = api.ImageConfig{
			Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Env: cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir, User: cf.Config.User,
		}
		if !cf.Created.IsZero() {
			t := cf.Created.Time
			img.Config.Created = &t
		}
	}
	if s.cfg.UsedBy != nil {
		_ = s.cfg.Store.View(ctx, func(tx *store.Tx) error {
			running, stopped, err := s.cfg.UsedBy(ctx, tx, rec.ID)
			img.UsedBy = running + stopped
			return err
		})
	}
	return img
}

// find looks an image up by name (as given or normalized) or by a unique
// prefix (at least 6 hex digits) of its ID.
func (s *Service) find(ctx context.Context, tx *store.Tx, q string) (store.Image, error) {
	var spellings []string
	if ref, err := name.ParseReference(q); err == nil {
		spellings = append(spellings, ociref.Normalize(ref))
	}
	rec, found, err := store.Lookup[store.Image]{
		What:   "image",
		ByName: func(n string) (store.Image, error) { return tx.Image(ctx, n) },
		All:    func() ([]store.Image, error) { return tx.Images(ctx) },
		ID:     func(r store.Image) string { return r.ID },
	}.Find(q, spellings...)
	if found || err != nil {
		return rec, err
	}
	return store.Image{}, fmt.Errorf("image %q: %w (see `banger image list`; `banger image pull %s` fetches it)", q, api.ErrNotFound, q)
}

// List returns every image.
func (s *Service) List(ctx context.Context) (api.ImageListResult, error) {
	res := api.ImageListResult{Images: []api.Image{}}
	var recs []store.Image
	err := s.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		recs, err = tx.Images(ctx)
		return err
	})
	if err != nil {
		return res, err
	}
	for _, rec := range recs {
		res.Images = append(res.Images, s.toAPI(ctx, rec))
	}
	return res, nil
}

// Show returns one image.
func (s *Service) Show(ctx context.Context, p api.ImageRefParams) (api.Image, error) {
	var rec store.Image
	err := s.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		rec, err = s.find(ctx, tx, p.Name)
		return err
	})
	if err != nil {
		return api.Image{}, err
	}
	return s.toAPI(ctx, rec), nil
}

// Resolve returns the image a VM should boot: its record and rootfs path.
func (s *Service) Resolve(ctx context.Context, nameOrID string) (api.Image, error) {
	return s.Show(ctx, api.ImageRefParams{Name: nameOrID})
}

// Delete removes an image's record, and its rootfs once no other name
// uses it. It refuses while VMs use the image, unless force is set and
// all of them are stopped.
func (s *Service) Delete(ctx context.Context, p api.ImageDeleteParams) (api.ImageDeleteResult, error) {
	s.install.Lock()
	defer s.install.Unlock()
	var res api.ImageDeleteResult
	err := objdir.Delete(s.cfg.Dir, "image.delete", "rootfs", s.cfg.Log, func(setAside func(string) error) error {
		return s.cfg.Store.Update(ctx, func(tx *store.Tx) error {
			rec, err := s.find(ctx, tx, p.Name)
			if err != nil {
				return err
			}
			res.Name, res.ID = rec.Name, rec.ID
			if s.cfg.UsedBy != nil {
				running, stopped, err := s.cfg.UsedBy(ctx, tx, rec.ID)
				if err != nil {
					return fmt.Errorf("checking the VMs of image %s: %w", rec.Name, err)
				}
				switch {
				case running > 0:
					return fmt.Errorf("image %s: %w by %d running VM(s); stop and delete them first", rec.Name, api.ErrInUse, running)
				case stopped > 0 && !p.Force:
					return fmt.Errorf("image %s: %w by %d stopped VM(s); delete them first, or pass --force (they will not start again)", rec.Name, api.ErrInUse, stopped)
				}
			}
			remaining, err := tx.DeleteImage(ctx, rec.Name)
			if err != nil {
				return err
			}
			if remaining > 0 {
				return nil
			}
			// Set aside inside the transaction: if the commit fails, or the
			// daemon dies before it, the rootfs comes back (sweep).
			dir, err := s.rootfsDir(rec.ID)
			if err != nil {
				return err
			}
			if fi, err := os.Stat(filepath.Join(dir, "rootfs.ext4")); err == nil {
				res.BytesFreed = fi.Size()
			}
			if err := setAside(filepath.Base(dir)); err != nil {
				return fmt.Errorf("removing the rootfs of %s: %w", rec.Name, err)
			}
			res.RootfsRemoved = true
			return nil
		})
	})
	if err != nil {
		return api.ImageDeleteResult{}, err
	}
	s.cfg.Log.Info("image deleted", "name", res.Name, "id", res.ID, "rootfs_removed", res.RootfsRemoved)
	s.event(api.EventImageDeleted, res.Name, res.ID)
	return res, nil
}

// event tells cfg.Event of an image.
func (s *Service) event(typ, name, id string) {
	if s.cfg.Event != nil {
		s.cfg.Event(api.Event{Type: typ, Image: name, Detail: id})
	}
}

// PruneCache empties the blob cache (or, dry, says what that would free).
func (s *Service) PruneCache(_ context.Context, p api.ImageCachePruneParams) (api.ImageCachePruneResult, error) {
	r, err := s.cfg.Cache.Prune(p.DryRun)
	if err != nil {
		return api.ImageCachePruneResult{}, err
	}
	if !p.DryRun {
		s.cfg.Log.Info("blob cache pruned", "bytes", r.Bytes, "blobs", r.Blobs)
	}
	return api.ImageCachePruneResult{BytesFreed: r.Bytes, BlobsFreed: r.Blobs, DryRun: p.DryRun, CacheDir: s.cfg.Cache.Dir()}, nil
}
