package rootfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
)

// Errors that name why an entry was refused. Each is wrapped in an
// *EntryError that names the layer and the entry.
var (
	ErrEscapes      = errors.New("path escapes the image root")
	ErrNotDir       = errors.New("parent is not a directory")
	ErrSymlinkLoop  = errors.New("too many levels of symbolic links")
	ErrBadWhiteout  = errors.New("invalid whiteout")
	ErrLinkTarget   = errors.New("hard link target does not exist in this or a lower layer")
	ErrNameTooLong  = errors.New("name too long (255 bytes a component, 4096 a path, 256 components)")
	ErrUnsupported  = errors.New("unsupported entry type")
	ErrLimit        = errors.New("image exceeds the unpack limit")
	ErrLayerChanged = errors.New("layer changed between passes")
)

// EntryError locates a refused entry.
type EntryError struct {
	Layer string // "layer 2 (sha256:…)"
	Entry string // the entry's name as the layer wrote it
	Err   error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("%s: entry %q: %v", e.Layer, e.Entry, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

const (
	// maxPath is Linux's PATH_MAX: no real file system holds a longer
	// name, and deeper trees only cost the writer quadratic time.
	maxPath = 4096
	// maxDepth bounds the components of a path, and the directories one
	// entry may imply: every implied directory is written with its whole
	// path, so depth times path length is what one entry can cost.
	// Real images stay far below (node_modules trees reach about 50).
	maxDepth       = 256
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	maxSymlinks    = 40
)

// inode is a file's identity and metadata; several paths share one inode
// through hard links.
type inode struct {
	hdr tar.Header // metadata only: Typeflag, Mode, Uid, Gid, times, Size, Linkname, Dev*, xattrs
	// src locates the entry holding a regular file's bytes: layer and
	// ordinal within that layer's stream. src.layer is -1 when there are no
	// bytes to copy.
	src     srcRef
	primary string // path the bytes are written at; the other paths link to it
}

type srcRef struct{ layer, ordinal int }

// node is a directory entry.
type node struct {
	dir      *tar.Header // directories: their metadata
	children map[string]*node
	ino      *inode // everything else
	layer    int    // layer that last declared this path
	parent   *node  // the root is its own parent
	name     string
	// depth and plen are the node's components and path bytes from the
	// root: a path reached through symlinks is held to maxDepth and
	// maxPath too, without walking it.
	depth, plen int
}

func (n *node) isDir() bool { return n.dir != nil }

func (n *node) isSymlink() bool { return n.ino != nil && n.ino.hdr.Typeflag == tar.TypeSymlink }

func newDir(hdr *tar.Header, layer int) *node {
	return &node{dir: hdr, children: map[string]*node{}, layer: layer}
}

// attach makes child dir's entry name, replacing what was there.
func attach(dir *node, name string, child *node) {
	child.parent, child.name = dir, name
	child.depth, child.plen = dir.depth+1, dir.plen+len(name)
	if dir.depth > 0 {
		child.plen++ // the slash
	}
	dir.children[name] = child
}

// tree is the merged file system: layers applied bottom-up as the OCI image
// spec says.
type tree struct {
	root *node
}

func newTree() *tree {
	root := newDir(&tar.Header{Typeflag: tar.TypeDir, Mode: 0o755}, -1)
	root.parent = root
	return &tree{root: root}
}

// cleanName turns an entry name into path components inside the root.
// Absolute names are taken relative to the root; names that climb out of
// it are refused.
func cleanName(name string) ([]string, error) {
	if len(name) > maxPath {
		return nil, ErrNameTooLong
	}
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	// Clean("/"+x) can never leave "/"; detect climbing on the raw name.
	depth := 0
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return nil, ErrEscapes
			}
		default:
			depth++
		}
	}
	if p == "" {
		return nil, nil
	}
	parts := strings.Split(p, "/")
	if len(parts) > maxDepth {
		return nil, ErrNameTooLong
	}
	for _, c := range parts {
		if len(c) > 255 {
			return nil, ErrNameTooLong
		}
	}
	return parts, nil
}

// resolveDir walks parts from the root to a directory, following
// symbolic links within the root: an absolute target or ".." at the root
// stays inside, as in a chroot. Missing components are made with create,
// or end the walk with a nil directory when create is nil.
func (t *tree) resolveDir(parts []string, create func() *node, depth *int) (*node, error) {
	dir := t.root
	for i := 0; i < len(parts); i++ {
		c := parts[i]
		switch c {
		case "", ".":
			continue
		case "..":
			dir = dir.parent
			continue
		}
		child := dir.children[c]
		if child == nil {
			if create == nil {
				return nil, nil
			}
			child = create()
			attach(dir, c, child)
		}
		if child.isSymlink() {
			*depth++
			if *depth > maxSymlinks {
				return nil, ErrSymlinkLoop
			}
			target := child.ino.hdr.Linkname
			if strings.HasPrefix(target, "/") {
				dir = t.root
			}
			parts, i = append(strings.Split(target, "/"), parts[i+1:]...), -1
			continue
		}
		if !child.isDir() {
			return nil, ErrNotDir
		}
		dir = child
	}
	return dir, nil
}

// change says what applying an entry did, for a caller that streams.
type change int

const (
	changeNone     change = iota // nothing visible (a whiteout of nothing, an ignored type)
	changeAdded                  // a new path
	changeDirMeta                // an existing directory's metadata
	changeReplaced               // an existing path was replaced or removed
)

type applied struct {
	change  change
	path    string  // resolved path of the entry
	created []*node // implicit parent directories created, in order
	ino     *inode  // the entry's inode (non-directories)
}

// apply applies one entry of layer to the tree.
func (t *tree) apply(layer, ordinal int, hdr *tar.Header) (applied, error) {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return applied{change: changeNone}, nil
	}
	parts, err := cleanName(hdr.Name)
	if err != nil {
		return applied{}, err
	}
	if len(parts) == 0 {
		if hdr.Typeflag == tar.TypeDir {
			h := metaOnly(hdr)
			t.root.dir, t.root.layer = h, layer
			return applied{change: changeDirMeta, path: ""}, nil
		}
		return applied{}, fmt.Errorf("%w: the root must be a directory", ErrNotDir)
	}
	base := parts[len(parts)-1]
	if strings.HasPrefix(base, whiteoutPrefix) {
		return t.whiteout(layer, parts)
	}

	var res applied
	depth := 0
	var created []*node
	tooDeep := false
	parent, err := t.resolveDir(parts[:len(parts)-1], func() *node {
		n := newDir(&tar.Header{Typeflag: tar.TypeDir, Mode: 0o755, ModTime: hdr.ModTime}, layer)
		created = append(created, n)
		tooDeep = tooDeep || len(created) > maxDepth // through symlinks, a walk can outgrow its name
		return n
	}, &depth)
	if err == nil && (tooDeep || parent.depth+1 > maxDepth || parent.plen+1+len(base) > maxPath) {
		err = ErrNameTooLong // deep or long once symlinks are followed
	}
	if err != nil {
		return applied{}, err
	}
	res.created = created
	parentPath := t.pathOf(parent)
	res.path = path.Join(parentPath, base)
	existing := parent.children[base]

	switch hdr.Typeflag {
	case tar.TypeDir:
		if existing != nil && existing.isDir() {
			existing.dir, existing.layer = metaOnly(hdr), layer
			res.change = changeDirMeta
			return res, nil
		}
		attach(parent, base, newDir(metaOnly(hdr), layer))
	case tar.TypeLink:
		tparts, err := cleanName(hdr.Linkname)
		if err != nil || len(tparts) == 0 {
			return applied{}, fmt.Errorf("%w: link target %q", ErrEscapes, hdr.Linkname)
		}
		tdir, err := t.resolveDir(tparts[:len(tparts)-1], nil, &depth)
		if err != nil {
			return applied{}, fmt.Errorf("link target %q: %w", hdr.Linkname, err)
		}
		var target *node
		if tdir != nil {
			target = tdir.children[tparts[len(tparts)-1]]
		}
		if target == nil || target.isDir() {
			return applied{}, fmt.Errorf("%w: %q", ErrLinkTarget, hdr.Linkname)
		}
		if target == existing {
			res.change = changeNone // a link to itself
			return res, nil
		}
		attach(parent, base, &node{ino: target.ino, layer: layer})
		res.ino = target.ino
	case tar.TypeReg, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if len(hdr.Linkname) >= maxPath {
			return applied{}, fmt.Errorf("%w: symbolic link target", ErrNameTooLong)
		}
		ino := &inode{hdr: *metaOnly(hdr), src: srcRef{-1, -1}}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			ino.src = srcRef{layer, ordinal}
		}
		attach(parent, base, &node{ino: ino, layer: layer})
		res.ino = ino
	default:
		return applied{}, fmt.Errorf("%w %q", ErrUnsupported, string(hdr.Typeflag))
	}
	res.change = changeAdded
	if existing != nil {
		res.change = changeReplaced
	}
	return res, nil
}

// whiteout applies a ".wh." entry: it hides lower layers' paths, never the
// same layer's, and is never followed through a symlink.
func (t *tree) whiteout(layer int, parts []string) (applied, error) {
	dir := t.root
	for _, c := range parts[:len(parts)-1] {
		child := dir.children[c]
		if child == nil {
			return applied{change: changeNone}, nil // nothing below to hide
		}
		if child.isSymlink() {
			return applied{}, fmt.Errorf("%w: reached through symbolic link %q", ErrBadWhiteout, c)
		}
		if !child.isDir() {
			return applied{change: changeNone}, nil
		}
		dir = child
	}
	base := parts[len(parts)-1]
	if base == opaqueMarker {
		if pruneLower(dir, layer) {
			return applied{change: changeReplaced}, nil
		}
		return applied{change: changeNone}, nil
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." || strings.HasPrefix(name, whiteoutPrefix) {
		return applied{}, fmt.Errorf("%w: hides %q", ErrBadWhiteout, name)
	}
	if child := dir.children[name]; child != nil && child.layer < layer {
		delete(dir.children, name)
		return applied{change: changeReplaced}, nil
	}
	return applied{change: changeNone}, nil
}

// pruneLower removes every descendant of dir declared below layer, keeping
// directories that still hold something of this layer. It reports whether
// anything was removed.
func pruneLower(dir *node, layer int) bool {
	removed := false
	for name, child := range dir.children {
		if child.isDir() {
			if pruneLower(child, layer) {
				removed = true
			}
			if child.layer < layer && len(child.children) == 0 {
				delete(dir.children, name)
				removed = true
			}
			continue
		}
		if child.layer < layer {
			delete(dir.children, name)
			removed = true
		}
	}
	return removed
}

// pathOf is n's path from the root, without a leading slash.
func (t *tree) pathOf(n *node) string {
	var parts []string
	for ; n != t.root; n = n.parent {
		parts = append(parts, n.name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

// pathsOf is the paths of ns, made in order: a node whose parent came
// just before it extends that path instead of walking to the root again,
// so a chain of new directories costs its paths' length, not its depth
// squared.
func (t *tree) pathsOf(ns []*node) []string {
	out := make([]string, 0, len(ns))
	for i, n := range ns {
		if i > 0 && n.parent == ns[i-1] {
			out = append(out, out[i-1]+"/"+n.name)
			continue
		}
		out = append(out, t.pathOf(n))
	}
	return out
}

// walk visits every path in a deterministic pre-order (parents before
// children, names sorted).
func (t *tree) walk(visit func(p string, n *node) error) error {
	var rec func(dir *node, prefix string) error
	rec = func(dir *node, prefix string) error {
		names := make([]string, 0, len(dir.children))
		for name := range dir.children {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			child := dir.children[name]
			p := path.Join(prefix, name)
			if err := visit(p, child); err != nil {
				return err
			}
			if child.isDir() {
				if err := rec(child, p); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return rec(t.root, "")
}

// metaOnly copies the metadata of hdr that ends up in the file system.
func metaOnly(hdr *tar.Header) *tar.Header {
	h := &tar.Header{
		Typeflag:   hdr.Typeflag,
		Mode:       hdr.Mode & 0o7777,
		Uid:        hdr.Uid,
		Gid:        hdr.Gid,
		ModTime:    hdr.ModTime,
		AccessTime: hdr.AccessTime,
		ChangeTime: hdr.ChangeTime,
		Linkname:   hdr.Linkname,
		Devmajor:   hdr.Devmajor,
		Devminor:   hdr.Devminor,
	}
	if hdr.Typeflag == tar.TypeReg {
		h.Size = hdr.Size
	}
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords[k] = v
		}
	}
	return h
}
