package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/blobcache"
	"github.com/bangerdev/banger/internal/ociref"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/rootfs"
	"github.com/bangerdev/banger/internal/store"
)

// Import starts importing a docker-archive tarball (`docker save`) or an
// OCI image layout directory.
func (s *Service) Import(ctx context.Context, p api.ImageImportParams) (Started, error) {
	if !filepath.IsAbs(p.Path) {
		return nil, fmt.Errorf("%w: import path %q must be absolute", api.ErrInvalidArgument, p.Path)
	}
	plat, err := parsePlatform(p.Platform)
	if err != nil {
		return nil, err
	}
	var wantName string
	if p.Name != "" {
		ref, err := ociref.Parse(p.Name, false)
		if err != nil {
			return nil, err
		}
		wantName = ociref.Normalize(ref)
	}
	read, release := p.Path, func() {}
	if s.cfg.HostFile != nil {
		if read, release, err = s.cfg.HostFile(ctx, p.Path); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(read); err != nil {
		release()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("importing %s: %w", p.Path, api.ErrNotFound)
		}
		return nil, fmt.Errorf("%w: importing %s: %v", api.ErrInvalidArgument, p.Path, err)
	}
	op := s.ops.Start(s.cfg.Lifetime, api.OpKindImageImport, p.Path, func(ctx context.Context, op *opstate.Op[api.Image]) (api.Image, error) {
		defer release()
		start := time.Now()
		img, err := s.importImage(ctx, op, read, p.Path, wantName, plat)
		if err != nil {
			s.cfg.Log.Warn("image import failed", "path", p.Path, "err", err)
			return api.Image{}, err
		}
		s.cfg.Log.Info("image imported", "path", p.Path, "name", img.Name, "id", img.ID, "took", time.Since(start).Round(time.Millisecond))
		s.event(api.EventImageImported, img.Name, img.ID)
		return img, nil
	})
	return op, nil
}

// importImage reads path, the file or directory named as shown.
func (s *Service) importImage(ctx context.Context, op *opstate.Op[api.Image], path, shown, wantName string, plat *v1.Platform) (api.Image, error) {
	op.SetPhase("reading")
	fi, err := os.Stat(path)
	if err != nil {
		return api.Image{}, fmt.Errorf("importing %s: %w", shown, err)
	}
	var (
		img         v1.Image
		digest      string
		defaultName string
	)
	if fi.IsDir() {
		img, digest, defaultName, err = fromLayout(path, plat)
	} else {
		img, defaultName, err = fromArchive(path, wantName)
	}
	if err != nil {
		return api.Image{}, err
	}
	rawConfig, cf, cfgName, layers, err := contents(img)
	if err != nil {
		return api.Image{}, fmt.Errorf("importing %s: %w", shown, err)
	}
	recName := wantName
	if recName == "" {
		recName = defaultName
	}
	if recName == "" {
		recName = "import/" + api.ShortID(cfgName.String())
	}
	rec := store.Image{
		Name: recName, ID: cfgName.String(), Digest: digest, Platform: platformOf(cf, plat),
		Config: rawConfig, Layers: len(layers), Source: "import",
	}
	return s.installRecord(ctx, op, rec, func() ([]rootfs.Layer, error) {
		out := make([]rootfs.Layer, len(layers))
		for i, l := range layers {
			diffID := cf.RootFS.DiffIDs[i].String()
			out[i] = rootfs.Layer{
				Name: fmt.Sprintf("layer %d (%s)", i+1, api.ShortID(diffID)),
				Open: func() (io.ReadCloser, error) {
					rc, err := l.Uncompressed()
					if err != nil {
						return nil, err
					}
					return blobcache.NewVerifier(rc, diffID), nil
				},
			}
		}
		return out, nil
	})
}

// fromLayout picks the image for plat out of an OCI image layout.
func fromLayout(dir string, plat *v1.Platform) (v1.Image, string, string, error) {
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return nil, "", "", fmt.Errorf("%w: %s is a directory but not an OCI image layout (no oci-layout file)", api.ErrInvalidArgument, dir)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, "", "", fmt.Errorf("%w: reading the OCI layout %s: %v", api.ErrInvalidArgument, dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, "", "", fmt.Errorf("%w: reading the OCI layout %s: %v", api.ErrInvalidArgument, dir, err)
	}
	var candidates []v1.Descriptor
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsImage():
			candidates = append(candidates, d)
		case d.MediaType.IsIndex():
			// One level of nesting, as `crane`/`skopeo` write it.
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, "", "", fmt.Errorf("reading the OCI layout %s: %w", dir, err)
			}
			cm, err := child.IndexManifest()
			if err != nil {
				return nil, "", "", fmt.Errorf("reading the OCI layout %s: %w", dir, err)
			}
			for _, c := range cm.Manifests {
				if c.MediaType.IsImage() {
					if c.Annotations == nil {
						c.Annotations = d.Annotations
					}
					candidates = append(candidates, c)
				}
			}
		}
	}
	if len(candidates) > 1 {
		var matching []v1.Descriptor
		for _, d := range candidates {
			if d.Platform == nil || d.Platform.Satisfies(*plat) {
				matching = append(matching, d)
			}
		}
		candidates = matching
	}
	switch len(candidates) {
	case 0:
		return nil, "", "", fmt.Errorf("%w: the OCI layout %s holds no image for %s", api.ErrNotFound, dir, plat)
	case 1:
	default:
		return nil, "", "", fmt.Errorf("%w: the OCI layout %s holds %d images for %s; keep one", api.ErrInvalidArgument, dir, len(candidates), plat)
	}
	d := candidates[0]
	img, err := layout.Path(dir).Image(d.Digest)
	if err != nil {
		return nil, "", "", fmt.Errorf("reading the OCI layout %s: %w", dir, err)
	}
	refName := ""
	if n := d.Annotations["org.opencontainers.image.ref.name"]; n != "" {
		if ref, err := name.ParseReference(n); err == nil && strings.ContainsAny(n, "/:") {
			refName = ociref.Normalize(ref)
		}
	}
	return img, d.Digest.String(), refName, nil
}

// fromArchive opens the image of a docker-archive tarball: its only one,
// or the one tagged wantName.
func fromArchive(path, wantName string) (v1.Image, string, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(path) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %s is not a docker-archive tarball (`docker save` output) or an OCI layout directory: %v", api.ErrInvalidArgument, path, err)
	}
	if len(m) == 0 {
		return nil, "", fmt.Errorf("%w: %s holds no image", api.ErrInvalidArgument, path)
	}
	var tags []string
	for _, d := range m {
		tags = append(tags, d.RepoTags...)
	}
	var tag *name.Tag
	pick := ""
	switch {
	case wantName != "" && len(m) > 1:
		for _, t := range tags {
			if ref, err := name.NewTag(t); err == nil && ociref.Normalize(ref) == wantName {
				tag, pick = &ref, ociref.Normalize(ref)
			}
		}
		if tag == nil {
			return nil, "", fmt.Errorf("%w: %s holds %d images and none is tagged %s; its tags: %s", api.ErrInvalidArgument, path, len(m), wantName, strings.Join(tags, ", "))
		}
	case len(m) > 1:
		return nil, "", fmt.Errorf("%w: %s holds %d images; pass --name with one of its tags: %s", api.ErrInvalidArgument, path, len(m), strings.Join(tags, ", "))
	case len(m[0].RepoTags) > 0:
		t, err := name.NewTag(m[0].RepoTags[0])
		if err == nil {
			tag, pick = &t, ociref.Normalize(t)
		}
	}
	img, err := tarball.Image(opener, tag)
	if err != nil {
		return nil, "", fmt.Errorf("%w: reading %s: %v", api.ErrInvalidArgument, path, err)
	}
	return img, pick, nil
}
