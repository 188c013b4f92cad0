// Package deb reads Debian binary packages: an ar archive whose data.tar
// member (xz, zstd, gzip or plain) holds the files.
package deb

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrNotDeb means the file is not a Debian package.
var ErrNotDeb = errors.New("not a Debian package")

// Data returns a tar reader over the package's files. close releases
// the decompressor.
func Data(r io.Reader) (tr *tar.Reader, close func(), err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, 8)
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != "!<arch>\n" {
		return nil, nil, fmt.Errorf("%w (no ar header)", ErrNotDeb)
	}
	for {
		hdr := make([]byte, 60)
		if _, err := io.ReadFull(br, hdr); err != nil {
			return nil, nil, fmt.Errorf("%w: no data.tar member", ErrNotDeb)
		}
		if string(hdr[58:60]) != "`\n" {
			return nil, nil, fmt.Errorf("%w: corrupt ar member header", ErrNotDeb)
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, nil, fmt.Errorf("%w: corrupt ar member size", ErrNotDeb)
		}
		if !strings.HasPrefix(name, "data.tar") {
			if _, err := io.CopyN(io.Discard, br, size+size%2); err != nil {
				return nil, nil, fmt.Errorf("%w: truncated", ErrNotDeb)
			}
			continue
		}
		body := io.LimitReader(br, size)
		switch name {
		case "data.tar":
			return tar.NewReader(body), func() {}, nil
		case "data.tar.xz":
			xr, err := xz.NewReader(bufio.NewReaderSize(body, 1<<20))
			if err != nil {
				return nil, nil, fmt.Errorf("reading data.tar.xz: %w", err)
			}
			return tar.NewReader(xr), func() {}, nil
		case "data.tar.zst":
			zr, err := zstd.NewReader(body, zstd.WithDecoderConcurrency(1))
			if err != nil {
				return nil, nil, fmt.Errorf("reading data.tar.zst: %w", err)
			}
			return tar.NewReader(zr), zr.Close, nil
		case "data.tar.gz":
			gr, err := gzip.NewReader(body)
			if err != nil {
				return nil, nil, fmt.Errorf("reading data.tar.gz: %w", err)
			}
			return tar.NewReader(gr), func() {}, nil
		default:
			return nil, nil, fmt.Errorf("%w: unsupported member %s", ErrNotDeb, name)
		}
	}
}

// Build writes a minimal package holding the given data.tar bytes, for
// tests (of this package and its users).
func Build(dataTar []byte) []byte {
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	member := func(name string, data []byte) {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 0, 0, 0, "100644", len(data))
		b.Write(data)
		if len(data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	member("control.tar.gz", nil)
	member("data.tar", dataTar)
	return b.Bytes()
}
