package kernel

import (
	"bytes"
	"errors"
	"testing"

	"os/exec"
)

func TestVmlinux(t *testing.T) {
	elf := append([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1}, bytes.Repeat([]byte("kernel text "), 100)...)
	// As the kernel build does: xz with the x86 BCJ filter.
	cmd := exec.Command("xz", "--check=crc32", "--x86", "--lzma2=preset=6", "--stdout")
	cmd.Stdin = bytes.NewReader(elf)
	payload, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz: %v", err)
	}
	// A bzImage: setup code, a stray xz magic that is no stream, the
	// payload, then trailing bytes.
	var bz bytes.Buffer
	bz.Write(bytes.Repeat([]byte{0x90}, 512))
	bz.Write([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2, 3})
	bz.Write(payload)
	bz.Write([]byte{1, 2, 3, 4})
	got, err := Vmlinux(bz.Bytes())
	if err != nil || !bytes.Equal(got, elf) {
		t.Fatalf("Vmlinux = %d bytes, %v", len(got), err)
	}
	if got, err := Vmlinux(elf); err != nil || !bytes.Equal(got, elf) {
		t.Fatal("an ELF kernel is not returned as is")
	}
	if _, err := Vmlinux([]byte("MZ nothing here")); !errors.Is(err, ErrNoELF) {
		t.Fatalf("junk = %v", err)
	}
}
