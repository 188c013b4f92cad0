package main

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerdev/banger/api"
)

// temporaries lists dot-files banger left under its state and cache.
func (t *T) temporaries() []string {
	var out []string
	for _, dir := range []string{filepath.Join(t.home, "state", "images"), filepath.Join(t.home, "cache")} {
		filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err == nil && strings.HasPrefix(info.Name(), ".") {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

func (t *T) images() []api.Image {
	var res api.ImageListResult
	t.JSON(&res, "image", "list")
	return res.Images
}

func imagePullRepull(t *T) {
	reg := t.Registry()
	t.StartDaemon()
	ref := reg + "/smoke/busybox:1"
	t.Push(ref, t.busyboxImage())

	// In a pipe: one line, no progress.
	r := t.Must("image", "pull", ref)
	t.Contains("pull output", r.stdout, "pulled "+ref, "2 layer(s)")
	if n := strings.Count(strings.TrimSpace(r.stdout), "\n"); n != 0 || r.stderr != "" {
		t.Fatalf("pull in a pipe printed more than one line: %s", r)
	}
	imgs := t.images()
	if len(imgs) != 1 || imgs[0].Name != ref || imgs[0].Layers != 2 || imgs[0].Size == 0 {
		t.Fatalf("image list = %+v", imgs)
	}
	// The rootfs is a clean ext4 file system.
	if out, err := exec.Command("e2fsck", "-fn", imgs[0].Rootfs).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck of the rootfs: %v\n%s", err, out)
	}
	t.Contains("image list", t.Must("image", "list").stdout, "NAME", "ID", "SIZE", ref)
	t.Contains("image show", t.Must("image", "show", ref).stdout, imgs[0].ID, "/bin/sh", "linux/amd64")

	// Pulling again only checks the digest.
	var again api.Image
	t.JSON(&again, "image", "pull", ref)
	if again.ID != imgs[0].ID || !again.CreatedAt.Equal(imgs[0].CreatedAt) {
		t.Fatalf("re-pull rebuilt the image: %+v", again)
	}
	var ops api.OperationsListResult
	t.JSON(&ops, "ops", "list")
	if len(ops.Operations) != 2 || ops.Operations[1].Phase != "up to date" || ops.Operations[1].Kind != api.OpKindImagePull {
		t.Fatalf("operations after a re-pull: %+v", ops.Operations)
	}
	if left := t.temporaries(); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func imageImport(t *T) {
	t.StartDaemon()
	img := t.busyboxImage()
	dir, err := os.MkdirTemp("", "bs-import-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.defer_(func() { os.RemoveAll(dir) })

	archive := filepath.Join(dir, "bb.tar")
	tag, _ := name.NewTag("example.com/smoke/bb:saved")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatalf("%v", err)
	}
	t.Contains("import archive", t.Must("image", "import", archive).stdout, "imported example.com/smoke/bb:saved")

	lay := filepath.Join(dir, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatalf("%v", err)
	}
	t.Contains("import layout", t.Must("image", "import", lay, "--name", "smoke/bb:layout").stdout, "imported docker.io/smoke/bb:layout")

	imgs := t.images()
	if len(imgs) != 2 || imgs[0].ID != imgs[1].ID {
		t.Fatalf("imports = %+v", imgs)
	}
	t.MustFail(1, "not a docker-archive", "image", "import", "/etc/hostname")
}

func imageDelete(t *T) {
	reg := t.Registry()
	t.StartDaemon()
	a, b := reg+"/smoke/a:1", reg+"/smoke/b:1"
	img := t.busyboxImage()
	t.Push(a, img)
	t.Push(b, img)
	t.Must("image", "pull", a)
	t.Must("image", "pull", b)
	rootfs := t.images()[0].Rootfs
	t.Contains("delete a", t.Must("image", "delete", a).stdout, "rootfs stays")
	if _, err := os.Stat(rootfs); err != nil {
		t.Fatalf("rootfs removed while %s uses it: %v", b, err)
	}
	t.Contains("delete b", t.Must("image", "rm", b).stdout, "deleted "+b, "freed")
	if _, err := os.Stat(rootfs); !os.IsNotExist(err) {
		t.Fatalf("rootfs still there: %v", err)
	}
	if len(t.images()) != 0 {
		t.Fatalf("images left: %+v", t.images())
	}
	t.MustFail(1, "not found", "image", "delete", a)
}

func imageCachePrune(t *T) {
	t.StartDaemon()
	cacheDir := filepath.Join(t.home, "cache", "oci")
	t.Contains("prune of nothing", t.Must("image", "cache", "prune", "--dry-run").stdout, "would free 0 B across 0 blob(s) in "+cacheDir)
	reg := t.Registry()
	ref := reg + "/smoke/p:1"
	t.Push(ref, t.busyboxImage())
	t.Must("image", "pull", ref)
	r := t.Must("image", "cache", "prune", "--dry-run")
	t.Contains("dry run", r.stdout, "would free ", "across 2 blob(s) in "+cacheDir)
	if strings.Contains(r.stdout, "would free 0 B") {
		t.Fatalf("dry run found nothing: %s", r)
	}
	r = t.Must("image", "cache", "prune")
	t.Contains("prune", r.stdout, "freed ", "across 2 blob(s) in "+cacheDir)
	t.Contains("after prune", t.Must("image", "cache", "prune", "--dry-run").stdout, "would free 0 B across 0 blob(s)")
	// Built images do not depend on the cache.
	var img api.Image
	t.JSON(&img, "image", "show", ref)
	if _, err := os.Stat(img.Rootfs); err != nil {
		t.Fatalf("prune removed a rootfs: %v", err)
	}
	var res api.ImageCachePruneResult
	t.JSON(&res, "image", "cache", "prune")
	if res.BlobsFreed != 0 || res.CacheDir != cacheDir {
		t.Fatalf("prune --json = %+v", res)
	}
}

func imageHostile(t *T) {
	reg := t.Registry()
	t.StartDaemon()
	ref := reg + "/smoke/evil:1"
	t.Push(ref, t.hostileImage())
	r := t.MustFail(1, "escapes the image root", "image", "pull", ref)
	t.Contains("hostile pull error", r.stderr, "layer 1", `entry "../../../../tmp/banger-smoke-escaped"`)
	if _, err := os.Stat("/tmp/banger-smoke-escaped"); err == nil {
		t.Fatalf("a file escaped to /tmp/banger-smoke-escaped")
	}
	if imgs := t.images(); len(imgs) != 0 {
		t.Fatalf("a hostile image was recorded: %+v", imgs)
	}
	if entries, _ := os.ReadDir(filepath.Join(t.home, "state", "images")); len(entries) != 0 {
		t.Fatalf("image dirs left: %v", entries)
	}
	if left := t.temporaries(); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func imageDebian(t *T) {
	reg := t.Registry()
	img := t.debianImage()
	t.StartDaemon()
	ref := reg + "/smoke/debian:bookworm"
	t.Push(ref, img)
	t.Must("image", "pull", ref)
	var got api.Image
	t.JSON(&got, "image", "show", ref)
	if got.Size < 100<<20 {
		t.Fatalf("a Debian rootfs of %d bytes", got.Size)
	}
	if out, err := exec.Command("e2fsck", "-fn", got.Rootfs).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck of the rootfs: %v\n%s", err, out)
	}
	// debugfs reads the image without mounting it.
	out, err := exec.Command("debugfs", "-R", "cat /usr/lib/os-release", got.Rootfs).Output()
	if err != nil || !strings.Contains(string(out), "bookworm") {
		t.Fatalf("reading /usr/lib/os-release from the rootfs: %v\n%s", err, out)
	}
}

// imagePullAuth pulls from a registry behind basic auth with the
// credentials `docker login` would have left in the docker config.
func imagePullAuth(t *T) {
	reg := t.AuthRegistry("smoke", "s3cret")
	ref := reg + "/private/bb:1"
	t.Push(ref, t.busyboxImage(), remote.WithAuth(&authn.Basic{Username: "smoke", Password: "s3cret"}))
	t.StartDaemon()
	// Without credentials: refused, and the message says by whom.
	t.MustFail(1, "UNAUTHORIZED", "image", "pull", ref)
	cfgDir := filepath.Join(t.home, "docker")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatalf("%v", err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte("smoke:s3cret"))
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(`{"auths":{"`+reg+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	t.Contains("authenticated pull", t.Must("image", "pull", ref).stdout, "pulled "+ref)
}
