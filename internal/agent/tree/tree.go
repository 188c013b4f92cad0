// Package tree moves directory trees across the VM boundary as tar
// streams, for both ends: the guest agent's put_tree, get_tree and
// manifest, and the host's workspace prepare, push, pull and export. The
// extracting side treats the stream as hostile (paths confined, nothing
// written through a symlink, every file's hash checked, all or nothing).
package tree

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// CleanRel checks a tree path from the other side: relative, no "..",
// no empty or dot elements; it returns the path in OS form.
func CleanRel(p string) (string, error) {
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("tree path %q: not a relative path", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return "", fmt.Errorf("tree path %q: empty, . or .. elements", p)
		}
	}
	return filepath.FromSlash(p), nil
}

// Local is what the extracting side itself knows of a tree it receives.
// The agent, trusting its host, passes nothing and learns hashes and
// deletions from the stream's PAX records. The host, receiving from a
// guest it does not trust, passes Want: the stream must then hold exactly
// those entries (see strict.go), and Delete, the removals the host itself
// decided from the manifests.
type Local struct {
	Want     map[string]proto.TreeEntry
	Delete   []string
	MaxBytes int64 // with Want: bytes over all files (0: no cap)
	// Cache, if set, learns the files written and their hashes (the
	// agent's manifests' cache), once the whole tree is in place.
	Cache *Cache
}

// Extract extracts a tar stream under p.Dir, all or nothing: the agent
// serves put_tree with it, and the host pulls a workspace with it. A
// regular file must match its PAXSHA256 record and local.Expect, when
// given; PAXDelete paths and local.Delete go once the rest is in place.
// Nothing is changed under p.Dir until every entry arrived intact.
func Extract(r io.Reader, p proto.PutTreeParams, local Local) (proto.TreeResult, error) {
	if !filepath.IsAbs(p.Dir) {
		return proto.TreeResult{}, fmt.Errorf("put_tree: %q is not absolute", p.Dir)
	}
	x, err := stage(p, local)
	if err != nil {
		return proto.TreeResult{}, err
	}
	defer x.close()
	if x.strict() {
		r = x.bounded(r)
	}
	if err := x.receive(r); err != nil {
		return x.res, err
	}
	if err := x.verify(); err != nil {
		return x.res, err
	}
	if x.fresh && len(x.deletes) == 0 {
		err = x.renameWhole()
	} else if err = x.install(); err == nil {
		err = x.applyDeletes()
	}
	if err == nil {
		local.Cache.Record(p.Dir, x.written)
	}
	return x.res, err
}

// extraction is one Extract: the stream's entries staged beside the
// target, checked, then moved into place.
type extraction struct {
	p     proto.PutTreeParams
	stage string
	lock  *os.File
	// fresh: the target is missing or empty, so the whole staging
	// directory is renamed in at the end, one rename instead of one per
	// file.
	fresh bool
	umask os.FileMode

	entries []*tar.Header
	deletes []string
	want    map[string]proto.TreeEntry // strict: what the host asked for
	hostDel map[string]bool            // strict: the host's own deletions
	seen    map[string]bool            // strict: entries already taken
	made    map[string]bool            // directories known to exist: a stat saved per file
	leaves  map[string]bool            // the stream's non-directory entries
	sums    map[string]string          // what arrived
	written map[string]stamp           // regular files by rel: as staged, with their hashes
	claimed map[string]string          // what the sender says it sent
	safe    map[string]bool            // target directories checked to be real ones
	maxSize int64
	res     proto.TreeResult
}

// stage makes the staging directory, a sibling of p.Dir on the same file
// system so entries rename into place, and sweeps older ones (leftovers
// of a put that was cut off).
func stage(p proto.PutTreeParams, local Local) (*extraction, error) {
	existing, err := os.ReadDir(p.Dir)
	x := &extraction{
		p:       p,
		fresh:   errors.Is(err, fs.ErrNotExist) || (err == nil && len(existing) == 0),
		umask:   processUmask(),
		deletes: slices.Clone(local.Delete),
		leaves:  map[string]bool{},
		sums:    map[string]string{},
		claimed: map[string]string{},
		written: map[string]stamp{},
		want:    local.Want,
		maxSize: local.MaxBytes,
		seen:    map[string]bool{},
		hostDel: map[string]bool{},
	}
	for _, d := range local.Delete {
		x.hostDel[d] = true
	}
	parent := filepath.Dir(p.Dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	removeStale(parent)
	if x.stage, err = os.MkdirTemp(parent, stagePrefix); err != nil {
		return nil, err
	}
	x.made = map[string]bool{x.stage: true}
	// Held while the put runs (and released by the kernel if the process
	// dies), so a concurrent put beside it leaves this one alone.
	if x.lock, err = os.Open(x.stage); err == nil {
		_ = unix.Flock(int(x.lock.Fd()), unix.LOCK_EX)
	}
	return x, nil
}

// stagePrefix starts the name of every staging directory.
const stagePrefix = ".banger-stage-"

// close removes what is left of the staging directory.
func (x *extraction) close() {
	if x.lock != nil {
		x.lock.Close()
	}
	os.RemoveAll(x.stage)
}

// receive stages every entry of the stream.
func (x *extraction) receive(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the tree: %w", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			if err := x.global(h); err != nil {
				return err
			}
			continue
		}
		if err := x.entry(h, tr); err != nil {
			return err
		}
		// Only what install needs: a header's PAX records may be a
		// megabyte of the sender's choosing.
		x.entries = append(x.entries, &tar.Header{Name: h.Name, Typeflag: h.Typeflag, Mode: h.Mode})
	}
}

// global takes a global header's deletions and hashes.
func (x *extraction) global(h *tar.Header) error {
	if d := h.PAXRecords[proto.PAXDelete]; d != "" {
		if x.strict() {
			return fmt.Errorf("%w: the stream names deletions; only the host decides those", ErrRefused)
		}
		x.deletes = append(x.deletes, strings.Split(d, "\x00")...)
	}
	if x.strict() {
		return nil // the host's own manifest has the hashes
	}
	return claims(h.PAXRecords[proto.PAXSHA256], x.claimed)
}

// entry stages one file, directory or symlink.
func (x *extraction) entry(h *tar.Header, body io.Reader) error {
	rel, err := CleanRel(strings.TrimSuffix(h.Name, "/"))
	if err != nil {
		return err
	}
	// Nothing may go under a symlink or file this stream made: "a"
	// linked to /etc, then "a/passwd", would write outside.
	for d := filepath.Dir(rel); d != "."; d = filepath.Dir(d) {
		if x.leaves[d] {
			return fmt.Errorf("tree path %q goes through %q, which is not a directory", h.Name, d)
		}
	}
	if h.Typeflag != tar.TypeDir {
		x.leaves[rel] = true
	}
	mode := os.FileMode(h.Mode) & os.ModePerm
	if x.strict() {
		if mode, err = x.allowed(h, rel); err != nil {
			return err
		}
	}
	dst := filepath.Join(x.stage, rel)
	if dir := filepath.Dir(dst); !x.made[dir] {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		x.made[dir] = true
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(dst, mode|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return own(dst, x.p)
	case tar.TypeSymlink:
		if err := os.Symlink(h.Linkname, dst); err != nil {
			return err
		}
		return own(dst, x.p)
	case tar.TypeReg:
		umask := x.umask
		if x.strict() {
			umask = 0o777 // mode is final: always set as is
		}
		sum, n, fi, err := writeStaged(dst, body, mode, umask, x.p)
		if err != nil {
			return err
		}
		x.sums[h.Name] = sum
		if st, ok := stampOf(fi); ok {
			st.hash = sum
			x.written[rel] = st
		}
		if want := h.PAXRecords[proto.PAXSHA256]; want != "" && !x.strict() {
			x.claimed[h.Name] = want
		}
		x.res.Files++
		x.res.Bytes += n
		return nil
	default:
		return fmt.Errorf("%s: tar entry type %q is not a file, directory or symlink", h.Name, h.Typeflag)
	}
}

// verify checks that the whole stream arrived: every entry, every
// file's hash as the sender claimed it and as the extracting side
// expects it.
func (x *extraction) verify() error {
	if x.p.Entries > 0 && len(x.entries) != x.p.Entries {
		return fmt.Errorf("the tree ended after %d of %d entries: transfer cut off, nothing changed", len(x.entries), x.p.Entries)
	}
	for name, sum := range x.claimed {
		if got, ok := x.sums[name]; !ok || got != sum {
			return fmt.Errorf("%s arrived with sha256 %q, want %s: transfer damaged, nothing changed", name, got, sum)
		}
	}
	return x.complete()
}

// renameWhole puts the staging directory in the place of a missing or
// empty target.
func (x *extraction) renameWhole() error {
	if err := os.Chmod(x.stage, 0o755); err != nil {
		return err
	}
	if err := own(x.stage, x.p); err != nil {
		return err
	}
	if err := os.Remove(x.p.Dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Rename(x.stage, x.p.Dir)
}

// install moves every staged entry into the target, parents first,
// never through a symlink already there.
func (x *extraction) install() error {
	p := x.p
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	if err := own(p.Dir, p); err != nil {
		return err
	}
	safe := map[string]bool{}
	for _, h := range x.entries {
		rel, _ := CleanRel(strings.TrimSuffix(h.Name, "/"))
		if err := realDirs(p.Dir, rel, safe); err != nil {
			return err
		}
		src, dst := filepath.Join(x.stage, rel), filepath.Join(p.Dir, rel)
		if err := x.mkdirOwned(filepath.Dir(dst)); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeDir {
			if err := x.mkdirOwned(dst); err != nil {
				return err
			}
			_ = os.Chmod(dst, os.FileMode(h.Mode)&os.ModePerm)
			continue
		}
		if fi, err := os.Lstat(dst); err == nil && fi.IsDir() {
			if x.strict() {
				return fmt.Errorf("%w: %s is a directory here and a file in the sender's tree; move the directory away to take the file", ErrConflict, rel)
			}
			if err := os.RemoveAll(dst); err != nil { // a directory replaced by a file
				return err
			}
		}
		if err := os.Rename(src, dst); err != nil {
			return err
		}
	}
	x.safe = safe
	return nil
}

// applyDeletes removes what the stream and the extracting side named,
// never through a symlink.
func (x *extraction) applyDeletes() error {
	for _, d := range x.deletes {
		rel, err := CleanRel(d)
		if err != nil {
			return err
		}
		if err := realDirs(x.p.Dir, rel, x.safe); err != nil {
			return err
		}
		if x.strict() && IsGitPath(d) {
			return fmt.Errorf("%w: deleting %s: a .git path", ErrRefused, d)
		}
		if fi, err := os.Lstat(filepath.Join(x.p.Dir, rel)); x.strict() && err == nil && fi.IsDir() {
			continue // the host's deletions are of files; a directory there now stays
		}
		if err := os.Remove(filepath.Join(x.p.Dir, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// processUmask reads the umask from /proc/self/status (Linux 4.7 and
// later); unknown, every bit counts as masked, so every file is chmodded.
func processUmask() os.FileMode {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o777
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return os.FileMode(m)
			}
		}
	}
	return 0o777
}

// claims reads a PAXSHA256 record of "path\x00sum\x00..." pairs.
func claims(rec string, into map[string]string) error {
	if rec == "" {
		return nil
	}
	f := strings.Split(rec, "\x00")
	if len(f)%2 != 0 {
		return fmt.Errorf("%w: a %s record of %d fields", proto.ErrFrame, proto.PAXSHA256, len(f))
	}
	for i := 0; i < len(f); i += 2 {
		into[f[i]] = f[i+1]
	}
	return nil
}

// removeStale removes the staging directories in parent that no running
// put holds: leftovers of a put that was cut off.
func removeStale(parent string) {
	stale, _ := filepath.Glob(filepath.Join(parent, stagePrefix+"*"))
	for _, dir := range stale {
		f, err := os.Open(dir)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			_ = os.RemoveAll(dir)
		}
		f.Close()
	}
}

// realDirs refuses rel when one of its parents under root is a symlink:
// writing or removing through it would reach outside root. A missing
// parent is fine (it is made as a directory); safe caches the parents
// already checked.
func realDirs(root, rel string, safe map[string]bool) error {
	var parents []string
	for d := filepath.Dir(rel); d != "."; d = filepath.Dir(d) {
		parents = append(parents, d)
	}
	for i := len(parents) - 1; i >= 0; i-- {
		d := parents[i]
		if safe[d] {
			continue
		}
		fi, err := os.Lstat(filepath.Join(root, d))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s: its parent %s is a symlink; refusing to write through it", rel, d)
		}
		safe[d] = fi.IsDir()
	}
	return nil
}

// own gives path to the put's owner, unless it is already ours (the
// common case: root writing for root costs no chown per file).
func own(path string, p proto.PutTreeParams) error {
	if p.UID == os.Geteuid() && p.GID == os.Getegid() {
		return nil
	}
	return os.Lchown(path, p.UID, p.GID)
}

// mkdirOwned makes dir and its missing parents below the target, owned
// by the put's owner. A file in the way goes (it became a directory on
// the sender's side) unless the extraction is strict and the host did
// not itself decide to delete it.
func (x *extraction) mkdirOwned(dir string) error {
	root := x.p.Dir
	if dir == root || !strings.HasPrefix(dir, root+string(filepath.Separator)) {
		return nil
	}
	if fi, err := os.Lstat(dir); err == nil {
		if fi.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, dir)
		if x.strict() && (!x.hostDel[filepath.ToSlash(rel)] || IsGitPath(filepath.ToSlash(rel))) {
			return fmt.Errorf("%w: %s is a file here and a directory in the sender's tree", ErrConflict, rel)
		}
		if err := os.Remove(dir); err != nil { // a file replaced by a directory
			return err
		}
	}
	if err := x.mkdirOwned(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return os.Chown(dir, x.p.UID, x.p.GID)
}

// writeStaged writes a file and says its hash, its size and what fstat
// says of it once it is whole (owner and mode set).
func writeStaged(dst string, r io.Reader, mode, umask os.FileMode, p proto.PutTreeParams) (string, int64, fs.FileInfo, error) {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return "", 0, nil, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err == nil && mode&umask != 0 {
		err = f.Chmod(mode) // the bits the umask took
	}
	if err == nil {
		err = own(dst, p)
	}
	var fi fs.FileInfo
	if err == nil {
		fi, err = f.Stat()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return hex.EncodeToString(h.Sum(nil)), n, fi, err
}

// Spec is what Write puts in a tar stream.
type Spec struct {
	Dir    string
	Paths  []string          // relative, slash-separated
	Hashes map[string]string // regular files' sha256, sent as PAXSHA256
	Delete []string          // sent first, as a PAXDelete global header
}

// Write writes a tar of spec's paths under spec.Dir to w.
func Write(out io.Writer, spec Spec) (proto.TreeResult, error) {
	var res proto.TreeResult
	// tar writes 512-byte blocks; over the agent link each write would be
	// a frame, and small frames are what a link pays for.
	w := bufio.NewWriterSize(out, 256<<10)
	tw := tar.NewWriter(w)
	if len(spec.Delete) > 0 {
		hdr, err := DeleteHeader(spec.Delete)
		if err != nil {
			return res, err
		}
		if _, err := w.Write(hdr); err != nil {
			return res, err
		}
	}
	for _, rel := range spec.Paths {
		clean, err := CleanRel(rel)
		if err != nil {
			return res, err
		}
		n, err := addToTar(tw, filepath.Join(spec.Dir, clean), rel)
		if err != nil {
			return res, err
		}
		res.Files++
		res.Bytes += n
	}
	// The hashes close the stream, in global headers under the tar
	// reader's 1 MiB limit: one per file would double a small file's
	// share of the link.
	var b strings.Builder
	flush := func() error {
		if b.Len() == 0 {
			return nil
		}
		err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "banger-sha256",
			PAXRecords: map[string]string{proto.PAXSHA256: strings.TrimSuffix(b.String(), "\x00")}})
		b.Reset()
		return err
	}
	for _, rel := range spec.Paths {
		if sum, ok := spec.Hashes[rel]; ok {
			b.WriteString(rel + "\x00" + sum + "\x00")
			if b.Len() > 512<<10 {
				if err := flush(); err != nil {
					return res, err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return res, err
	}
	if err := tw.Close(); err != nil {
		return res, err
	}
	return res, w.Flush()
}

// DeleteHeader is a tar global header naming paths to delete
// (PAXDelete): a tar stream may start with it.
func DeleteHeader(paths []string) ([]byte, error) {
	for _, d := range paths {
		if _, err := CleanRel(d); err != nil {
			return nil, err
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "banger-delete",
		PAXRecords: map[string]string{proto.PAXDelete: strings.Join(paths, "\x00")}}); err != nil {
		return nil, err
	}
	if err := tw.Flush(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil // no trailer: the stream goes on
}

// addToTar writes one file, symlink or directory as name.
func addToTar(tw *tar.Writer, file, name string) (int64, error) {
	fi, err := os.Lstat(file)
	if err != nil {
		return 0, err
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(file); err != nil {
			return 0, err
		}
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return 0, err
	}
	h.Name, h.Uname, h.Gname, h.Uid, h.Gid = name, "", "", 0, 0
	if fi.IsDir() {
		h.Name += "/"
	}
	if err := tw.WriteHeader(h); err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(tw, f)
}

// Manifest lists the tree under dir (symlinks not followed), hashing
// regular files; names in exclude are skipped at any depth.
func Manifest(dir string, exclude []string) ([]proto.TreeEntry, error) {
	return (*Cache)(nil).Manifest(dir, exclude)
}

// Manifest is the package's Manifest, reading again only the files
// whose stamp the cache does not hold (a nil cache reads them all).
func (c *Cache) Manifest(dir string, exclude []string) ([]proto.TreeEntry, error) {
	sc := c.Begin(dir)
	out := []proto.TreeEntry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if slices.Contains(exclude, d.Name()) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		e, err := sc.Entry(p, rel)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	sc.End(err == nil)
	return out, err
}

// Entry describes one file as a TreeEntry named rel.
func Entry(file, rel string) (proto.TreeEntry, error) { return (*Scan)(nil).Entry(file, rel) }

// Entry is the package's Entry, with a hash the scan's cache holds for
// the file's stamp (rel is its path in the scan's tree).
func (s *Scan) Entry(file, rel string) (proto.TreeEntry, error) {
	fi, err := os.Lstat(file)
	if err != nil {
		return proto.TreeEntry{}, err
	}
	e := proto.TreeEntry{Path: path.Clean(rel), Mode: uint32(fi.Mode().Perm())}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Type = "l"
		e.Link, err = os.Readlink(file)
	case fi.IsDir():
		e.Type = "d"
	case fi.Mode().IsRegular():
		e.Type, e.Size = "f", fi.Size()
		e.SHA256, err = s.hash(file, path.Clean(rel), fi)
	default:
		return proto.TreeEntry{}, fmt.Errorf("%s: not a file, directory or symlink", file)
	}
	return e, err
}

func hashFile(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
