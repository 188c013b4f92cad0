package kernel

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerdev/banger/api"
)

func testRegistry(t *testing.T) string {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func pull(t *testing.T, f *fixture, p api.KernelPullParams) (api.Kernel, error) {
	t.Helper()
	op, err := f.svc.Pull(context.Background(), p)
	if err != nil {
		return api.Kernel{}, err
	}
	return wait(t, op)
}

func TestPushThenPullBack(t *testing.T) {
	reg := testRegistry(t)
	f := newService(t, nil)
	k, err := run(t, f, api.KernelImportParams{Deb: debOf(t, "6.1.0-96-test", "")})
	if err != nil {
		t.Fatal(err)
	}
	ref := reg + "/team/kernel:6.1"
	res, err := f.svc.Push(context.Background(), api.KernelPushParams{Name: k.Name, Ref: ref})
	if err != nil || !strings.HasPrefix(res.Digest, "sha256:") {
		t.Fatalf("push = %+v, %v", res, err)
	}
	if _, err := f.svc.Delete(context.Background(), api.KernelRefParams{Name: k.Name}); err != nil {
		t.Fatal(err)
	}
	back, err := pull(t, f, api.KernelPullParams{Ref: ref, Name: "pulled"})
	if err != nil {
		t.Fatal(err)
	}
	// The same files make the same bundle.
	if back.ID != k.ID || back.Version != k.Version || back.Modules != k.Modules || back.Source != "pull" || back.Name != "pulled" {
		t.Fatalf("pulled back %+v, pushed %+v", back, k)
	}
}

// Any image holding a kernel tree is a kernel image.
func TestPullAnImageWithAKernel(t *testing.T) {
	reg := testRegistry(t)
	f := newService(t, nil)
	root := t.TempDir()
	kernelTree(t, root, "6.3.0-image", "")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		data, _ := os.ReadFile(p)
		tw.WriteHeader(&tar.Header{Name: "usr/" + rel, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
		return nil
	})
	tw.Close()
	img := imageOf(t, buf.Bytes())
	ref := reg + "/distro/with-kernel:1"
	tag, _ := name.NewTag(ref)
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	k, err := pull(t, f, api.KernelPullParams{Ref: ref})
	if err != nil || k.Version != "6.3.0-image" || k.Modules != 9 {
		t.Fatalf("pull = %+v, %v", k, err)
	}

	empty := reg + "/distro/no-kernel:1"
	tag, _ = name.NewTag(empty)
	if err := remote.Write(tag, mustImage(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := pull(t, f, api.KernelPullParams{Ref: empty}); !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "no /boot/vmlinuz") {
		t.Fatalf("pull of an image without a kernel = %v", err)
	}
	if entries, _ := os.ReadDir(f.dir); len(entries) != 1 {
		t.Fatalf("kernels dir holds %d entries, want the one bundle", len(entries))
	}
}

func mustImage(t *testing.T) v1.Image {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "etc/hostname", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	img := imageOf(t, buf.Bytes())
	return img
}

// imageOf is a one-layer image of the tar layer.
func imageOf(t *testing.T, layer []byte) v1.Image {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
