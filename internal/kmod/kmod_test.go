package kmod

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/bangerdev/banger/internal/kmod/kmodtest"
	"github.com/ulikunitz/xz"
)

func TestParse(t *testing.T) {
	ko := kmodtest.Module("license=GPL", "softdep=pre: crypto-crc32c post: foo", "alias=fs-ext4", "alias=ext3",
		"depends=jbd2,mbcache,crc16", "intree=Y", "name=ext4", "vermagic=6.1.0-56-amd64 SMP")
	want := Info{Name: "ext4", Depends: []string{"jbd2", "mbcache", "crc16"}, PreDeps: []string{"crypto-crc32c"}, Aliases: []string{"fs-ext4", "ext3"}}

	var gz, zs, xzb bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(ko)
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(ko)
	zw.Close()
	xw, _ := xz.NewWriter(&xzb)
	xw.Write(ko)
	xw.Close()
	for name, data := range map[string][]byte{"plain": ko, "gzip": gz.Bytes(), "zstd": zs.Bytes(), "xz": xzb.Bytes()} {
		got, err := Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: Parse = %+v, want %+v", name, got, want)
		}
	}
	if _, err := Parse([]byte("not an elf")); err == nil {
		t.Fatal("Parse accepted junk")
	}
}

func TestResolveOrder(t *testing.T) {
	idx := NewIndex([]Info{
		{Name: "virtio_blk", Depends: []string{"virtio", "virtio_ring"}},
		{Name: "virtio_mmio", Depends: []string{"virtio", "virtio_ring"}},
		{Name: "virtio", Depends: []string{"virtio_ring"}},
		{Name: "virtio_ring"},
		{Name: "ext4", Depends: []string{"jbd2", "mbcache", "crc16"}, PreDeps: []string{"crypto-crc32c"}, Aliases: []string{"fs-ext4"}},
		{Name: "jbd2"},
		{Name: "mbcache"},
		{Name: "crc16"},
		{Name: "crc32c_intel", Aliases: []string{"crypto-crc32c", "crc32c"}},
		{Name: "crc32c_generic", Aliases: []string{"crypto-crc32c", "crc32c"}},
		{Name: "overlay", PreDeps: []string{"not-in-this-kernel"}},
	}, []string{"kernel/lib/libcrc32c.ko"})

	got, err := idx.Resolve("virtio_mmio", "virtio-blk", "fs-ext4", "overlay", "libcrc32c")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range got {
		names = append(names, m.Name)
	}
	want := []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "crc32c_generic", "crc16", "jbd2", "mbcache", "ext4", "overlay"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("order = %v\nwant    %v", names, want)
	}

	if _, err := idx.Resolve("nvme"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing module = %v", err)
	}
	broken := NewIndex([]Info{{Name: "a", Depends: []string{"b"}}, {Name: "b", Depends: []string{"gone"}}}, nil)
	if _, err := broken.Resolve("a"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "needed by a <- b") {
		t.Fatalf("missing dependency = %v", err)
	}
	cyclic := NewIndex([]Info{{Name: "a", Depends: []string{"b"}}, {Name: "b", Depends: []string{"a"}}}, nil)
	if _, err := cyclic.Resolve("a"); !errors.Is(err, ErrCycle) {
		t.Fatalf("cycle = %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var gz bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(kmodtest.Module("depends=virtio_ring", "name=virtio"))
	gw.Close()
	write("kernel/drivers/virtio/virtio.ko.gz", gz.Bytes())
	write("kernel/drivers/virtio/virtio_ring.ko", kmodtest.Module("depends=")) // no name=: from the file name
	write("kernel/drivers/block/virtio-blk.ko", kmodtest.Module("depends=virtio,virtio_ring"))
	write("modules.builtin", []byte("kernel/fs/overlayfs/overlay.ko\n"))
	idx, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := idx.Resolve("virtio_blk", "overlay")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Name != "virtio_ring" || got[1].Path != "kernel/drivers/virtio/virtio.ko.gz" || got[2].Name != "virtio_blk" {
		t.Fatalf("resolved %+v", got)
	}
}

// FuzzParse: module files come from kernel packages and images banger did
// not build; parsing one must never crash the daemon.
func FuzzParse(f *testing.F) {
	f.Add(kmodtest.Module("name=x", "depends=a,b", "softdep=pre: c"))
	f.Add([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = Parse(data)
	})
}

func TestStripSignature(t *testing.T) {
	ko := kmodtest.Module("name=x")
	sig := bytes.Repeat([]byte{0xab}, 300)
	info := make([]byte, 12)
	binary.BigEndian.PutUint32(info[8:], uint32(len(sig)))
	signed := append(append(append(append([]byte(nil), ko...), sig...), info...), "~Module signature appended~\n"...)
	if got := StripSignature(signed); !bytes.Equal(got, ko) {
		t.Fatalf("stripped to %d bytes, want %d", len(got), len(ko))
	}
	if got := StripSignature(ko); !bytes.Equal(got, ko) {
		t.Fatal("an unsigned module changed")
	}
	if _, err := Parse(StripSignature(signed)); err != nil {
		t.Fatal(err)
	}
}
