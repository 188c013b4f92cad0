package rootfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// setInodeBitmapPadding marks the bits past the last inode of every
// group's inode bitmap as in use. tar2ext4 leaves them clear; the kernel
// does not care, but e2fsck reports the file system as damaged, and an image
// that fails fsck is not one we want to ship.
func setInodeBitmapPadding(f *os.File) error {
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return fmt.Errorf("reading the superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != 0xEF53 {
		return errors.New("reading the superblock: not ext4")
	}
	const (
		roCompatGdtCsum      = 0x10
		roCompatMetadataCsum = 0x400
		incompat64bit        = 0x80
	)
	if le.Uint32(sb[0x64:])&(roCompatGdtCsum|roCompatMetadataCsum) != 0 {
		return errors.New("inode bitmaps carry checksums; refusing to patch them")
	}
	blocks := uint64(le.Uint32(sb[4:]))
	firstData := uint64(le.Uint32(sb[20:]))
	bs := int64(1024) << le.Uint32(sb[24:])
	perGroup := uint64(le.Uint32(sb[32:]))
	inodesPerGroup := int64(le.Uint32(sb[40:]))
	descSize := int64(32)
	is64 := le.Uint32(sb[0x60:])&incompat64bit != 0
	if is64 {
		blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		descSize = int64(le.Uint16(sb[0xFE:]))
	}
	if perGroup == 0 || inodesPerGroup <= 0 || inodesPerGroup > bs*8 {
		return errors.New("reading the superblock: implausible geometry")
	}
	groups := (blocks - firstData + perGroup - 1) / perGroup
	gdt := int64(firstData+1) * bs
	bitmap := make([]byte, bs)
	desc := make([]byte, descSize)
	for g := range int64(groups) {
		if _, err := f.ReadAt(desc, gdt+g*descSize); err != nil {
			return fmt.Errorf("reading group descriptor %d: %w", g, err)
		}
		block := int64(le.Uint32(desc[4:]))
		if is64 && descSize >= 0x28 {
			block |= int64(le.Uint32(desc[0x24:])) << 32
		}
		if _, err := f.ReadAt(bitmap, block*bs); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading inode bitmap of group %d: %w", g, err)
		}
		for bit := inodesPerGroup; bit < bs*8; bit++ {
			bitmap[bit/8] |= 1 << (bit % 8)
		}
		if _, err := f.WriteAt(bitmap, block*bs); err != nil {
			return fmt.Errorf("writing inode bitmap of group %d: %w", g, err)
		}
	}
	return nil
}
