package tree

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// The host's side of a transfer from a guest: a strict extraction takes
// only what the host asked for, as the host described it (Local.Want).

var (
	// ErrRefused: the stream held something the receiving side never
	// accepts from a peer it does not trust.
	ErrRefused = errors.New("refused")
	// ErrConflict: taking the entry would replace something of another
	// type (a directory by a file, a file by a directory).
	ErrConflict = errors.New("conflict")
)

func (x *extraction) strict() bool { return x.want != nil }

// IsGitPath says whether a component of the slash path p is .git, in any
// case: git's own directory (its config, hooks) never crosses from a
// guest to the host, and a case-insensitive file system would take .GIT
// for it.
func IsGitPath(p string) bool {
	for el := range strings.SplitSeq(p, "/") {
		if strings.EqualFold(el, ".git") {
			return true
		}
	}
	return false
}

// allowed checks one entry of a strict stream against what the host
// asked for, and returns the mode the file gets on the host.
func (x *extraction) allowed(h *tar.Header, rel string) (os.FileMode, error) {
	name := filepath.ToSlash(rel)
	if IsGitPath(name) {
		return 0, fmt.Errorf("%w: %s: a .git path", ErrRefused, name)
	}
	if sparse(h) {
		return 0, fmt.Errorf("%w: %s: a sparse tar entry", ErrRefused, name)
	}
	w, ok := x.want[name]
	if !ok {
		return 0, fmt.Errorf("%w: %s: not an entry the host asked for", ErrRefused, name)
	}
	if x.seen[name] {
		return 0, fmt.Errorf("%w: %s: sent twice", ErrRefused, name)
	}
	x.seen[name] = true
	switch {
	case w.Type == "f" && h.Typeflag == tar.TypeReg:
		if h.Size != w.Size {
			return 0, fmt.Errorf("%w: %s: %d bytes sent, the manifest said %d", ErrRefused, name, h.Size, w.Size)
		}
		if x.maxSize > 0 && x.res.Bytes+h.Size > x.maxSize {
			return 0, fmt.Errorf("%w: %s: over the transfer's cap of %d bytes", ErrRefused, name, x.maxSize)
		}
	case w.Type == "l" && h.Typeflag == tar.TypeSymlink:
		if h.Linkname != w.Link {
			return 0, fmt.Errorf("%w: %s: a symlink to %q, the manifest said %q", ErrRefused, name, h.Linkname, w.Link)
		}
	default:
		return 0, fmt.Errorf("%w: %s: tar type %q, the manifest said %q", ErrRefused, name, h.Typeflag, w.Type)
	}
	return x.hostMode(rel, os.FileMode(h.Mode)&os.ModePerm), nil
}

// hostMode is the mode a file from the guest gets: the guest's bits as
// a user's umask of 022 leaves them, so no group or world write unless
// the file it replaces already had it. (Not the daemon's own umask,
// 077, which is for its state, not a user's tree.) Setuid, setgid and
// sticky bits never pass (ModePerm).
func (x *extraction) hostMode(rel string, m os.FileMode) os.FileMode {
	keep := os.FileMode(0)
	if fi, err := os.Lstat(filepath.Join(x.p.Dir, rel)); err == nil && fi.Mode().IsRegular() {
		keep = fi.Mode().Perm() & 0o022
	}
	return m &^ (0o022 &^ keep)
}

// sparse says whether h is a sparse file, in any of tar's forms: its
// holes would expand to any size on the host from a few bytes of stream.
func sparse(h *tar.Header) bool {
	if h.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// bounded cuts a strict stream at what the entries asked for can take:
// their bytes, and headers generous for paths and links of PATH_MAX and
// the sender's closing records. Past that the stream is refused, not
// read on (global headers without end, a megabyte of PAX records an
// entry).
func (x *extraction) bounded(r io.Reader) io.Reader {
	var n int64
	for _, w := range x.want {
		n += w.Size
	}
	limit := n + int64(len(x.want))*16<<10 + 64<<10
	return &capped{r: io.LimitReader(r, limit+1), left: limit}
}

type capped struct {
	r    io.Reader
	left int64
}

func (c *capped) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.left -= int64(n); c.left < 0 {
		return n, fmt.Errorf("%w: the stream is longer than the entries asked for", ErrRefused)
	}
	return n, err
}

// complete checks, for a strict stream, that every entry asked for came
// with the content the host expects.
func (x *extraction) complete() error {
	if !x.strict() {
		return nil
	}
	for name, w := range x.want {
		if !x.seen[name] {
			return fmt.Errorf("%s did not arrive: transfer cut off, nothing changed", name)
		}
		if w.Type == "f" && x.sums[name] != w.SHA256 {
			return fmt.Errorf("%s arrived with sha256 %q, want %s: transfer damaged, nothing changed", name, x.sums[name], w.SHA256)
		}
	}
	return nil
}

// EntryIn describes root/rel as a TreeEntry without following a symlink
// on the way: below a parent that is a symlink or a file, rel reads as
// fs.ErrNotExist, so hashing the host's side never reads outside root.
// checked caches the parents found to be directories (realDirs'), for a
// caller that asks about many paths.
func EntryIn(root, rel string, checked map[string]bool) (proto.TreeEntry, error) {
	return (*Scan)(nil).EntryIn(root, rel, checked)
}

// EntryIn is the package's EntryIn, with a hash the scan's cache holds
// for the file's stamp (the scan is of root).
func (s *Scan) EntryIn(root, rel string, checked map[string]bool) (proto.TreeEntry, error) {
	clean, err := CleanRel(rel)
	if err != nil {
		return proto.TreeEntry{}, err
	}
	if err := realDirs(root, clean, checked); err != nil {
		return proto.TreeEntry{}, fmt.Errorf("%w: %v", fs.ErrNotExist, err)
	}
	e, err := s.Entry(filepath.Join(root, clean), rel)
	if errors.Is(err, unix.ENOTDIR) {
		return proto.TreeEntry{}, fmt.Errorf("%s: %w (a parent is a file)", rel, fs.ErrNotExist)
	}
	return e, err
}
