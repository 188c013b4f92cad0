package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"
)

// Pack makes a version's tarball of the binaries in dir:
// banger-VERSION/NAME for each of Binaries, mode 0755.
func Pack(dir, version string) ([]byte, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range Binaries {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("packing release %s: %w", version, err)
		}
		hdr := &tar.Header{Name: "banger-" + version + "/" + name, Mode: 0o755, Size: int64(len(b)),
			Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("packing release %s: %w", version, err)
		}
		if _, err := tw.Write(b); err != nil {
			return nil, fmt.Errorf("packing release %s: %w", version, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("packing release %s: %w", version, err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("packing release %s: %w", version, err)
	}
	return buf.Bytes(), nil
}

// ErrBadTarball: a tarball holds something other than the release's
// binaries.
var ErrBadTarball = errors.New("not a banger release tarball")

// Unpack writes the binaries of a tarball into dir, which must exist and
// hold none of them. Only regular files named NAME or DIR/NAME, NAME one
// of Binaries, each once and at most MaxBinary bytes, are taken; a
// directory entry is skipped; anything else (a link, a device, another
// name, a path that climbs) refuses the tarball, and what was written is
// removed.
func Unpack(tarball []byte, dir string) (err error) {
	var written []string
	defer func() {
		if err != nil {
			for _, p := range written {
				_ = os.Remove(p)
			}
		}
	}()
	gz, err := gzip.NewReader(bytes.NewReader(tarball))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadTarball, err)
	}
	tr := tar.NewReader(gz)
	var seen []string
	for n := 0; ; n++ {
		if n == 64 {
			return fmt.Errorf("%w: more than 64 entries", ErrBadTarball)
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadTarball, err)
		}
		name := path.Clean(hdr.Name)
		if hdr.Typeflag == tar.TypeDir && !path.IsAbs(name) && !slices.Contains(Binaries, path.Base(name)) {
			continue
		}
		base := path.Base(name)
		if dirPart := path.Dir(name); dirPart != "." && (path.IsAbs(name) || dirPart == ".." || path.Dir(dirPart) != ".") {
			return fmt.Errorf("%w: entry %q is not NAME or DIR/NAME", ErrBadTarball, hdr.Name)
		}
		switch {
		case !slices.Contains(Binaries, base):
			return fmt.Errorf("%w: entry %q is none of %v", ErrBadTarball, hdr.Name, Binaries)
		case hdr.Typeflag != tar.TypeReg:
			return fmt.Errorf("%w: entry %q is not a regular file", ErrBadTarball, hdr.Name)
		case hdr.Size > MaxBinary:
			return fmt.Errorf("%w: entry %q is %d bytes, more than %d", ErrBadTarball, hdr.Name, hdr.Size, MaxBinary)
		case slices.Contains(seen, base):
			return fmt.Errorf("%w: %s twice", ErrBadTarball, base)
		}
		seen = append(seen, base)
		p := filepath.Join(dir, base)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
		if err != nil {
			return fmt.Errorf("unpacking %s: %w", base, err)
		}
		written = append(written, p)
		_, err = io.Copy(f, io.LimitReader(tr, MaxBinary))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("unpacking %s: %w", base, err)
		}
	}
	for _, name := range Binaries {
		if !slices.Contains(seen, name) {
			return fmt.Errorf("%w: it has no %s", ErrBadTarball, name)
		}
	}
	return nil
}
