package rootfs

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/roottest"
)

// fileInfo is what the comparison looks at for one path.
type fileInfo struct {
	Type         string
	Mode         fs.FileMode // permission and setuid/setgid/sticky bits
	UID, GID     int
	Size         int64
	Sum          string
	Link         string
	Major, Minor uint32
	Xattrs       string
}

type fsTree struct {
	files  map[string]fileInfo
	groups map[string]string // path -> its hard-link group, as a sorted member list
}

func modeBits(m int64) fs.FileMode {
	fm := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}

func xattrString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q;", k, m[k])
	}
	return b.String()
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:8]) }

// expectedTree is what go-containerregistry's mutate.Extract makes of
// the layers.
func expectedTree(t *testing.T, tars [][]byte) fsTree {
	t.Helper()
	var layers []v1.Layer
	for _, b := range tars {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	tree := fsTree{files: map[string]fileInfo{}, groups: map[string]string{}}
	links := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(filepath.Clean("/"+h.Name), "/")
		if name == "" {
			continue
		}
		if h.Typeflag == tar.TypeLink {
			links[name] = strings.TrimPrefix(filepath.Clean("/"+h.Linkname), "/")
			continue
		}
		fi := fileInfo{Mode: modeBits(h.Mode), UID: h.Uid, GID: h.Gid}
		xa := map[string]string{}
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				xa[strings.TrimPrefix(k, "SCHILY.xattr.")] = v
			}
		}
		fi.Xattrs = xattrString(xa)
		switch h.Typeflag {
		case tar.TypeDir:
			fi.Type = "dir"
		case tar.TypeReg:
			b, _ := io.ReadAll(tr)
			fi.Type, fi.Size, fi.Sum = "file", int64(len(b)), sum(b)
		case tar.TypeSymlink:
			fi.Type, fi.Link = "symlink", h.Linkname
		case tar.TypeChar, tar.TypeBlock:
			fi.Type, fi.Major, fi.Minor = "dev"+string(h.Typeflag), uint32(h.Devmajor), uint32(h.Devminor)
		case tar.TypeFifo:
			fi.Type = "fifo"
		}
		if _, dup := tree.files[name]; !dup { // extract's first (topmost) entry wins
			tree.files[name] = fi
		}
	}
	members := map[string][]string{}
	for name := range tree.files {
		members[name] = []string{name}
	}
	for name, target := range links {
		fi, ok := tree.files[target]
		if !ok {
			t.Fatalf("extract: link %s -> missing %s", name, target)
		}
		tree.files[name] = fi
		members[target] = append(members[target], name)
	}
	for target, ms := range members {
		slices.Sort(ms)
		key := strings.Join(ms, ",")
		for _, m := range ms {
			tree.groups[m] = key
		}
		_ = target
	}
	return tree
}

// mountedTree is what the kernel sees in the built image.
func mountedTree(t *testing.T, image string) fsTree {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "ext4", "-o", "loop,ro", image, dir).CombinedOutput(); err != nil {
		t.Fatalf("mounting the image: %v\n%s", err, out)
	}
	defer func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount: %v\n%s", err, out)
		}
	}()
	tree := fsTree{files: map[string]fileInfo{}, groups: map[string]string{}}
	inodes := map[uint64][]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." || rel == "lost+found" {
			if rel == "lost+found" {
				return filepath.SkipDir
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fi := fileInfo{Mode: modeBits(int64(st.Mode & 0o7777)), UID: int(st.Uid), GID: int(st.Gid)}
		xa := map[string]string{}
		if sz, err := unix.Llistxattr(p, nil); err == nil && sz > 0 {
			buf := make([]byte, sz)
			n, _ := unix.Llistxattr(p, buf)
			for _, k := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
				vsz, err := unix.Lgetxattr(p, k, nil)
				if err != nil {
					return fmt.Errorf("getxattr %s %s: %w", p, k, err)
				}
				v := make([]byte, vsz)
				if _, err := unix.Lgetxattr(p, k, v); err != nil {
					return fmt.Errorf("getxattr %s %s: %w", p, k, err)
				}
				xa[k] = string(v)
			}
		}
		fi.Xattrs = xattrString(xa)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			fi.Type = "dir"
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fi.Type, fi.Size, fi.Sum = "file", int64(len(b)), sum(b)
			inodes[st.Ino] = append(inodes[st.Ino], rel)
		case syscall.S_IFLNK:
			fi.Link, _ = os.Readlink(p)
			fi.Type = "symlink"
			inodes[st.Ino] = append(inodes[st.Ino], rel)
		case syscall.S_IFCHR, syscall.S_IFBLK:
			typ := tar.TypeChar
			if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
				typ = tar.TypeBlock
			}
			fi.Type, fi.Major, fi.Minor = "dev"+string(rune(typ)), unix.Major(st.Rdev), unix.Minor(st.Rdev)
			inodes[st.Ino] = append(inodes[st.Ino], rel)
		case syscall.S_IFIFO:
			fi.Type = "fifo"
			inodes[st.Ino] = append(inodes[st.Ino], rel)
		}
		tree.files[rel] = fi
		if fi.Type == "dir" {
			tree.groups[rel] = rel
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ms := range inodes {
		slices.Sort(ms)
		key := strings.Join(ms, ",")
		for _, m := range ms {
			tree.groups[m] = key
		}
	}
	return tree
}

func compareTrees(t *testing.T, want, got fsTree) {
	t.Helper()
	ancestors := map[string]bool{}
	for p := range want.files {
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			ancestors[d] = true
		}
	}
	for p, w := range want.files {
		g, ok := got.files[p]
		if !ok {
			t.Errorf("%s: missing from the image (want %+v)", p, w)
			continue
		}
		if w.Type == "symlink" {
			w.Mode = g.Mode // a symlink's mode means nothing on Linux
		}
		if w != g {
			t.Errorf("%s:\n image   %+v\n extract %+v", p, g, w)
		}
		if w.Type != "dir" && want.groups[p] != got.groups[p] {
			t.Errorf("%s: hard-link group %q, extract has %q", p, got.groups[p], want.groups[p])
		}
	}
	for p, g := range got.files {
		if g.Type == "dir" && ancestors[p] {
			continue // made implicitly, as tar -x would
		}
		if _, ok := want.files[p]; !ok {
			t.Errorf("%s: in the image, not in extract's tree", p)
		}
	}
}

func checkFsck(t *testing.T, image string) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", image).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
}

func TestFlattenMatchesExtract(t *testing.T) {
	roottest.Require(t, "it loop-mounts the image")
	long := strings.Repeat("l", 255)
	base := layerTar(t,
		ent{name: "bin/", typ: tar.TypeDir},
		ent{name: "bin/sh", body: "#!shell", mode: 0o755},
		ent{name: "bin/su", body: "setuid", mode: 0o4755},
		ent{name: "bin/wall", body: "setgid", mode: 0o2755, gid: 5},
		ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		ent{name: "home/ada/", typ: tar.TypeDir, mode: 0o700, uid: 1000, gid: 1000},
		ent{name: "home/ada/notes.txt", body: "hello", uid: 1000, gid: 1000, mode: 0o600},
		ent{name: "empty/", typ: tar.TypeDir},
		ent{name: "etc/", typ: tar.TypeDir},
		ent{name: "etc/passwd", body: "root:x:0:0"},
		ent{name: "etc/hosts", body: "127.0.0.1 localhost"},
		ent{name: "etc/alt", typ: tar.TypeSymlink, link: "/etc/hosts"},
		ent{name: "etc/rel", typ: tar.TypeSymlink, link: "../etc/passwd"},
		ent{name: "etc/dangling", typ: tar.TypeSymlink, link: "nowhere"},
		ent{name: "dev/", typ: tar.TypeDir},
		ent{name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3, mode: 0o666},
		ent{name: "dev/sda", typ: tar.TypeBlock, major: 8, minor: 0, mode: 0o660, gid: 6},
		ent{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o600},
		ent{name: "usr/bin/perl", body: "perl", mode: 0o755},
		ent{name: "usr/bin/perl5.36", typ: tar.TypeLink, link: "usr/bin/perl"},
		ent{name: "usr/lib/cap", body: "caps", xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "user.note": "x"}},
		ent{name: "deep/" + long + "/" + long + "/file", body: "deep"},
		ent{name: "unicode/héllo wörld ✓.txt", body: "ünï"},
		ent{name: "gone/", typ: tar.TypeDir},
		ent{name: "gone/a", body: "a"},
		ent{name: "gone/sub/b", body: "b"},
		ent{name: "opaque/", typ: tar.TypeDir},
		ent{name: "opaque/lower1", body: "l1"},
		ent{name: "opaque/sub/lower2", body: "l2"},
		ent{name: "tobefile/", typ: tar.TypeDir},
		ent{name: "tobefile/x", body: "x"},
		ent{name: "shared", body: "shared-v1"},
		ent{name: "sharedlink", typ: tar.TypeLink, link: "shared"},
	)
	mid := layerTar(t,
		ent{name: "etc/", typ: tar.TypeDir, mode: 0o750},
		ent{name: "etc/.wh.hosts"},
		ent{name: "etc/passwd", body: "root:x:0:0\nada:x:1000:1000", mode: 0o640},
		ent{name: ".wh.gone"},
		ent{name: "opaque/", typ: tar.TypeDir},
		ent{name: "opaque/upper", body: "u"},
		ent{name: "opaque/.wh..wh..opq"},
		ent{name: "tobefile", body: "now a file"},
		ent{name: "bin/sh-link", typ: tar.TypeLink, link: "bin/sh"}, // across layers
	)
	top := layerTar(t,
		ent{name: "gone/", typ: tar.TypeDir},
		ent{name: "gone/new", body: "back"},
		ent{name: "etc/hosts", body: "::1 localhost"},
		ent{name: "dev/.wh.fifo"},
		ent{name: "home/ada/.wh.notes.txt"},
		ent{name: "usr/bin/.wh.perl5.36"},
	)
	for _, tc := range []struct {
		name   string
		tars   [][]byte
		passes int
	}{
		{"one layer", [][]byte{base}, 1},
		{"two layers", [][]byte{base, mid}, 2},
		{"three layers", [][]byte{base, mid, top}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, st, err := build(t, memLayers(tc.tars...), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if st.Passes != tc.passes {
				t.Errorf("passes = %d, want %d", st.Passes, tc.passes)
			}
			checkFsck(t, img)
			compareTrees(t, expectedTree(t, tc.tars), mountedTree(t, img))
		})
	}
}

// TestReplacingALinkedFileBreaksTheLink pins where banger and
// mutate.Extract part ways: when an upper layer replaces one name of a
// hard-linked file, the other names keep the old bytes (what Docker's layer
// applier and overlayfs copy-up do); Extract re-links them to the new file.
func TestReplacingALinkedFileBreaksTheLink(t *testing.T) {
	roottest.Require(t, "it loop-mounts the image")
	base := layerTar(t,
		ent{name: "usr/bin/perl", body: "perl v1", mode: 0o755},
		ent{name: "usr/bin/perl5.36", typ: tar.TypeLink, link: "usr/bin/perl"},
	)
	upper := layerTar(t, ent{name: "usr/bin/perl", body: "perl v2", mode: 0o755})
	img, _, err := build(t, memLayers(base, upper), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	checkFsck(t, img)
	got := mountedTree(t, img)
	if got.files["usr/bin/perl"].Sum != sum([]byte("perl v2")) || got.files["usr/bin/perl5.36"].Sum != sum([]byte("perl v1")) {
		t.Fatalf("perl = %+v, perl5.36 = %+v", got.files["usr/bin/perl"], got.files["usr/bin/perl5.36"])
	}
	if got.groups["usr/bin/perl"] == got.groups["usr/bin/perl5.36"] {
		t.Fatal("the replaced file is still linked to its old name")
	}
}
