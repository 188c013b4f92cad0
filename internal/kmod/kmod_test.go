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
	"github.com/ulikunitz/xz"
)

// fakeModule is a minimal ELF64 relocatable file whose .modinfo holds
// fields, as a kernel module's does.
func fakeModule(fields ...string) []byte {
	modinfo := []byte(strings.Join(fields, "\x00") + "\x00")
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	le := binary.LittleEndian
	var b bytes.Buffer
	hdr := make([]byte, 64)
	copy(hdr, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	le.PutUint16(hdr[16:], 1)  // ET_REL
	le.PutUint16(hdr[18:], 62) // EM_X86_64
	le.PutUint32(hdr[20:], 1)
	modOff := uint64(64)
	strOff := modOff + uint64(len(modinfo))
	shOff := (strOff + uint64(len(shstrtab)) + 7) &^ 7
	le.PutUint64(hdr[40:], shOff)
	le.PutUint16(hdr[52:], 64) // ehsize
	le.PutUint16(hdr[58:], 64) // shentsize
	le.PutUint16(hdr[60:], 3)  // shnum
	le.PutUint16(hdr[62:], 2)  // shstrndx
	b.Write(hdr)
	b.Write(modinfo)
	b.Write(shstrtab)
	b.Write(make([]byte, int(shOff)-b.Len()))
	section := func(name, typ uint32, off, size uint64) {
		sh := make([]byte, 64)
		le.PutUint32(sh[0:], name)
		le.PutUint32(sh[4:], typ)
		le.PutUint64(sh[24:], off)
		le.PutUint64(sh[32:], size)
		le.PutUint64(sh[48:], 1)
		b.Write(sh)
	}
	section(0, 0, 0, 0)
	section(1, 1, modOff, uint64(len(modinfo)))   // .modinfo, PROGBITS
	section(10, 3, strOff, uint64(len(shstrtab))) // .shstrtab, STRTAB
	return b.Bytes()
}

func TestParse(t *testing.T) {
	ko := fakeModule("license=GPL", "softdep=pre: crypto-crc32c post: foo", "alias=fs-ext4", "alias=ext3",
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
	gw.Write(fakeModule("depends=virtio_ring", "name=virtio"))
	gw.Close()
	write("kernel/drivers/virtio/virtio.ko.gz", gz.Bytes())
	write("kernel/drivers/virtio/virtio_ring.ko", fakeModule("depends=")) // no name=: from the file name
	write("kernel/drivers/block/virtio-blk.ko", fakeModule("depends=virtio,virtio_ring"))
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
	f.Add(fakeModule("name=x", "depends=a,b", "softdep=pre: c"))
	f.Add([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = Parse(data)
	})
}
