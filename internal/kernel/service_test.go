package kernel

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/kmod/kmodtest"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/store/storetest"
)

func xzBCJ(b []byte) ([]byte, error) {
	cmd := exec.Command("xz", "--check=crc32", "--x86", "--lzma2=preset=6", "--stdout")
	cmd.Stdin = bytes.NewReader(b)
	return cmd.Output()
}

// kernelTree writes a kernel and a modules tree like a linux-image
// package's under root; missing drops one guest module.
func kernelTree(t *testing.T, root, version, missing string) {
	t.Helper()
	bz, err := kmodtest.BzImage(version, xzBCJ)
	if err != nil {
		t.Fatal(err)
	}
	write := func(rel string, data []byte) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("boot/vmlinuz-"+version, bz)
	write("boot/config-"+version, []byte("CONFIG_VIRTIO=m\n"))
	mods := map[string][]string{
		"virtio_ring": nil, "virtio": {"virtio_ring"}, "virtio_mmio": {"virtio", "virtio_ring"},
		"virtio_blk": {"virtio", "virtio_ring"}, "virtio_net": {"virtio", "virtio_ring"}, "virtio_console": {"virtio", "virtio_ring"},
		"ext4": {"jbd2", "mbcache"}, "jbd2": nil, "mbcache": nil,
	}
	for name, deps := range mods {
		if name == missing {
			continue
		}
		write("lib/modules/"+version+"/kernel/"+name+".ko", kmodtest.Module("name="+name, "depends="+strings.Join(deps, ",")))
	}
	write("lib/modules/"+version+"/modules.builtin", []byte("kernel/fs/overlayfs/overlay.ko\n"))
}

func debOf(t *testing.T, version, missing string) string {
	t.Helper()
	root := t.TempDir()
	kernelTree(t, root, version, missing)
	os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755)
	os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte("Package: linux-image-"+version+"\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: t\n"), 0o644)
	pkg := filepath.Join(t.TempDir(), "linux-image-"+version+"_1_amd64.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, pkg).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, out)
	}
	return pkg
}

type fixture struct {
	svc  *Service
	dir  string
	used map[string]int
}

func newService(t *testing.T, fetch func(context.Context, string) (string, error)) *fixture {
	t.Helper()
	dir := t.TempDir()
	st := storetest.Open(t)
	f := &fixture{dir: filepath.Join(dir, "kernels"), used: map[string]int{}}
	var err error
	f.svc, err = New(Config{Store: st, Dir: f.dir, Log: slog.New(slog.DiscardHandler), FetchDebian: fetch,
		UsedBy: func(_ context.Context, _ *store.Tx, id string) (int, error) { return f.used[id], nil }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func run(t *testing.T, f *fixture, p api.KernelImportParams) (api.Kernel, error) {
	t.Helper()
	op, err := f.svc.Import(context.Background(), p)
	if err != nil {
		return api.Kernel{}, err
	}
	return wait(t, op)
}

func wait(t *testing.T, op *opstate.Op[api.Kernel]) (api.Kernel, error) {
	select {
	case <-op.Done():
	case <-time.After(time.Minute):
		t.Fatal("import did not finish")
	}
	return op.Result()
}

func TestImportDeb(t *testing.T) {
	f := newService(t, nil)
	pkg := debOf(t, "6.1.0-99-test", "")
	k, err := run(t, f, api.KernelImportParams{Deb: pkg})
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != "6.1.0-99-test" || k.Version != "6.1.0-99-test" || k.Modules != 9 || k.Source != "deb" || !k.Default || !strings.HasPrefix(k.ID, "sha256:") {
		t.Fatalf("imported %+v", k)
	}
	for _, file := range []string{bundle.FileKernel, bundle.FileVmlinux, bundle.FileConfig, bundle.FileManifest, "modules/kernel/ext4.ko", "modules/modules.builtin"} {
		if _, err := os.Stat(filepath.Join(k.Dir, file)); err != nil {
			t.Errorf("bundle lacks %s: %v", file, err)
		}
	}
	vmlinux, _ := os.ReadFile(filepath.Join(k.Dir, bundle.FileVmlinux))
	if !bytes.HasPrefix(vmlinux, []byte("\x7fELF")) {
		t.Fatal("vmlinux is not ELF")
	}

	// The same bundle under another name is stored once.
	again, err := run(t, f, api.KernelImportParams{Deb: pkg, Name: "mine"})
	if err != nil || again.ID != k.ID || again.Dir != k.Dir {
		t.Fatalf("second import = %+v, %v", again, err)
	}
	if shown, err := f.svc.Show(context.Background(), api.KernelRefParams{Name: "default"}); err != nil || shown.ID != k.ID {
		t.Fatalf("show default = %+v, %v", shown, err)
	}

	f.used[k.ID] = 1
	if _, err := f.svc.Delete(context.Background(), api.KernelRefParams{Name: "mine"}); !errors.Is(err, api.ErrInUse) {
		t.Fatalf("delete in use = %v", err)
	}
	delete(f.used, k.ID)
	if res, err := f.svc.Delete(context.Background(), api.KernelRefParams{Name: "mine"}); err != nil || res.BundleRemoved {
		t.Fatalf("delete of a shared bundle = %+v, %v", res, err)
	}
	if res, err := f.svc.Delete(context.Background(), api.KernelRefParams{Name: k.Name}); err != nil || !res.BundleRemoved {
		t.Fatalf("delete = %+v, %v", res, err)
	}
	if entries, _ := os.ReadDir(f.dir); len(entries) != 0 {
		t.Fatalf("left in the kernels dir: %v", entries)
	}
}

func TestImportFilesAndDebian(t *testing.T) {
	var fetched bool
	pkg := debOf(t, "6.1.0-98-test", "")
	f := newService(t, func(_ context.Context, dir string) (string, error) {
		fetched = true
		dst := filepath.Join(dir, filepath.Base(pkg))
		b, _ := os.ReadFile(pkg)
		return dst, os.WriteFile(dst, b, 0o644)
	})
	k, err := run(t, f, api.KernelImportParams{Debian: true})
	if err != nil || !fetched || k.Source != "debian" || k.Version != "6.1.0-98-test" || k.Origin != "linux-image-6.1.0-98-test_1_amd64.deb" {
		t.Fatalf("import --debian = %+v, %v", k, err)
	}

	root := t.TempDir()
	kernelTree(t, root, "6.2.0-files", "")
	k2, err := run(t, f, api.KernelImportParams{Kernel: filepath.Join(root, "boot/vmlinuz-6.2.0-files"), Modules: filepath.Join(root, "lib/modules/6.2.0-files")})
	if err != nil || k2.Version != "6.2.0-files" || k2.Modules != 9 || k2.Source != "files" {
		t.Fatalf("import --kernel --modules = %+v, %v", k2, err)
	}
	// Without modules, the version comes from the bzImage header.
	k3, err := run(t, f, api.KernelImportParams{Kernel: filepath.Join(root, "boot/vmlinuz-6.2.0-files"), Name: "bare"})
	if err != nil || k3.Version != "6.2.0-files" || k3.Modules != 0 {
		t.Fatalf("import --kernel = %+v, %v", k3, err)
	}
	list, err := f.svc.List(context.Background())
	if err != nil || len(list.Kernels) != 3 || list.Kernels[0].Name != "bare" || !list.Kernels[0].Default {
		t.Fatalf("list = %+v, %v", list, err)
	}
}

func TestImportErrors(t *testing.T) {
	f := newService(t, nil)
	for _, p := range []api.KernelImportParams{
		{},
		{Deb: "/a.deb", Debian: true},
		{Modules: "/lib/modules/x"},
		{Deb: "relative.deb"},
		{Deb: "/nonexistent.deb"},
		{Debian: true, Name: "../evil"},
	} {
		if _, err := f.svc.Import(context.Background(), p); err == nil {
			t.Errorf("Import(%+v) accepted", p)
		}
	}
	if _, err := run(t, f, api.KernelImportParams{Deb: debOf(t, "6.1.0-97-test", "virtio_blk")}); !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "virtio_blk") {
		t.Fatalf("kernel without virtio_blk = %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.deb")
	os.WriteFile(junk, []byte("not a package"), 0o644)
	if _, err := run(t, f, api.KernelImportParams{Deb: junk}); !errors.Is(err, api.ErrInvalidArgument) {
		t.Fatalf("junk deb = %v", err)
	}
	if entries, _ := os.ReadDir(f.dir); len(entries) != 0 {
		t.Fatalf("failed imports left %v", entries)
	}
}

// TestSweep is a daemon started again after one killed mid-request:
// staging and a bundle no record owns go, a recorded bundle a delete set
// aside (its transaction never committed) comes back, and the kernel
// still boots from it.
func TestSweep(t *testing.T) {
	st := storetest.Open(t)
	dir := filepath.Join(t.TempDir(), "kernels")
	open := func() *Service {
		s, err := New(Config{Store: st, Dir: dir, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	op, err := open().Import(context.Background(), api.KernelImportParams{Deb: debOf(t, "6.1.0-98-test", "")})
	if err != nil {
		t.Fatal(err)
	}
	k, err := wait(t, op)
	if err != nil {
		t.Fatal(err)
	}
	id := filepath.Base(k.Dir)
	orphan := filepath.Join(dir, strings.Repeat("ab", 32))
	for _, d := range []string{orphan, filepath.Join(dir, ".import-123")} {
		if err := os.MkdirAll(filepath.Join(d, "modules"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(k.Dir, filepath.Join(dir, ".deleting-"+id)); err != nil {
		t.Fatal(err)
	}
	s := open()
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != id {
		t.Fatalf("after the sweep the kernels dir holds %v, want only %s", entries, id)
	}
	if got, err := s.Show(context.Background(), api.KernelRefParams{Name: k.Name}); err != nil || got.Dir != k.Dir {
		t.Fatalf("show after the sweep: %+v, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(k.Dir, bundle.FileVmlinux)); err != nil {
		t.Fatalf("the bundle put back lacks its kernel: %v", err)
	}
}

// TestHostileRelease: a kernel tree whose paths carry a release that is
// not one (words for the guest's command line, an escape sequence, an
// option for depmod, a climb) is refused, naming the reason, before any
// of it is written.
func TestHostileRelease(t *testing.T) {
	for _, v := range []string{"6.1.0 init=/bin/sh", "6.1\x1b]0;pwned\x07", "--help", "6.1\u009b2J", strings.Repeat("9", 65)} {
		for _, prefix := range []string{"boot/vmlinuz-", "lib/modules/"} {
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			name := prefix + v
			if prefix == "lib/modules/" {
				name += "/kernel/x.ko"
			}
			_ = tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: 1, Mode: 0o644})
			_, _ = tw.Write([]byte("x"))
			_ = tw.Close()
			dir := t.TempDir()
			_, err := unpackTree(context.Background(), tar.NewReader(&b), dir, "the image")
			if !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "is not one") && !strings.Contains(err.Error(), "more than 64") {
				t.Errorf("%s: %v", name, err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("%s: written before the refusal: %v", name, entries)
			}
		}
	}
}
