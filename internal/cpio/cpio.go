// Package cpio writes "newc" cpio archives, the format the Linux kernel
// unpacks as an initramfs.
package cpio

import (
	"fmt"
	"io"
	"strings"
)

// Mode bits of the entries (the S_IF* of stat(2)).
const (
	TypeDir     = 0o040000
	TypeReg     = 0o100000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
)

// Writer writes one archive.
type Writer struct {
	w   io.Writer
	ino uint32
	err error
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, ino: 1} }

func pad4(n int) int { return (4 - n%4) % 4 }

func (w *Writer) entry(name string, mode uint32, data []byte, rmajor, rminor uint32) error {
	if w.err != nil {
		return w.err
	}
	name = strings.TrimPrefix(name, "/")
	if name == "" || strings.Contains(name, "\x00") {
		return fmt.Errorf("cpio: invalid name %q", name)
	}
	nlink := uint32(1)
	if mode&0o170000 == TypeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		w.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	w.ino++
	buf := make([]byte, 0, len(hdr)+len(name)+1+3+len(data)+3)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(hdr)+len(name)+1))...)
	buf = append(buf, data...)
	buf = append(buf, make([]byte, pad4(len(data)))...)
	if _, err := w.w.Write(buf); err != nil {
		w.err = fmt.Errorf("cpio: writing %s: %w", name, err)
	}
	return w.err
}

// Dir adds a directory.
func (w *Writer) Dir(name string, perm uint32) error {
	return w.entry(name, TypeDir|perm&0o7777, nil, 0, 0)
}

// File adds a regular file.
func (w *Writer) File(name string, perm uint32, data []byte) error {
	return w.entry(name, TypeReg|perm&0o7777, data, 0, 0)
}

// Symlink adds a symbolic link.
func (w *Writer) Symlink(name, target string) error {
	return w.entry(name, TypeSymlink|0o777, []byte(target), 0, 0)
}

// CharDev adds a character device node (the kernel needs /dev/console
// before init runs).
func (w *Writer) CharDev(name string, perm, major, minor uint32) error {
	return w.entry(name, TypeChar|perm&0o7777, nil, major, minor)
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error { return w.entry("TRAILER!!!", 0, nil, 0, 0) }
