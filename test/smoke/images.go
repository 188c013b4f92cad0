package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// entry is one tar entry of a test layer.
type entry struct {
	name string
	typ  byte
	body []byte
	link string
	mode int64
}

func (t *T) layer(entries ...entry) v1.Layer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, ModTime: time.Unix(1.7e9, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("%v", err)
		}
		tw.Write(e.body)
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatalf("%v", err)
	}
	return l
}

func (t *T) image(cmd []string, layers ...v1.Layer) v1.Image {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("%v", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = cmd
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return img
}

// busyboxImage is a small real image: busybox-static and its applets, in
// two layers, the upper one deleting and replacing files of the lower.
func (t *T) busyboxImage() v1.Image {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("reading /bin/busybox (Debian's busybox-static; `make deps` installs it): %v", err)
	}
	base := []entry{
		{name: "bin/", typ: tar.TypeDir},
		{name: "bin/busybox", body: bb, mode: 0o755},
		{name: "etc/", typ: tar.TypeDir},
		{name: "etc/passwd", body: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{name: "etc/motd", body: []byte("lower\n")},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		{name: "root/", typ: tar.TypeDir, mode: 0o700},
	}
	for _, applet := range []string{"sh", "ls", "cat", "echo", "mount", "ps", "sleep", "true", "uname"} {
		base = append(base, entry{name: "bin/" + applet, typ: tar.TypeLink, link: "bin/busybox"})
	}
	upper := []entry{
		{name: "etc/.wh.motd"},
		{name: "etc/hostname", body: []byte("busybox\n")},
	}
	return t.image([]string{"/bin/sh"}, t.layer(base...), t.layer(upper...))
}

// alpineLikeImage is laid out as Alpine is: busybox providing every
// applet through symlinks, ash as root's shell, Alpine's release files;
// in two layers.
func (t *T) alpineLikeImage() v1.Image {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("reading /bin/busybox (Debian's busybox-static; `make deps` installs it): %v", err)
	}
	out, err := exec.Command("/bin/busybox", "--list-full").Output()
	if err != nil {
		t.Fatalf("busybox --list-full: %v", err)
	}
	base := []entry{
		{name: "bin/", typ: tar.TypeDir}, {name: "sbin/", typ: tar.TypeDir},
		{name: "usr/", typ: tar.TypeDir}, {name: "usr/bin/", typ: tar.TypeDir}, {name: "usr/sbin/", typ: tar.TypeDir},
		{name: "bin/busybox", body: bb, mode: 0o755},
		{name: "etc/", typ: tar.TypeDir},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		{name: "root/", typ: tar.TypeDir, mode: 0o700},
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" {
			continue
		}
		base = append(base, entry{name: applet, typ: tar.TypeSymlink, link: "/bin/busybox"})
	}
	system := []entry{
		{name: "etc/alpine-release", body: []byte("3.20.0\n")},
		{name: "etc/os-release", body: []byte("NAME=\"Alpine-like Linux\"\nID=alpine\nVERSION_ID=3.20.0\n")},
		{name: "etc/passwd", body: []byte("root:x:0:0:root:/root:/bin/ash\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n")},
		{name: "etc/group", body: []byte("root:x:0:root\nnogroup:x:65534:\n")},
		{name: "etc/hosts", body: []byte("127.0.0.1\tlocalhost\n")},
		{name: "etc/hostname", body: []byte("alpine\n")},
	}
	return t.image([]string{"/bin/sh"}, t.layer(base...), t.layer(system...))
}

// hostileImage tries to write outside its root.
func (t *T) hostileImage() v1.Image {
	return t.image([]string{"/bin/sh"}, t.layer(
		entry{name: "etc/", typ: tar.TypeDir},
		entry{name: "../../../../tmp/banger-smoke-escaped", body: []byte("escaped")},
	))
}

// debianImage is the debootstrap'd Debian tree of scripts/testimages.sh,
// as one layer.
func (t *T) debianImage() v1.Image { return t.treeImage(t.tools.debianTar) }

// systemdImage is scripts/testimages.sh's Debian with systemd as
// /sbin/init, kmod and Docker, as one layer.
func (t *T) systemdImage() v1.Image { return t.treeImage(t.tools.systemdTar) }

func (t *T) treeImage(path string) v1.Image {
	if path == "" {
		t.Fatalf("no Debian test image; run scripts/testimages.sh (make test does)")
	}
	l, err := tarball.LayerFromFile(path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return t.image([]string{"/bin/bash"}, l)
}
