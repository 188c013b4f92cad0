package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/blobcache"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/store/storetest"
)

type file struct {
	name, body string
}

func layerOf(t *testing.T, files ...file) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg, ModTime: time.Unix(1e9, 0)}
		if strings.HasSuffix(f.name, "/") {
			hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeDir, 0, 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, f.body)
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func imageOf(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		OS: "linux", Architecture: "amd64",
		Config: v1.Config{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}, WorkingDir: "/srv"},
		RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs(t, layers)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func diffIDs(t *testing.T, layers []v1.Layer) []v1.Hash {
	var out []v1.Hash
	for _, l := range layers {
		d, err := l.DiffID()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// testRegistry is go-containerregistry's in-process registry, with hooks to
// count, hold or corrupt blob downloads.
type testRegistry struct {
	srv       *httptest.Server
	blobGets  atomic.Int64
	hold      chan struct{} // when non-nil, blob GETs wait for it to close
	corrupt   atomic.Bool
	truncated atomic.Bool
	only      string // when set, corrupt or truncate only this blob
}

func newRegistry(t *testing.T) *testRegistry {
	r := &testRegistry{}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			r.blobGets.Add(1)
			if r.hold != nil && (r.only == "" || strings.HasSuffix(req.URL.Path, r.only)) {
				<-r.hold
			}
			if (r.corrupt.Load() || r.truncated.Load()) && (r.only == "" || strings.HasSuffix(req.URL.Path, r.only)) {
				rec := httptest.NewRecorder()
				inner.ServeHTTP(rec, req)
				body := rec.Body.Bytes()
				if r.corrupt.Load() && len(body) > 0 {
					body = append([]byte(nil), body...)
					body[len(body)/2] ^= 0xff
				}
				if r.truncated.Load() {
					body = body[:len(body)/2]
				}
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(body)
				return
			}
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *testRegistry) ref(repo string) string {
	return strings.TrimPrefix(r.srv.URL, "http://") + "/" + repo
}

func (r *testRegistry) push(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
}

type fixture struct {
	svc   *Service
	dir   string
	cache *blobcache.Cache
	st    *store.Store
	used  map[string][2]int
	mu    sync.Mutex
	told  []api.Event // what the service told of
}

func newService(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st := storetest.Open(t)
	f := &fixture{dir: dir, cache: blobcache.New(filepath.Join(dir, "cache", "oci")), st: st, used: map[string][2]int{}}
	var err error
	f.svc, err = New(Config{
		Store: st, Cache: f.cache, Dir: filepath.Join(dir, "images"), Log: slog.New(slog.DiscardHandler),
		Lifetime: context.Background(),
		UsedBy: func(_ context.Context, _ *store.Tx, id string) (int, int, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			u := f.used[id]
			return u[0], u[1], nil
		},
		Event: func(e api.Event) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.told = append(f.told, e)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func wait(t *testing.T, op Started) (api.Image, error) {
	t.Helper()
	select {
	case <-op.Done():
	case <-time.After(2 * time.Minute):
		t.Fatal("operation did not finish")
	}
	return op.Result()
}

func (f *fixture) pull(t *testing.T, ref string) (api.Image, error) {
	t.Helper()
	op, err := f.svc.Pull(context.Background(), api.ImagePullParams{Ref: ref})
	if err != nil {
		return api.Image{}, err
	}
	return wait(t, op)
}

// leftovers lists temporary files anywhere under the fixture's dirs.
func (f *fixture) leftovers(t *testing.T) []string {
	var out []string
	filepath.Walk(f.dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(info.Name(), ".") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestPullRepullAndShow(t *testing.T) {
	reg := newRegistry(t)
	f := newService(t)
	ref := reg.ref("team/app:1")
	reg.push(t, ref, imageOf(t, layerOf(t, file{"etc/", ""}, file{"etc/os-release", "ID=test"}), layerOf(t, file{"srv/app", "run"})))

	img, err := f.pull(t, ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != ref || img.Layers != 2 || img.Source != "pull" || img.Size == 0 || img.Platform != "linux/amd64" ||
		img.Config.WorkingDir != "/srv" || img.Config.Cmd[0] != "/bin/sh" || !strings.HasPrefix(img.ID, "sha256:") {
		t.Fatalf("pulled %+v", img)
	}
	if !fileExists(img.Rootfs) {
		t.Fatalf("rootfs %s missing", img.Rootfs)
	}
	if b, n, _ := f.cache.Usage(); n != 2 || b == 0 {
		t.Fatalf("cache holds %d blobs", n)
	}
	gets := reg.blobGets.Load()

	// Pulling again checks the digest and fetches nothing.
	again, err := f.pull(t, ref)
	if err != nil || again.ID != img.ID {
		t.Fatalf("re-pull = %+v, %v", again, err)
	}
	if reg.blobGets.Load() != gets {
		t.Fatalf("re-pull fetched %d blobs", reg.blobGets.Load()-gets)
	}

	// Show by name, by ID prefix; list.
	for _, q := range []string{ref, strings.TrimPrefix(img.ID, "sha256:")[:10], img.ID} {
		got, err := f.svc.Show(context.Background(), api.ImageRefParams{Name: q})
		if err != nil || got.ID != img.ID {
			t.Fatalf("show %q = %+v, %v", q, got, err)
		}
	}
	if _, err := f.svc.Show(context.Background(), api.ImageRefParams{Name: "nope:1"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("show missing = %v", err)
	}
	list, err := f.svc.List(context.Background())
	if err != nil || len(list.Images) != 1 {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if left := f.leftovers(t); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestConcurrentPullsShareOneOperation(t *testing.T) {
	reg := newRegistry(t)
	f := newService(t)
	ref := reg.ref("team/slow:1")
	reg.push(t, ref, imageOf(t, layerOf(t, file{"a", "a"})))
	reg.hold = make(chan struct{})
	op1, err := f.svc.Pull(context.Background(), api.ImagePullParams{Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	op2, err := f.svc.Pull(context.Background(), api.ImagePullParams{Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	close(reg.hold)
	if op1.ID() != op2.ID() {
		t.Fatalf("two operations: %s, %s", op1.ID(), op2.ID())
	}
	if _, err := wait(t, op1); err != nil {
		t.Fatal(err)
	}
	if len(f.svc.Operations().List()) != 1 {
		t.Fatalf("operations: %+v", f.svc.Operations().List())
	}
}

func TestPullPicksThePlatform(t *testing.T) {
	reg := newRegistry(t)
	f := newService(t)
	amd := imageOf(t, layerOf(t, file{"arch", "amd64"}))
	arm, err := mutate.ConfigFile(imageOf(t, layerOf(t, file{"arch", "arm64"})), &v1.ConfigFile{OS: "linux", Architecture: "arm64",
		RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs(t, []v1.Layer{layerOf(t, file{"arch", "arm64"})})}})
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	ref := reg.ref("team/multi:1")
	tag, _ := name.NewTag(ref)
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	op, err := f.svc.Pull(context.Background(), api.ImagePullParams{Ref: ref, Platform: "linux/arm64"})
	if err != nil {
		t.Fatal(err)
	}
	img, err := wait(t, op)
	if err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	armDigest, _ := arm.Digest()
	if img.Platform != "linux/arm64" || img.RepoDigest != idxDigest.String() || img.Digest != armDigest.String() {
		t.Fatalf("pulled %+v", img)
	}
	if _, err := f.svc.Pull(context.Background(), api.ImagePullParams{Ref: ref, Platform: "linux"}); !errors.Is(err, api.ErrInvalidArgument) {
		t.Fatalf("bad platform = %v", err)
	}
	op, _ = f.svc.Pull(context.Background(), api.ImagePullParams{Ref: ref, Platform: "linux/s390x"})
	if _, err := wait(t, op); err == nil || !strings.Contains(err.Error(), "s390x") {
		t.Fatalf("missing platform = %v", err)
	}
}

func TestFailedPullsLeaveNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*testRegistry)
		files []file
		want  string
	}{
		{name: "corrupted layer", setup: func(r *testRegistry) { r.corrupt.Store(true) }, files: []file{{"a", strings.Repeat("a", 5000)}}, want: "sha256"},
		{name: "truncated layer", setup: func(r *testRegistry) { r.truncated.Store(true) }, files: []file{{"a", strings.Repeat("b", 5000)}}, want: "layer"},
		{name: "hostile entry", setup: func(*testRegistry) {}, files: []file{{"ok", "x"}, {"../../etc/evil", "x"}}, want: `entry "../../etc/evil"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newRegistry(t)
			f := newService(t)
			ref := reg.ref("team/bad:1")
			l := layerOf(t, tc.files...)
			reg.push(t, ref, imageOf(t, l))
			d, _ := l.Digest()
			reg.only = d.String()
			tc.setup(reg)
			_, err := f.pull(t, ref)
			t.Logf("pull error: %v", err)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("pull = %v, want an error mentioning %q", err, tc.want)
			}
			if list, _ := f.svc.List(context.Background()); len(list.Images) != 0 {
				t.Fatalf("a record was left: %+v", list)
			}
			if entries, _ := os.ReadDir(filepath.Join(f.dir, "images")); len(entries) != 0 {
				t.Fatalf("image dirs left: %v", entries)
			}
			if left := f.leftovers(t); len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
		})
	}
}

func TestImport(t *testing.T) {
	f := newService(t)
	img := imageOf(t, layerOf(t, file{"hello", "world"}))
	ctx := context.Background()

	archive := filepath.Join(t.TempDir(), "app.tar")
	tag, _ := name.NewTag("example.com/team/app:2")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	op, err := f.svc.Import(ctx, api.ImageImportParams{Path: archive})
	if err != nil {
		t.Fatal(err)
	}
	got, err := wait(t, op)
	if err != nil || got.Name != "example.com/team/app:2" || got.Source != "import" {
		t.Fatalf("import archive = %+v, %v", got, err)
	}

	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "example.com/team/app:oci"})); err != nil {
		t.Fatal(err)
	}
	op, err = f.svc.Import(ctx, api.ImageImportParams{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	got2, err := wait(t, op)
	if err != nil || got2.Name != "example.com/team/app:oci" || got2.ID != got.ID || got2.Digest == "" {
		t.Fatalf("import layout = %+v, %v", got2, err)
	}

	op, err = f.svc.Import(ctx, api.ImageImportParams{Path: dir, Name: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	if got3, err := wait(t, op); err != nil || got3.Name != "docker.io/library/mine:latest" {
		t.Fatalf("import with --name = %+v, %v", got3, err)
	}

	for _, bad := range []api.ImageImportParams{{Path: "relative.tar"}, {Path: "/nonexistent/x.tar"}} {
		if _, err := f.svc.Import(ctx, bad); err == nil {
			t.Errorf("import %+v succeeded", bad)
		}
	}
	notATar := filepath.Join(t.TempDir(), "x.tar")
	os.WriteFile(notATar, []byte("hello"), 0o600)
	op, _ = f.svc.Import(ctx, api.ImageImportParams{Path: notATar})
	if _, err := wait(t, op); !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "docker-archive") {
		t.Fatalf("import of junk = %v", err)
	}
}

func TestDelete(t *testing.T) {
	reg := newRegistry(t)
	f := newService(t)
	ctx := context.Background()
	img := imageOf(t, layerOf(t, file{"x", "y"}))
	a, b := reg.ref("team/a:1"), reg.ref("team/b:1")
	reg.push(t, a, img)
	reg.push(t, b, img)
	other := reg.ref("team/other:1")
	reg.push(t, other, imageOf(t, layerOf(t, file{"z", "z"})))
	ia, err := f.pull(t, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.pull(t, b); err != nil {
		t.Fatal(err)
	}
	io, err := f.pull(t, other)
	if err != nil {
		t.Fatal(err)
	}

	f.used[ia.ID] = [2]int{1, 0}
	if _, err := f.svc.Delete(ctx, api.ImageDeleteParams{Name: a, Force: true}); !errors.Is(err, api.ErrInUse) {
		t.Fatalf("delete with a running VM = %v", err)
	}
	f.used[ia.ID] = [2]int{0, 2}
	if _, err := f.svc.Delete(ctx, api.ImageDeleteParams{Name: a}); !errors.Is(err, api.ErrInUse) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("delete with stopped VMs = %v", err)
	}
	res, err := f.svc.Delete(ctx, api.ImageDeleteParams{Name: a, Force: true})
	if err != nil || res.RootfsRemoved {
		t.Fatalf("delete of a shared rootfs = %+v, %v", res, err)
	}
	if !fileExists(ia.Rootfs) {
		t.Fatal("the rootfs went while another name uses it")
	}
	delete(f.used, ia.ID)
	res, err = f.svc.Delete(ctx, api.ImageDeleteParams{Name: b})
	if err != nil || !res.RootfsRemoved || res.BytesFreed == 0 {
		t.Fatalf("delete of the last name = %+v, %v", res, err)
	}
	if fileExists(ia.Rootfs) {
		t.Fatal("rootfs still there")
	}
	if !fileExists(io.Rootfs) {
		t.Fatal("deleting one image touched another's files")
	}
	if _, err := f.svc.Delete(ctx, api.ImageDeleteParams{Name: a}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("second delete = %v", err)
	}
	f.mu.Lock()
	var told []string
	for _, e := range f.told {
		told = append(told, e.Type+" "+e.Image)
	}
	f.mu.Unlock()
	want := []string{"image.pulled " + a, "image.pulled " + b, "image.pulled " + other, "image.deleted " + a, "image.deleted " + b}
	if !slices.Equal(told, want) {
		t.Fatalf("events %q, want %q", told, want)
	}
	if left := f.leftovers(t); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestPruneCache(t *testing.T) {
	reg := newRegistry(t)
	f := newService(t)
	ref := reg.ref("team/p:1")
	reg.push(t, ref, imageOf(t, layerOf(t, file{"a", "a"}), layerOf(t, file{"b", "b"})))
	img, err := f.pull(t, ref)
	if err != nil {
		t.Fatal(err)
	}
	dry, err := f.svc.PruneCache(context.Background(), api.ImageCachePruneParams{DryRun: true})
	if err != nil || dry.BlobsFreed != 2 || dry.BytesFreed == 0 || !dry.DryRun {
		t.Fatalf("dry run = %+v, %v", dry, err)
	}
	res, err := f.svc.PruneCache(context.Background(), api.ImageCachePruneParams{})
	if err != nil || res.BlobsFreed != 2 || res.BytesFreed != dry.BytesFreed {
		t.Fatalf("prune = %+v, %v", res, err)
	}
	if !fileExists(img.Rootfs) {
		t.Fatal("prune removed a rootfs")
	}
	if _, n, _ := f.cache.Usage(); n != 0 {
		t.Fatalf("%d blobs after prune", n)
	}
	_ = fmt.Sprint()
}

func TestCancelledPullLeavesNothing(t *testing.T) {
	reg := newRegistry(t)
	f := newService(t)
	ref := reg.ref("team/big:1")
	l := layerOf(t, file{"a", strings.Repeat("x", 1<<20)})
	reg.push(t, ref, imageOf(t, l))
	d, _ := l.Digest()
	reg.only = d.String() // hold the layer, not the config
	reg.hold = make(chan struct{})
	released := false
	release := func() {
		if !released {
			released = true
			close(reg.hold)
		}
	}
	defer release()
	op, err := f.svc.Pull(context.Background(), api.ImagePullParams{Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	// Cancel once the download is under way.
	deadline := time.Now().Add(time.Minute)
	for op.Status().Phase != "downloading" {
		if time.Now().After(deadline) {
			t.Fatal("the pull never started downloading")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := op.Cancel(); err != nil {
		t.Fatal(err)
	}
	release()
	if _, err := wait(t, op); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled pull = %v", err)
	}
	if list, _ := f.svc.List(context.Background()); len(list.Images) != 0 {
		t.Fatalf("records after a canceled pull: %+v", list)
	}
	if left := f.leftovers(t); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	// And the same ref pulls fine afterwards, in a new operation.
	img, err := f.pull(t, ref)
	if err != nil || img.Name != ref {
		t.Fatalf("pull after cancel = %+v, %v", img, err)
	}
}

func TestStartSweepsWhatAKilledDaemonLeft(t *testing.T) {
	f := newService(t)
	images := filepath.Join(f.dir, "images")
	for _, d := range []string{".build-123", ".deleting-abc"} {
		if err := os.MkdirAll(filepath.Join(images, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	blobs := filepath.Join(f.dir, "cache", "oci", "blobs", "sha256")
	os.MkdirAll(blobs, 0o700)
	os.WriteFile(filepath.Join(blobs, ".partial-1"), []byte("half"), 0o600)
	if _, err := New(Config{Store: f.st, Cache: f.cache, Dir: images, Log: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	if left := f.leftovers(t); len(left) != 0 {
		t.Fatalf("not swept: %v", left)
	}
}

// TestSweepAgreesWithTheRecords: as the kernel service's sweep does, a
// rootfs no record owns (stored, the record never written) goes, and a
// rootfs a delete set aside whose record stayed (the transaction never
// committed) comes back, so the image still shows and its file is there.
func TestSweepAgreesWithTheRecords(t *testing.T) {
	reg := newRegistry(t)
	f := newService(t)
	ref := reg.ref("sweep/img:1")
	reg.push(t, ref, imageOf(t, layerOf(t, file{name: "etc/hello", body: "hi"})))
	img, err := f.pull(t, ref)
	if err != nil {
		t.Fatal(err)
	}
	images := filepath.Join(f.dir, "images")
	id := filepath.Base(filepath.Dir(img.Rootfs))
	orphan := filepath.Join(images, strings.Repeat("cd", 32))
	if err := os.MkdirAll(orphan, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(orphan, "rootfs.ext4"), []byte("orphan"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Dir(img.Rootfs), filepath.Join(images, ".deleting-"+id)); err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Store: f.st, Cache: f.cache, Dir: images, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(images)
	if len(entries) != 1 || entries[0].Name() != id {
		t.Fatalf("after the sweep the images dir holds %v, want only %s", entries, id)
	}
	got, err := svc.Show(context.Background(), api.ImageRefParams{Name: ref})
	if err != nil || got.Rootfs != img.Rootfs {
		t.Fatalf("show after the sweep: %+v, %v", got, err)
	}
	if _, err := os.Stat(img.Rootfs); err != nil {
		t.Fatalf("the rootfs put back: %v", err)
	}
}
