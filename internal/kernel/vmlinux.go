package kernel

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"time"

	"github.com/klauspost/compress/zstd"
)

// xzTimeout bounds one decompression: a Debian kernel takes well under
// a second; a stream crafted to be slow is ended.
const xzTimeout = 2 * time.Minute

// unxz decompresses the first xz stream of r with xz(1), ignoring what
// follows it.
func unxz(r io.Reader) (io.Reader, error) {
	ctx, cancel := context.WithTimeout(context.Background(), xzTimeout)
	defer cancel()
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "xz", "--decompress", "--stdout", "--single-stream")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, &limitedBuffer{&out, maxVmlinux}, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("decompressing the kernel needs xz (apt install xz-utils): %w", err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("xz: did not finish within %s", xzTimeout)
		}
		return nil, fmt.Errorf("xz: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return &out, nil
}

type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.b.Len()+len(p) > l.max {
		return 0, errors.New("decompressed kernel too large")
	}
	return l.b.Write(p)
}

// ErrNoELF means no ELF kernel could be found in a kernel image.
var ErrNoELF = errors.New("no ELF kernel inside")

const elfMagic = "\x7fELF"

// maxVmlinux bounds a decompressed kernel.
const maxVmlinux = 512 << 20

// Vmlinux returns the uncompressed ELF kernel inside a bzImage (or the
// image itself when it already is an ELF). Firecracker boots only ELF
// kernels, and QEMU's microvm boots one through its PVH note far faster
// than a bzImage under emulation, where decompression dominates the boot.
func Vmlinux(image []byte) ([]byte, error) {
	if bytes.HasPrefix(image, []byte(elfMagic)) {
		return image, nil
	}
	type codec struct {
		magic []byte
		open  func(io.Reader) (io.Reader, error)
	}
	codecs := []codec{
		// Linux compresses with xz's x86 BCJ filter, which no Go xz reader
		// implements: xz(1) from xz-utils does the work.
		{[]byte{0xfd, '7', 'z', 'X', 'Z', 0}, unxz},
		{[]byte{0x28, 0xb5, 0x2f, 0xfd}, func(r io.Reader) (io.Reader, error) {
			return zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		}},
		{[]byte{0x1f, 0x8b, 0x08}, func(r io.Reader) (io.Reader, error) {
			gr, err := gzip.NewReader(r)
			if err != nil {
				return nil, err
			}
			gr.Multistream(false)
			return gr, nil
		}},
	}
	// The payload sits after the real-mode setup code; try every place a
	// known compressor's magic appears until one yields an ELF.
	for _, c := range codecs {
		for off := 0; ; {
			i := bytes.Index(image[off:], c.magic)
			if i < 0 {
				break
			}
			start := off + i
			off = start + 1
			r, err := c.open(bytes.NewReader(image[start:]))
			if err != nil {
				continue
			}
			var out bytes.Buffer
			// Trailing bytes after the stream are expected; what matters is
			// that the stream decompressed to an ELF file.
			_, _ = io.Copy(&out, io.LimitReader(r, maxVmlinux))
			if bytes.HasPrefix(out.Bytes(), []byte(elfMagic)) && out.Len() > 64 {
				return out.Bytes(), nil
			}
		}
	}
	return nil, fmt.Errorf("%w: not an ELF file, and no xz, zstd or gzip payload that decompresses to one", ErrNoELF)
}
