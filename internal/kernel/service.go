// Package kernel is the kernel service: it imports kernel bundles (from a
// Debian package, the host distribution's own kernel package, or files),
// stores each once by the digest of its manifest, and lists and deletes
// them.
package kernel

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/deb"
	"github.com/bangerdev/banger/internal/kmod"
	"github.com/bangerdev/banger/internal/objdir"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/store"
)

// maxBundle bounds what one import may write.
const maxBundle = 8 << 30

// Config wires a Service.
type Config struct {
	Store     store.Access
	Dir       string // one directory per bundle ID
	Log       *slog.Logger
	Lifetime  context.Context
	Retention time.Duration
	// UsedBy counts the VMs using a bundle ID, in the caller's
	// transaction (the store takes one at a time); nil means none do.
	UsedBy func(ctx context.Context, tx *store.Tx, id string) (int, error)
	// Keychain and Transport reach registries for kernel pull and push
	// (defaults: the docker config, http.DefaultTransport).
	Keychain  authn.Keychain
	Transport http.RoundTripper
	// Credentials says whether the caller of a request may have the
	// daemon use Keychain for it (peer.Host.Credentials): a caller it
	// refuses pulls anonymously and may not push. nil: every caller may.
	Credentials func(ctx context.Context) error
	// FetchDebian downloads the distribution's kernel package into dir and
	// returns its path (default: apt-get download linux-image-amd64's
	// current dependency).
	FetchDebian func(ctx context.Context, dir string) (string, error)
	// HostFile is the path to read for a host path the request's caller
	// named, until release (internal/peer: the caller's rights checked);
	// nil reads every path as named.
	HostFile func(ctx context.Context, path string) (use string, release func(), err error)
}

// Service is the kernel service.
type Service struct {
	cfg       Config
	ops       *opstate.Registry[api.Kernel]
	installMu sync.Mutex // orders bundle installs against deletes
}

// New returns a Service, sweeping what an interrupted import left.
func New(cfg Config) (*Service, error) {
	if cfg.Lifetime == nil {
		cfg.Lifetime = context.Background()
	}
	if cfg.Retention <= 0 {
		cfg.Retention = time.Hour
	}
	if cfg.FetchDebian == nil {
		cfg.FetchDebian = aptDownload
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", cfg.Dir, err)
	}
	s := &Service{cfg: cfg, ops: opstate.NewRegistry[api.Kernel](cfg.Retention, time.Now)}
	if err := s.sweep(cfg.Lifetime); err != nil {
		return nil, err
	}
	return s, nil
}

// sweep makes the bundles directory agree with the store after a daemon
// that died mid-request (objdir.Sweep).
func (s *Service) sweep(ctx context.Context) error {
	var recorded map[string]bool
	if s.cfg.Store != nil {
		recorded = map[string]bool{}
		err := s.cfg.Store.View(ctx, func(tx *store.Tx) error {
			ks, err := tx.Kernels(ctx)
			for _, k := range ks {
				recorded[filepath.Base(s.bundleDir(k.ID))] = true
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("listing kernels: %w", err)
		}
	}
	if err := objdir.Sweep(s.cfg.Dir, recorded, s.cfg.Log, "kernel bundle"); err != nil {
		s.cfg.Log.Warn("cleaning up after an interrupted run", "err", err)
	}
	return nil
}

// Operations is the service's operations registry.
func (s *Service) Operations() *opstate.Registry[api.Kernel] { return s.ops }

func (s *Service) bundleDir(id string) string {
	return filepath.Join(s.cfg.Dir, strings.TrimPrefix(id, "sha256:"))
}

// Import starts an import.
func (s *Service) Import(ctx context.Context, p api.KernelImportParams) (*opstate.Op[api.Kernel], error) {
	n := 0
	for _, set := range []bool{p.Deb != "", p.Debian, p.Kernel != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("%w: give exactly one of --deb FILE, --debian or --kernel FILE", api.ErrInvalidArgument)
	}
	if p.Modules != "" && p.Kernel == "" {
		return nil, fmt.Errorf("%w: --modules goes with --kernel", api.ErrInvalidArgument)
	}
	if p.Name != "" && !validName.MatchString(p.Name) {
		return nil, fmt.Errorf("%w: kernel name %q: use letters, digits, '.', '_' and '-'", api.ErrInvalidArgument, p.Name)
	}
	read, release, err := s.hostFiles(ctx, p)
	if err != nil {
		return nil, err
	}
	target := p.Deb + p.Kernel
	if p.Debian {
		target = "debian:linux-image-amd64"
	}
	return s.ops.Start(s.cfg.Lifetime, api.OpKindKernelImport, target, func(ctx context.Context, op *opstate.Op[api.Kernel]) (api.Kernel, error) {
		defer release()
		start := time.Now()
		k, err := s.install(ctx, op, p.Name, s.importSource(read, p))
		if err != nil {
			s.cfg.Log.Warn("kernel import failed", "from", target, "err", err)
			return api.Kernel{}, err
		}
		s.cfg.Log.Info("kernel imported", "name", k.Name, "version", k.Version, "modules", k.Modules, "took", time.Since(start).Round(time.Millisecond))
		return k, nil
	}), nil
}

// hostFiles checks the host files p names, and gives the params to
// read them by (HostFile's paths), held until release.
func (s *Service) hostFiles(ctx context.Context, p api.KernelImportParams) (api.KernelImportParams, func(), error) {
	var held []func()
	release := func() {
		for _, r := range held {
			r()
		}
	}
	read := p
	for _, f := range []*string{&read.Deb, &read.Kernel, &read.Modules} {
		if *f == "" {
			continue
		}
		if !filepath.IsAbs(*f) {
			release()
			return p, nil, fmt.Errorf("%w: path %q must be absolute", api.ErrInvalidArgument, *f)
		}
		if s.cfg.HostFile != nil {
			use, r, err := s.cfg.HostFile(ctx, *f)
			if err != nil {
				release()
				return p, nil, err
			}
			held = append(held, r)
			*f = use
		}
		if _, err := os.Stat(*f); err != nil {
			release()
			return p, nil, fmt.Errorf("%w: %s: %v", api.ErrNotFound, *f, err)
		}
	}
	return read, release, nil
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// source fills a staging directory with a bundle's kernel, config and
// modules, and says what it came from.
type source func(ctx context.Context, op *opstate.Op[api.Kernel], staging string) (rec store.Kernel, err error)

func (s *Service) importSource(p, named api.KernelImportParams) source {
	return func(ctx context.Context, op *opstate.Op[api.Kernel], staging string) (store.Kernel, error) {
		var rec store.Kernel
		var err error
		switch {
		case p.Debian:
			op.SetPhase("downloading the Debian kernel package")
			dl, err := os.MkdirTemp(s.cfg.Dir, ".download-")
			if err != nil {
				return rec, err
			}
			defer os.RemoveAll(dl)
			pkg, err := s.cfg.FetchDebian(ctx, dl)
			if err != nil {
				return rec, err
			}
			rec.Source, rec.Origin = "debian", filepath.Base(pkg)
			op.SetPhase("unpacking")
			rec.Version, err = unpackDeb(ctx, pkg, staging)
			return rec, err
		case p.Deb != "":
			rec.Source, rec.Origin = "deb", named.Deb
			op.SetPhase("unpacking")
			rec.Version, err = unpackDeb(ctx, p.Deb, staging)
			return rec, err
		default:
			rec.Source, rec.Origin = "files", named.Kernel
			op.SetPhase("copying")
			rec.Version, err = copyFiles(p.Kernel, p.Modules, staging)
			return rec, err
		}
	}
}

// install turns what src put in a staging directory into a stored bundle
// and a record named name (default: the kernel version).
func (s *Service) install(ctx context.Context, op *opstate.Op[api.Kernel], name string, src source) (api.Kernel, error) {
	stage, err := objdir.Stage(s.cfg.Dir, "bundle", "kernel.install", "bundle")
	if err != nil {
		return api.Kernel{}, err
	}
	defer stage.Discard()
	staging := stage.Path()
	rec, err := src(ctx, op, staging)
	if err != nil {
		return api.Kernel{}, err
	}
	rec.Name = name

	op.SetPhase("extracting the ELF kernel")
	image, err := os.ReadFile(filepath.Join(staging, bundle.FileKernel))
	if err != nil {
		return api.Kernel{}, err
	}
	vmlinux, err := Vmlinux(image)
	if err != nil {
		return api.Kernel{}, fmt.Errorf("kernel %s: %w", rec.Origin, err)
	}
	if err := os.WriteFile(filepath.Join(staging, bundle.FileVmlinux), vmlinux, 0o644); err != nil {
		return api.Kernel{}, err
	}
	if rec.Version == "" {
		rec.Version = versionOf(image)
	}
	if rec.Version == "" {
		return api.Kernel{}, fmt.Errorf("%w: cannot tell the version of kernel %s; pass its modules with --modules /lib/modules/VERSION", api.ErrInvalidArgument, rec.Origin)
	}
	if err := bundle.CheckRelease(rec.Version); err != nil {
		return api.Kernel{}, fmt.Errorf("%w: kernel %s: %v", api.ErrInvalidArgument, rec.Origin, err)
	}

	op.SetPhase("checking modules")
	modDir := filepath.Join(staging, bundle.DirModules)
	if _, err := os.Stat(modDir); err == nil {
		idx, err := kmod.Load(modDir)
		if err != nil {
			return api.Kernel{}, err
		}
		if _, err := idx.Resolve(bundle.GuestModules()...); err != nil {
			return api.Kernel{}, fmt.Errorf("%w: kernel %s cannot boot a banger guest: %v", api.ErrInvalidArgument, rec.Version, err)
		}
		rec.Modules = idx.Len()
	}

	op.SetPhase("storing")
	manifest, size, err := manifestOf(staging, rec.Version)
	if err != nil {
		return api.Kernel{}, err
	}
	if err := os.WriteFile(filepath.Join(staging, bundle.FileManifest), manifest, 0o644); err != nil {
		return api.Kernel{}, err
	}
	sum := sha256.Sum256(manifest)
	rec.ID = "sha256:" + hex.EncodeToString(sum[:])
	rec.Size = size
	if rec.Name == "" {
		rec.Name = rec.Version
	}
	rec.CreatedAt = time.Now().UTC()

	s.installMu.Lock()
	defer s.installMu.Unlock()
	if _, err := stage.Store(filepath.Base(s.bundleDir(rec.ID))); err != nil {
		return api.Kernel{}, fmt.Errorf("storing kernel %s: %w", rec.Name, err)
	}
	var k api.Kernel
	err = s.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		if err := tx.PutKernel(ctx, rec); err != nil {
			return err
		}
		k = s.toAPI(ctx, tx, rec, s.defaultName(ctx, tx))
		return nil
	})
	return k, err
}

// unpackDeb takes the kernel, its config and its modules out of a
// linux-image package into dir, and returns the kernel version.
func unpackDeb(ctx context.Context, pkg, dir string) (string, error) {
	f, err := os.Open(pkg)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr, done, err := deb.Data(f)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", api.ErrInvalidArgument, pkg, err)
	}
	defer done()
	return unpackTree(ctx, tr, dir, pkg)
}

// unpackTree copies a kernel tree out of a tar stream (a package's data,
// or an image's merged layers): /boot/vmlinuz-V (or vmlinux-V),
// /boot/config-V and /lib/modules/V, merged-usr spellings included.
func unpackTree(ctx context.Context, tr *tar.Reader, dir, origin string) (string, error) {
	var version string
	var total int64
	for n := 0; ; n++ {
		if n%256 == 0 && ctx.Err() != nil {
			return "", ctx.Err()
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("reading %s: %w", origin, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		name = strings.TrimPrefix(name, "usr/") // merged-usr trees
		var dst, v string
		switch {
		case strings.HasPrefix(name, "boot/vmlinuz-"):
			v, dst = strings.TrimPrefix(name, "boot/vmlinuz-"), bundle.FileKernel
		case strings.HasPrefix(name, "boot/vmlinux-"):
			v, dst = strings.TrimPrefix(name, "boot/vmlinux-"), bundle.FileKernel
		case strings.HasPrefix(name, "boot/config-"):
			v, dst = strings.TrimPrefix(name, "boot/config-"), bundle.FileConfig
		case strings.HasPrefix(name, "lib/modules/"):
			rest := strings.TrimPrefix(name, "lib/modules/")
			v, rest, _ = strings.Cut(rest, "/")
			if rest == "" {
				continue
			}
			dst = path.Join(bundle.DirModules, rest)
		default:
			continue
		}
		if err := bundle.CheckRelease(v); err != nil {
			return "", fmt.Errorf("%w: %s: %v", api.ErrInvalidArgument, origin, err)
		}
		if version == "" {
			version = v
		} else if v != version {
			return "", fmt.Errorf("%w: %s holds more than one kernel version (%s, %s)", api.ErrInvalidArgument, origin, version, v)
		}
		total += h.Size
		if total > maxBundle {
			return "", fmt.Errorf("%w: %s unpacks to more than %d bytes", api.ErrInvalidArgument, origin, int64(maxBundle))
		}
		if err := writeFile(filepath.Join(dir, filepath.FromSlash(dst)), tr, h.Size); err != nil {
			return "", err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, bundle.FileKernel)); err != nil {
		return "", fmt.Errorf("%w: %s holds no /boot/vmlinuz-* or /boot/vmlinux-*; is it a kernel package or image?", api.ErrInvalidArgument, origin)
	}
	return version, nil
}

func writeFile(dst string, r io.Reader, size int64) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, r, size); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	return f.Close()
}

// copyFiles takes a kernel file and, optionally, a modules directory.
func copyFiles(kernelFile, modules, dir string) (string, error) {
	in, err := os.Open(kernelFile)
	if err != nil {
		return "", err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", err
	}
	if err := writeFile(filepath.Join(dir, bundle.FileKernel), in, fi.Size()); err != nil {
		return "", err
	}
	if modules == "" {
		return "", nil
	}
	version := filepath.Base(filepath.Clean(modules))
	if err := bundle.CheckRelease(version); err != nil {
		return "", fmt.Errorf("%w: --modules %s: %v; name the directory /lib/modules/RELEASE", api.ErrInvalidArgument, modules, err)
	}
	err = filepath.WalkDir(modules, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() { // symlinks (build, source) are not followed
			return nil
		}
		rel, err := filepath.Rel(modules, p)
		if err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		info, err := src.Stat()
		if err != nil {
			return err
		}
		return writeFile(filepath.Join(dir, bundle.DirModules, rel), src, info.Size())
	})
	if err != nil {
		return "", fmt.Errorf("copying modules from %s: %w", modules, err)
	}
	return version, nil
}

// versionOf reads the version string of a bzImage's setup header.
func versionOf(image []byte) string {
	if len(image) < 0x210 || string(image[0x202:0x206]) != "HdrS" {
		return ""
	}
	off := int(binary.LittleEndian.Uint16(image[0x20e:])) + 0x200
	if off >= len(image) {
		return ""
	}
	s := image[off:min(off+256, len(image))]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	v, _, _ := strings.Cut(string(s), " ")
	return v
}

type manifestFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// manifestOf lists every file of a bundle with its digest, in a canonical
// order: the bundle's ID is the digest of this document.
func manifestOf(dir, version string) ([]byte, int64, error) {
	var files []manifestFile
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == bundle.FileManifest {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		total += n
		files = append(files, manifestFile{Path: filepath.ToSlash(rel), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("hashing the bundle: %w", err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	b, err := json.Marshal(struct {
		Version string         `json:"version"`
		Files   []manifestFile `json:"files"`
	}{version, files})
	return b, total, err
}

// aptDownload fetches the package linux-image-amd64 currently depends on.
func aptDownload(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("asking apt for linux-image-amd64 (is this Debian, and has `apt-get update` run?): %w", err)
	}
	var pkg string
	for _, line := range strings.Split(string(out), "\n") {
		if dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(dep, "linux-image-") {
			pkg = dep
			break
		}
	}
	if pkg == "" {
		return "", fmt.Errorf("%w: apt knows no package linux-image-amd64 depends on; run `apt-get update`", api.ErrNotFound)
	}
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %w: %s", pkg, err, bytes.TrimSpace(out))
	}
	matches, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(matches) != 1 {
		return "", fmt.Errorf("apt-get download %s: no package file in %s", pkg, dir)
	}
	return matches[0], nil
}
