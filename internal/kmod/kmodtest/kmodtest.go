// Package kmodtest makes fake kernel modules and kernels for tests.
package kmodtest

import (
	"bytes"
	"encoding/binary"
	"strings"
)

// Module is a minimal ELF64 relocatable file whose .modinfo holds
// fields, as a kernel module's does.
func Module(fields ...string) []byte {
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

// BzImage is a fake bzImage: a setup header naming version, then an xz
// payload (compressed by xz(1) with the x86 BCJ filter, as Linux does)
// holding a small ELF file.
func BzImage(version string, xz func([]byte) ([]byte, error)) ([]byte, error) {
	elf := append([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1}, bytes.Repeat([]byte("text "), 200)...)
	payload, err := xz(elf)
	if err != nil {
		return nil, err
	}
	img := make([]byte, 0x400)
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x20e:], 0x100) // version string at 0x300
	copy(img[0x300:], version+" (test@example) #1 SMP\x00")
	img = append(img, payload...)
	return append(img, 0, 0, 0, 0), nil
}
