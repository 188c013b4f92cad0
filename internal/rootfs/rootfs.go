// Package rootfs turns an image's layers into one read-only ext4 file
// system image, written directly from the layer streams: no unpacking to a
// host directory, no loop mounts, no root. Layers are merged exactly as the
// OCI image spec says (whiteouts, opaque directories, hard links across
// layers), every entry is confined to the image root, and limits bound what
// a hostile image can make us write.
//
// A single-layer image is converted in one streaming pass. Anything else
// (or a single layer that rewrites its own paths) takes two passes: the
// first reads only headers and builds the merged tree, the second copies
// the bytes of the files that survive.
package rootfs

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/Microsoft/hcsshim/ext4/tar2ext4"
	"github.com/klauspost/compress/gzip"
)

// Layer is one layer of an image, the lowest first.
type Layer struct {
	// Name appears in errors: "layer 2 (sha256:ab12…)".
	Name string
	// Open returns the layer's uncompressed tar stream. A verifying
	// reader should fail at EOF on a digest mismatch: Build reads every
	// stream to its end.
	Open func() (io.ReadCloser, error)
}

// GzipFile is a layer read from a gzip-compressed tar file, as test
// images and benchmarks keep them.
func GzipFile(name, path string) Layer {
	return Layer{Name: name, Open: func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		gz, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return struct {
			io.Reader
			io.Closer
		}{gz, f}, nil
	}}
}

// Limits bound what an image may unpack to.
type Limits struct {
	MaxBytes   int64 // uncompressed bytes over all layers (and passes count once)
	MaxEntries int   // entries over all layers
}

// DefaultLimits are generous for real images and stop decompression bombs.
func DefaultLimits() Limits { return Limits{MaxBytes: 64 << 30, MaxEntries: 4 << 20} }

// Stats describe a build.
type Stats struct {
	Entries int   // tar entries read (first pass)
	Files   int   // paths in the result
	Bytes   int64 // file bytes written
	Passes  int   // 1 for the streaming path, 2 for the exact one
	Size    int64 // bytes of the ext4 image
	// Init is where the image keeps systemd, to run as its init: one of
	// /sbin/init, /lib/systemd/systemd, /usr/lib/systemd/systemd; ""
	// when it has none.
	Init string
}

// errNeedExact makes the streaming path hand over to the two-pass one.
var errNeedExact = errors.New("layer rewrites its own paths")

// Build writes the ext4 image of layers to out, which it truncates first.
func Build(ctx context.Context, layers []Layer, out *os.File, lim Limits) (Stats, error) {
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultLimits().MaxBytes
	}
	if lim.MaxEntries <= 0 {
		lim.MaxEntries = DefaultLimits().MaxEntries
	}
	if len(layers) == 1 {
		st, err := convert(ctx, out, func(e *emitter) (Stats, error) { return streamOne(ctx, layers[0], e, lim) })
		if !errors.Is(err, errNeedExact) {
			return st, err
		}
	}
	return convert(ctx, out, func(e *emitter) (Stats, error) { return exact(ctx, layers, e, lim) })
}

// convert runs produce, which writes a tar stream of the final tree, into
// tar2ext4 writing out.
func convert(ctx context.Context, out *os.File, produce func(*emitter) (Stats, error)) (Stats, error) {
	if err := out.Truncate(0); err != nil {
		return Stats{}, fmt.Errorf("truncating %s: %w", out.Name(), err)
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return Stats{}, fmt.Errorf("seeking %s: %w", out.Name(), err)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := tar2ext4.ConvertTarToExt4(pr, out, tar2ext4.InlineData)
		pr.CloseWithError(err) // unblock the producer if the writer failed
		done <- err
	}()
	bw := bufio.NewWriterSize(pw, 1<<20)
	e := &emitter{tw: tar.NewWriter(bw), ctx: ctx}
	st, err := produce(e)
	if err == nil {
		err = e.tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		pw.CloseWithError(err)
		<-done
		return Stats{}, err
	}
	pw.Close()
	if err := <-done; err != nil {
		return Stats{}, fmt.Errorf("writing ext4: %w", err)
	}
	if err := setInodeBitmapPadding(out); err != nil {
		return Stats{}, fmt.Errorf("finishing ext4: %w", err)
	}
	fi, err := out.Stat()
	if err != nil {
		return Stats{}, err
	}
	st.Size = fi.Size()
	return st, nil
}

// emitter writes the final tree as a tar stream for tar2ext4: parents
// before children, link targets before links.
type emitter struct {
	tw  *tar.Writer
	ctx context.Context
	n   int
}

func (e *emitter) header(name string, h *tar.Header) error {
	if e.n++; e.n%1024 == 0 && e.ctx.Err() != nil {
		return e.ctx.Err()
	}
	hdr := *h
	hdr.Name = name
	if name == "" {
		hdr.Name = "."
	}
	hdr.Format = tar.FormatUnknown
	if hdr.Typeflag != tar.TypeReg {
		hdr.Size = 0
	}
	if hdr.Typeflag == tar.TypeLink {
		hdr.Mode, hdr.Uid, hdr.Gid, hdr.PAXRecords = 0, 0, 0, nil
	}
	if err := e.tw.WriteHeader(&hdr); err != nil {
		return fmt.Errorf("encoding %s: %w", name, err)
	}
	return nil
}

func (e *emitter) link(name, target string) error {
	return e.header(name, &tar.Header{Typeflag: tar.TypeLink, Linkname: target})
}

// capped counts the bytes of every layer stream against the limit.
type capped struct {
	r    io.Reader
	left *int64
}

func (c capped) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.left -= int64(n)
	if *c.left < 0 {
		return n, ErrLimit
	}
	return n, err
}

// layerReader opens a layer's stream under the byte budget.
func layerReader(l Layer, left *int64) (*tar.Reader, io.Reader, io.Closer, error) {
	rc, err := l.Open()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("opening %s: %w", l.Name, err)
	}
	r := capped{r: rc, left: left}
	return tar.NewReader(r), r, rc, nil
}

// drain reads a stream to its end, so a verifying reader gets to check it.
func drain(l Layer, r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return layerErr(l, err)
	}
	return nil
}

func layerErr(l Layer, err error) error {
	if errors.Is(err, ErrLimit) {
		return fmt.Errorf("%s: %w", l.Name, err)
	}
	return fmt.Errorf("reading %s: %w", l.Name, err)
}

func checkLimits(l Layer, hdr *tar.Header, st *Stats, lim Limits) error {
	st.Entries++
	if st.Entries > lim.MaxEntries {
		return &EntryError{Layer: l.Name, Entry: hdr.Name, Err: fmt.Errorf("%w: more than %d entries", ErrLimit, lim.MaxEntries)}
	}
	if hdr.Size < 0 || hdr.Size > lim.MaxBytes {
		return &EntryError{Layer: l.Name, Entry: hdr.Name, Err: fmt.Errorf("%w: %d bytes", ErrLimit, hdr.Size)}
	}
	return nil
}

// countImplied counts the directories an entry implied (a/b/c alone
// makes a and a/b) as entries: each is a node of the tree and a header
// of the image, so a layer of few, deep entries is held to the same cap.
func countImplied(l Layer, hdr *tar.Header, st *Stats, lim Limits, n int) error {
	st.Entries += n
	if st.Entries > lim.MaxEntries {
		return &EntryError{Layer: l.Name, Entry: hdr.Name, Err: fmt.Errorf("%w: more than %d entries, the directories its paths imply included", ErrLimit, lim.MaxEntries)}
	}
	return nil
}

// streamOne converts a single layer in one pass. It gives up with
// errNeedExact when the layer replaces a path it already wrote.
func streamOne(ctx context.Context, l Layer, e *emitter, lim Limits) (Stats, error) {
	var st Stats
	left := lim.MaxBytes
	tr, raw, closer, err := layerReader(l, &left)
	if err != nil {
		return st, err
	}
	defer closer.Close()
	t := newTree()
	for k := 0; ; k++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, layerErr(l, err)
		}
		if err := checkLimits(l, hdr, &st, lim); err != nil {
			return st, err
		}
		res, err := t.apply(0, k, hdr)
		if err != nil {
			return st, &EntryError{Layer: l.Name, Entry: hdr.Name, Err: err}
		}
		if err := countImplied(l, hdr, &st, lim, len(res.created)); err != nil {
			return st, err
		}
		switch res.change {
		case changeNone:
			continue
		case changeReplaced:
			return st, errNeedExact
		}
		for _, p := range t.pathsOf(res.created) {
			if err := e.header(p, &tar.Header{Typeflag: tar.TypeDir, Mode: 0o755, ModTime: hdr.ModTime}); err != nil {
				return st, err
			}
		}
		switch {
		case res.ino == nil: // a directory
			if err := e.header(res.path, metaOnly(hdr)); err != nil {
				return st, err
			}
		case hdr.Typeflag == tar.TypeLink:
			if err := e.link(res.path, res.ino.primary); err != nil {
				return st, err
			}
		default:
			res.ino.primary = res.path
			if err := e.header(res.path, &res.ino.hdr); err != nil {
				return st, err
			}
			if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
				n, err := io.Copy(e.tw, tr)
				if err != nil {
					return st, layerErr(l, err)
				}
				st.Bytes += n
			}
		}
		st.Files++
	}
	if err := drain(l, raw); err != nil {
		return st, err
	}
	st.Passes, st.Init = 1, t.systemd()
	return st, ctx.Err()
}

// exact merges any number of layers in two passes.
func exact(ctx context.Context, layers []Layer, e *emitter, lim Limits) (Stats, error) {
	var st Stats
	left := lim.MaxBytes
	t := newTree()
	for i, l := range layers {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		tr, raw, closer, err := layerReader(l, &left)
		if err != nil {
			return st, err
		}
		for k := 0; ; k++ {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				closer.Close()
				return st, layerErr(l, err)
			}
			if err := checkLimits(l, hdr, &st, lim); err != nil {
				closer.Close()
				return st, err
			}
			res, err := t.apply(i, k, hdr)
			if err == nil {
				err = countImplied(l, hdr, &st, lim, len(res.created))
			}
			if err != nil {
				closer.Close()
				var ee *EntryError
				if errors.As(err, &ee) {
					return st, err
				}
				return st, &EntryError{Layer: l.Name, Entry: hdr.Name, Err: err}
			}
		}
		err = drain(l, raw)
		closer.Close()
		if err != nil {
			return st, err
		}
	}

	// Every inode is written once, at the first path the walk finds; its
	// other paths become hard links.
	type linkPair struct{ name, target string }
	var links []linkPair
	sources := make([]map[int]*inode, len(layers))
	err := t.walk(func(p string, n *node) error {
		st.Files++
		if n.isDir() {
			return e.header(p, n.dir)
		}
		if n.ino.primary != "" {
			links = append(links, linkPair{p, n.ino.primary})
			return nil
		}
		n.ino.primary = p
		if src := n.ino.src; src.layer >= 0 {
			if sources[src.layer] == nil {
				sources[src.layer] = map[int]*inode{}
			}
			sources[src.layer][src.ordinal] = n.ino
			return nil
		}
		return e.header(p, &n.ino.hdr)
	})
	if err != nil {
		return st, err
	}
	if t.root.layer >= 0 {
		if err := e.header("", t.root.dir); err != nil {
			return st, err
		}
	}

	// Second pass: the bytes of surviving files, layer by layer; layers
	// with nothing left in the result are not read again.
	left = lim.MaxBytes
	for i, l := range layers {
		want := sources[i]
		if len(want) == 0 {
			continue
		}
		tr, raw, closer, err := layerReader(l, &left)
		if err != nil {
			return st, err
		}
		for k := 0; len(want) > 0; k++ {
			hdr, err := tr.Next()
			if err != nil {
				closer.Close()
				if errors.Is(err, io.EOF) {
					return st, fmt.Errorf("%s: %w: %d entries missing", l.Name, ErrLayerChanged, len(want))
				}
				return st, layerErr(l, err)
			}
			ino := want[k]
			if ino == nil {
				continue
			}
			delete(want, k)
			if hdr.Size != ino.hdr.Size {
				closer.Close()
				return st, &EntryError{Layer: l.Name, Entry: hdr.Name, Err: ErrLayerChanged}
			}
			if err := e.header(ino.primary, &ino.hdr); err != nil {
				closer.Close()
				return st, err
			}
			n, err := io.Copy(e.tw, tr)
			if err != nil {
				closer.Close()
				return st, layerErr(l, err)
			}
			st.Bytes += n
		}
		err = drain(l, raw)
		closer.Close()
		if err != nil {
			return st, err
		}
	}
	for _, lp := range links {
		if err := e.link(lp.name, lp.target); err != nil {
			return st, err
		}
	}
	st.Passes, st.Init = 2, t.systemd()
	return st, ctx.Err()
}
