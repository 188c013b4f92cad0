// Package logcap keeps a log a VMM appends to within a size: once the
// live file passes half of it, its content moves to PATH.1 (replacing
// the older half) and the live file starts again from empty. A guest
// that floods its console therefore costs at most the cap on the host,
// wherever the file lives (in system mode /run, a tmpfs: RAM).
//
// The writer must open the file with O_APPEND, so its next write lands
// at the new end after a truncation, not at its old offset (a hole).
package logcap

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Older is the suffix of the rotated half.
const Older = ".1"

// ErrNotAppending: the file's writer does not append (a hole at its
// start since the last cut), so cutting it only makes holes; rotation of
// it must stop.
var ErrNotAppending = errors.New("its writer does not append: it cannot be cut")

// Rotate moves path's content to path.1 when path is over max/2 bytes.
// What the writer appends between the copy and the truncation is lost:
// a few bytes, at the moment a flood is being cut anyway.
func Rotate(path string, max int64) (bool, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if fi.Size() <= max/2 {
		return false, nil
	}
	src, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer src.Close()
	if data, err := unix.Seek(int(src.Fd()), 0, unix.SEEK_DATA); err == nil && data > 0 {
		return false, fmt.Errorf("%s: %w", path, ErrNotAppending)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".rotate-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	// The newest max/2 bytes: a writer faster than the sweep must not
	// make the older half larger than its share.
	keep := min(fi.Size(), max/2)
	if _, err := io.Copy(tmp, io.NewSectionReader(src, fi.Size()-keep, keep)); err != nil {
		tmp.Close()
		return false, fmt.Errorf("rotating %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(tmp.Name(), path+Older); err != nil {
		return false, err
	}
	return true, src.Truncate(0)
}
