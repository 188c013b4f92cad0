package rootfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The breakout cases of containerd's archive tests (pkg/archive
// TestBreakouts), as layers for the flattener. Each is refused with an
// error naming the layer and the entry, or contained in the image root.
func TestHostileLayers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layers [][]ent
		err    error  // refused with this
		entry  string // and naming this entry
		// contained: paths that must exist in the merged tree instead.
		contained []string
	}{
		{name: "dot-dot entry", layers: [][]ent{{{name: "../etc/passwd", body: "x"}}}, err: ErrEscapes, entry: "../etc/passwd"},
		{name: "dot-dot in the middle", layers: [][]ent{{{name: "a/../../x", body: "x"}}}, err: ErrEscapes, entry: "a/../../x"},
		{name: "absolute entry", layers: [][]ent{{{name: "/etc/passwd", body: "x"}}}, contained: []string{"etc/passwd"}},
		{name: "write through absolute symlink", layers: [][]ent{{
			{name: "etc/", typ: tar.TypeDir},
			{name: "link", typ: tar.TypeSymlink, link: "/etc"},
			{name: "link/passwd", body: "x"},
		}}, contained: []string{"etc/passwd"}},
		{name: "write through climbing symlink", layers: [][]ent{{
			{name: "link", typ: tar.TypeSymlink, link: "../../../../etc"},
			{name: "link/x", body: "x"},
		}}, contained: []string{"etc/x"}},
		{name: "write through symlink of a lower layer", layers: [][]ent{
			{{name: "link", typ: tar.TypeSymlink, link: "/tmp/../.."}},
			{{name: "link/escaped", body: "x"}},
		}, contained: []string{"escaped"}},
		{name: "hard link climbing out", layers: [][]ent{{{name: "h", typ: tar.TypeLink, link: "../../etc/shadow"}}}, err: ErrEscapes, entry: "h"},
		{name: "hard link to a host path", layers: [][]ent{{{name: "h", typ: tar.TypeLink, link: "/etc/shadow"}}}, err: ErrLinkTarget, entry: "h"},
		{name: "hard link through a symlink", layers: [][]ent{{
			{name: "etc/passwd", body: "image's own"},
			{name: "root", typ: tar.TypeSymlink, link: "/"},
			{name: "h", typ: tar.TypeLink, link: "root/etc/passwd"},
		}}, contained: []string{"h", "etc/passwd"}},
		{name: "hard link to a directory", layers: [][]ent{{{name: "d/", typ: tar.TypeDir}, {name: "h", typ: tar.TypeLink, link: "d"}}}, err: ErrLinkTarget, entry: "h"},
		{name: "whiteout of dot-dot", layers: [][]ent{{{name: "a/", typ: tar.TypeDir}}, {{name: "a/.wh..."}}}, err: ErrBadWhiteout, entry: "a/.wh..."},
		{name: "whiteout through a symlink", layers: [][]ent{
			{{name: "etc/passwd", body: "x"}, {name: "link", typ: tar.TypeSymlink, link: "etc"}},
			{{name: "link/.wh.passwd"}},
		}, err: ErrBadWhiteout, entry: "link/.wh.passwd"},
		{name: "symlink loop", layers: [][]ent{{
			{name: "a", typ: tar.TypeSymlink, link: "b"},
			{name: "b", typ: tar.TypeSymlink, link: "a"},
			{name: "a/x", body: "x"},
		}}, err: ErrSymlinkLoop, entry: "a/x"},
		{name: "file under a file", layers: [][]ent{{{name: "f", body: "x"}, {name: "f/x", body: "y"}}}, err: ErrNotDir, entry: "f/x"},
		{name: "name too long", layers: [][]ent{{{name: strings.Repeat("n", 256), body: "x"}}}, err: ErrNameTooLong},
		// A path thousands of directories deep costs the ext4 writer
		// quadratic time: refused past PATH_MAX.
		{name: "path too deep", layers: [][]ent{{{name: strings.Repeat("d/", 3000) + "f", body: "x"}}}, err: ErrNameTooLong},
		{name: "symlink target too long", layers: [][]ent{{{name: "l", typ: tar.TypeSymlink, link: strings.Repeat("t", 5000)}}}, err: ErrNameTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tars [][]byte
			for _, l := range tc.layers {
				tars = append(tars, layerTar(t, l...))
			}
			_, _, err := build(t, memLayers(tars...), Limits{})
			if tc.err != nil {
				var ee *EntryError
				if !errors.Is(err, tc.err) || !errors.As(err, &ee) || !strings.HasPrefix(ee.Layer, "layer ") {
					t.Fatalf("Build = %v, want %v naming the layer", err, tc.err)
				}
				if tc.entry != "" && ee.Entry != tc.entry {
					t.Fatalf("error names entry %q, want %q", ee.Entry, tc.entry)
				}
				return
			}
			if err != nil {
				t.Fatalf("Build = %v, want the entry contained", err)
			}
			tree := newTree()
			for i, l := range tars {
				tr := tar.NewReader(bytes.NewReader(l))
				for k := 0; ; k++ {
					h, err := tr.Next()
					if err == io.EOF {
						break
					}
					if _, err := tree.apply(i, k, h); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, p := range tc.contained {
				dir, err := tree.resolveDir(strings.Split(filepath.Dir(p), "/"), nil, new(int))
				if err != nil || dir == nil || dir.children[filepath.Base(p)] == nil {
					t.Errorf("%s is not in the image root", p)
				}
			}
		})
	}
}

func TestLimits(t *testing.T) {
	big := layerTar(t, ent{name: "zeros", body: strings.Repeat("\x00", 1<<20)})
	if _, _, err := build(t, memLayers(big), Limits{MaxBytes: 512 << 10}); !errors.Is(err, ErrLimit) {
		t.Fatalf("1 MiB file under a 512 KiB cap = %v", err)
	}
	var many []ent
	for i := range 100 {
		many = append(many, ent{name: strings.Repeat("f", i+1), body: ""})
	}
	if _, _, err := build(t, memLayers(layerTar(t, many...)), Limits{MaxEntries: 50}); !errors.Is(err, ErrLimit) {
		t.Fatalf("100 entries under a cap of 50 = %v", err)
	}
	// Bytes past the end of the archive count too (a bomb behind the tar).
	trailer := append(layerTar(t, ent{name: "a", body: "x"}), make([]byte, 1<<20)...)
	if _, _, err := build(t, memLayers(trailer), Limits{MaxBytes: 256 << 10}); !errors.Is(err, ErrLimit) {
		t.Fatalf("1 MiB behind the archive under a 256 KiB cap = %v", err)
	}
}

func TestTruncatedLayer(t *testing.T) {
	full := layerTar(t, ent{name: "file", body: strings.Repeat("x", 10000)})
	_, _, err := build(t, memLayers(full[:3000]), Limits{})
	if err == nil || !strings.Contains(err.Error(), "layer 0") {
		t.Fatalf("truncated layer = %v", err)
	}
}

func TestFailedBuildLeavesNoPartialImage(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "rootfs.ext4")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = Build(t.Context(), memLayers(layerTar(t, ent{name: "ok", body: "x"}, ent{name: "../bad", body: "y"})), f, Limits{})
	if err == nil {
		t.Fatal("Build succeeded")
	}
	// The caller removes out on error; Build itself must not have left
	// other files beside it.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("files beside the output: %v", entries)
	}
}

// FuzzBuild feeds arbitrary bytes as a layer (alone, and on top of a
// fixed lower layer): Build must return, without panicking, within the
// limits.
func FuzzBuild(f *testing.F) {
	lower := layerTar(f, ent{name: "etc/", typ: tar.TypeDir}, ent{name: "etc/passwd", body: "root"}, ent{name: "l", typ: tar.TypeSymlink, link: "/etc"})
	f.Add(lower)
	f.Add(layerTar(f, ent{name: "etc/.wh.passwd"}, ent{name: "l/x", body: "y"}, ent{name: "h", typ: tar.TypeLink, link: "etc/passwd"}))
	f.Add(layerTar(f, ent{name: "a/", typ: tar.TypeDir}, ent{name: "a/.wh..wh..opq"}, ent{name: "../x", body: "z"}))
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lim := Limits{MaxBytes: 4 << 20, MaxEntries: 2000}
		out := filepath.Join(t.TempDir(), "img")
		for _, layers := range [][]Layer{memLayers(data), memLayers(lower, data)} {
			fh, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = Build(t.Context(), layers, fh, lim)
			fh.Close()
		}
	})
}

// FuzzApply fuzzes the unpacker's merge of untrusted layers in memory:
// tar parsing, path confinement, whiteouts, links and the final walk.
func FuzzApply(f *testing.F) {
	lower := layerTar(f, ent{name: "etc/", typ: tar.TypeDir}, ent{name: "etc/passwd", body: "root"}, ent{name: "l", typ: tar.TypeSymlink, link: "/etc"})
	f.Add(lower)
	f.Add(layerTar(f, ent{name: "etc/.wh.passwd"}, ent{name: "l/x", body: "y"}, ent{name: "h", typ: tar.TypeLink, link: "etc/passwd"}))
	f.Add(layerTar(f, ent{name: "a/", typ: tar.TypeDir}, ent{name: "a/.wh..wh..opq"}, ent{name: "../x", body: "z"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		tree := newTree()
		for i, layer := range [][]byte{lower, data} {
			tr := tar.NewReader(bytes.NewReader(layer))
			for k := 0; k < 10000; k++ {
				h, err := tr.Next()
				if err != nil {
					break
				}
				if _, err := tree.apply(i, k, h); err != nil {
					var ee *EntryError
					if errors.As(err, &ee) {
						t.Fatalf("apply returned a located error: %v", err)
					}
				}
			}
		}
		_ = tree.walk(func(p string, n *node) error {
			if strings.HasPrefix(p, "/") || strings.Contains("/"+p+"/", "/../") {
				t.Fatalf("walk produced path %q outside the root", p)
			}
			return nil
		})
	})
}

// TestDeepPaths: the directories a path implies count against the entry
// cap, paths more than 256 components deep are refused, and a layer of
// deep entries costs memory and time in proportion to what it holds.
// (Before: 50 entries 2,040 levels deep cost 53 MiB of heap and 3.7 s,
// and their 102,000 implied directories counted as 50 entries.)
func TestDeepPaths(t *testing.T) {
	deep := func(n, depth int) []ent {
		var es []ent
		for i := range n {
			es = append(es, ent{name: fmt.Sprintf("r%d/", i) + strings.Repeat("d/", depth-2) + "f", body: "x"})
		}
		return es
	}
	// 2,040 levels: refused, at once.
	start := time.Now()
	if _, _, err := build(t, memLayers(layerTar(t, deep(50, 2040)...)), Limits{}); !errors.Is(err, ErrNameTooLong) {
		t.Fatalf("2040 levels = %v; want ErrNameTooLong", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("refusing took %s", took)
	}
	// 50 entries of 250 levels imply 12,450 directories: over a cap of
	// 5,000 entries, in both the one-pass and the exact merge.
	tars := layerTar(t, deep(50, 250)...)
	if _, _, err := build(t, memLayers(tars), Limits{MaxEntries: 5000}); !errors.Is(err, ErrLimit) {
		t.Fatalf("12,500 nodes under a cap of 5,000 = %v", err)
	}
	if _, _, err := build(t, memLayers(layerTar(t, ent{name: "x", body: "x"}), tars), Limits{MaxEntries: 5000}); !errors.Is(err, ErrLimit) {
		t.Fatalf("two layers, 12,500 nodes under a cap of 5,000 = %v", err)
	}
	// Through a symlink, a short name lands deep: held to the same caps.
	chain := strings.TrimSuffix(strings.Repeat("a/", 200), "/")
	through := layerTar(t, ent{name: chain + "/", typ: tar.TypeDir}, ent{name: "l", typ: tar.TypeSymlink, link: chain},
		ent{name: "l/" + strings.Repeat("b/", 100) + "f", body: "x"})
	if _, _, err := build(t, memLayers(through), Limits{}); !errors.Is(err, ErrNameTooLong) {
		t.Fatalf("300 levels through a symlink = %v; want ErrNameTooLong", err)
	}
	// Within the caps it builds, with the heap bounded by what it holds.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, st, err := build(t, memLayers(tars), Limits{})
	runtime.ReadMemStats(&after)
	if err != nil || st.Entries != 50*250 {
		t.Fatalf("Build = %+v, %v", st, err)
	}
	// What the ext4 writer (hcsshim's compactext4) allocates per
	// directory grows with its depth, which maxDepth bounds: about 60 KiB
	// a node here, 250 deep; a cap per node holds it to that.
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MiB allocated in all for %d nodes from %d KiB of layer", grew>>20, st.Entries, len(tars)>>10)
	if perNode := grew / uint64(st.Entries); perNode > 256<<10 {
		t.Fatalf("%d KiB allocated per node", perNode>>10)
	}
}
