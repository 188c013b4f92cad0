package logcap

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
)

// chunk is the most one emit carries.
const chunk = 64 << 10

// Stream sends the log, its older half first, in chunks; it returns how
// far into the live file it read, where a follower goes on from.
func Stream(path string, emit func([]byte) error) (int64, error) {
	if _, err := copyFile(path+Older, 0, emit); err != nil {
		return 0, err
	}
	return copyFile(path, 0, emit)
}

// From sends what the live file holds past offset, and returns the new
// offset; a file shorter than offset was rotated, and is read from its
// start.
func From(path string, offset int64, emit func([]byte) error) (int64, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() < offset {
		offset = 0
	}
	return copyFile(path, offset, emit)
}

func copyFile(path string, offset int64, emit func([]byte) error) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return offset, nil
	}
	if err != nil {
		return offset, err
	}
	defer f.Close()
	buf := make([]byte, chunk)
	for {
		n, err := f.ReadAt(buf, offset)
		if n > 0 {
			offset += int64(n)
			if eerr := emit(buf[:n]); eerr != nil {
				return offset, eerr
			}
		}
		if errors.Is(err, io.EOF) {
			return offset, nil
		}
		if err != nil {
			return offset, err
		}
	}
}

// Tail is the log's last n lines, read from the end a block at a time,
// and the live file's size (a follower's start).
func Tail(path string, n int) ([]byte, int64, error) {
	live, size, err := tailOf(path, n)
	if err != nil {
		return nil, 0, err
	}
	if lines(live) < n {
		older, _, err := tailOf(path+Older, n-lines(live))
		if err != nil {
			return nil, 0, err
		}
		live = append(older, live...)
	}
	return cut(live, n), size, nil
}

func lines(b []byte) int {
	n := bytes.Count(b, []byte("\n"))
	if len(b) > 0 && b[len(b)-1] != '\n' {
		n++
	}
	return n
}

// cut keeps b's last n lines.
func cut(b []byte, n int) []byte {
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			if n--; n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

// tailOf reads blocks from the end of path until they hold n lines or
// the file's start.
func tailOf(path string, n int) ([]byte, int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := fi.Size()
	var out []byte
	for off := size; off > 0 && lines(out) <= n; {
		step := min(off, chunk)
		off -= step
		block := make([]byte, step)
		if _, err := f.ReadAt(block, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, err
		}
		out = append(block, out...)
	}
	return out, size, nil
}
