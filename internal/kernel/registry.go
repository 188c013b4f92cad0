package kernel

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/ociref"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/store"
)

// LabelVersion marks an image as a banger kernel and names its version.
const LabelVersion = "dev.banger.kernel.version"

func (s *Service) remoteOptions(ctx context.Context, anonymous bool) []remote.Option {
	kc := s.cfg.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	auth := remote.WithAuthFromKeychain(kc)
	if anonymous {
		auth = remote.WithAuth(authn.Anonymous)
	}
	tr := s.cfg.Transport
	if tr == nil {
		tr = http.DefaultTransport
	}
	return []remote.Option{remote.WithContext(ctx), auth, remote.WithTransport(tr),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH})}
}

// credentials is why the caller of ctx may not have the daemon use its
// registry credentials, or nil.
func (s *Service) credentials(ctx context.Context) error {
	if s.cfg.Credentials == nil {
		return nil
	}
	return s.cfg.Credentials(ctx)
}

// Pull starts pulling a kernel image: one banger pushed, or any image
// holding /boot/vmlinu[xz]-V and /lib/modules/V. A caller who may not use
// the daemon's registry credentials pulls anonymously.
func (s *Service) Pull(ctx context.Context, p api.KernelPullParams) (*opstate.Op[api.Kernel], error) {
	ref, err := ociref.Parse(p.Ref, p.Insecure)
	if err != nil {
		return nil, err
	}
	if p.Name != "" && !validName.MatchString(p.Name) {
		return nil, fmt.Errorf("%w: kernel name %q: use letters, digits, '.', '_' and '-'", api.ErrInvalidArgument, p.Name)
	}
	anonymous := s.credentials(ctx)
	return s.ops.Start(s.cfg.Lifetime, api.OpKindKernelPull, ref.Name(), func(ctx context.Context, op *opstate.Op[api.Kernel]) (api.Kernel, error) {
		start := time.Now()
		k, err := s.install(ctx, op, p.Name, func(ctx context.Context, op *opstate.Op[api.Kernel], staging string) (store.Kernel, error) {
			rec := store.Kernel{Source: "pull", Origin: ref.Name()}
			op.SetPhase("resolving")
			img, err := remote.Image(ref, s.remoteOptions(ctx, anonymous != nil)...)
			if err != nil {
				if anonymous != nil {
					return rec, fmt.Errorf("pulling kernel %s: %w; pulled anonymously: %v", ref.Name(), err, anonymous)
				}
				return rec, fmt.Errorf("pulling kernel %s: %w", ref.Name(), err)
			}
			op.SetPhase("downloading and unpacking")
			rc := mutate.Extract(img)
			defer rc.Close()
			rec.Version, err = unpackTree(ctx, tar.NewReader(rc), staging, ref.Name())
			return rec, err
		})
		if err != nil {
			s.cfg.Log.Warn("kernel pull failed", "ref", ref.Name(), "err", err)
			return api.Kernel{}, err
		}
		s.cfg.Log.Info("kernel pulled", "ref", ref.Name(), "name", k.Name, "took", time.Since(start).Round(time.Millisecond))
		return k, nil
	}), nil
}

// Push publishes a kernel as an image with one layer holding
// /boot/vmlinuz-V, /boot/config-V and /lib/modules/V (docs/kernel-images.md),
// with the daemon's registry credentials: refused to a caller who may not
// use them.
func (s *Service) Push(ctx context.Context, p api.KernelPushParams) (api.KernelPushResult, error) {
	if err := s.credentials(ctx); err != nil {
		return api.KernelPushResult{}, fmt.Errorf("kernel push: %w", err)
	}
	ref, err := ociref.Parse(p.Ref, p.Insecure)
	if err != nil {
		return api.KernelPushResult{}, err
	}
	k, err := s.Show(ctx, api.KernelRefParams{Name: p.Name})
	if err != nil {
		return api.KernelPushResult{}, err
	}
	if err := bundle.CheckRelease(k.Version); err != nil { // a record from before releases were checked
		return api.KernelPushResult{}, fmt.Errorf("%w: kernel %s: %v; import it again", api.ErrInvalidArgument, k.Name, err)
	}
	layerTar, err := os.CreateTemp(s.cfg.Dir, ".push-")
	if err != nil {
		return api.KernelPushResult{}, err
	}
	defer os.Remove(layerTar.Name())
	defer layerTar.Close()
	if err := writeBundleTar(layerTar, k.Dir, k.Version); err != nil {
		return api.KernelPushResult{}, err
	}
	layer, err := tarball.LayerFromFile(layerTar.Name())
	if err != nil {
		return api.KernelPushResult{}, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return api.KernelPushResult{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return api.KernelPushResult{}, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Labels = map[string]string{LabelVersion: k.Version}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return api.KernelPushResult{}, err
	}
	if err := remote.Write(ref, img, s.remoteOptions(ctx, false)...); err != nil {
		return api.KernelPushResult{}, fmt.Errorf("pushing kernel %s to %s: %w", k.Name, ref.Name(), err)
	}
	d, err := img.Digest()
	if err != nil {
		return api.KernelPushResult{}, err
	}
	s.cfg.Log.Info("kernel pushed", "name", k.Name, "ref", ref.Name(), "digest", d)
	return api.KernelPushResult{Ref: ref.Name(), Digest: d.String()}, nil
}

// writeBundleTar lays a bundle out as a kernel tree.
func writeBundleTar(w io.Writer, dir, version string) error {
	tw := tar.NewWriter(w)
	add := func(src, name string) error {
		f, err := os.Open(src)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	}
	if err := add(filepath.Join(dir, bundle.FileKernel), "boot/vmlinuz-"+version); err != nil {
		return err
	}
	if err := add(filepath.Join(dir, bundle.FileConfig), "boot/config-"+version); err != nil {
		return err
	}
	modDir := filepath.Join(dir, bundle.DirModules)
	err := filepath.WalkDir(modDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(modDir, p)
		return add(p, "lib/modules/"+version+"/"+filepath.ToSlash(rel))
	})
	if err != nil {
		return fmt.Errorf("packing the modules: %w", err)
	}
	return tw.Close()
}
