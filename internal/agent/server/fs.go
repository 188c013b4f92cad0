package server

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/bangerdev/banger/internal/agent/passwd"
	"github.com/bangerdev/banger/internal/agent/proto"
)

// Bounds of an fs answer: what a caller may ask for and what a search
// reads.
const (
	fsMaxEntries  = 10000
	fsMaxDepth    = 32
	searchMaxFile = 8 << 20 // larger files are not searched
	searchMaxLine = 400     // bytes of a matching line sent back
)

func fsOp(_ *Server, _ *call, p proto.FSParams) (proto.FSResult, error) {
	if !path.IsAbs(p.Path) {
		return proto.FSResult{}, fmt.Errorf("path %q is not absolute", p.Path)
	}
	p.Path = path.Clean(p.Path)
	most := p.Max
	if most <= 0 || most > fsMaxEntries {
		most = fsMaxEntries
	}
	switch p.Op {
	case proto.FSStat:
		e, err := entryOf(p.Path, newIDNames())
		if err != nil {
			return proto.FSResult{}, err
		}
		return proto.FSResult{Entries: []proto.FSEntry{e}}, nil
	case proto.FSList:
		return list(p.Path, min(max(p.Depth, 1), fsMaxDepth), most)
	case proto.FSMkdir:
		own, err := ownerOf(p.Owner)
		if err != nil {
			return proto.FSResult{}, err
		}
		return proto.FSResult{}, mkdirOwned(p.Path, own)
	case proto.FSMove:
		if !path.IsAbs(p.To) {
			return proto.FSResult{}, fmt.Errorf("destination %q is not absolute", p.To)
		}
		return proto.FSResult{}, os.Rename(p.Path, path.Clean(p.To))
	case proto.FSRemove:
		if p.Path == "/" {
			return proto.FSResult{}, errors.New("refusing to remove /")
		}
		if _, err := os.Lstat(p.Path); err != nil {
			return proto.FSResult{}, err
		}
		if p.Recursive {
			return proto.FSResult{}, os.RemoveAll(p.Path)
		}
		return proto.FSResult{}, os.Remove(p.Path)
	case proto.FSGlob:
		return glob(p.Path, most)
	case proto.FSSearch:
		return search(p, most)
	}
	return proto.FSResult{}, fmt.Errorf("unknown fs op %q", p.Op)
}

func entryOf(p string, ids *idNames) (proto.FSEntry, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return proto.FSEntry{}, err
	}
	return entryInfo(p, fi, ids), nil
}

// idNames names the owners and groups of entries, from the guest's
// /etc/passwd and /etc/group read once a call; an id without a name is
// given as its number.
type idNames struct {
	users, groups map[uint32]string
}

func newIDNames() *idNames {
	u, g, _ := passwd.Names("/") // unreadable: numbers
	return &idNames{users: u, groups: g}
}

func (n *idNames) of(fi fs.FileInfo) (owner, group string) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", ""
	}
	owner, group = n.users[st.Uid], n.groups[st.Gid]
	if owner == "" {
		owner = strconv.FormatUint(uint64(st.Uid), 10)
	}
	if group == "" {
		group = strconv.FormatUint(uint64(st.Gid), 10)
	}
	return owner, group
}

func entryInfo(p string, fi fs.FileInfo, ids *idNames) proto.FSEntry {
	e := proto.FSEntry{Path: p, Mode: uint32(fi.Mode().Perm()), Size: fi.Size(), ModTime: fi.ModTime().Unix()}
	e.Owner, e.Group = ids.of(fi)
	switch {
	case fi.Mode().IsRegular():
		e.Type = "f"
	case fi.IsDir():
		e.Type = "d"
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Type = "l"
		e.Link, _ = os.Readlink(p)
	default:
		e.Type = "o"
	}
	return e
}

// errEnough ends a walk that has what it may send.
var errEnough = errors.New("enough")

// list is dir's entries down to depth levels, in lexical order.
func list(dir string, depth, most int) (proto.FSResult, error) {
	ids := newIDNames()
	var res proto.FSResult
	res.Entries = []proto.FSEntry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			return nil // an unreadable directory below: what can be read is listed
		}
		if p == dir {
			if !d.IsDir() {
				return fmt.Errorf("%s is not a directory", dir)
			}
			return nil
		}
		if len(res.Entries) == most {
			res.Truncated = true
			return errEnough
		}
		if fi, err := d.Info(); err == nil {
			res.Entries = append(res.Entries, entryInfo(p, fi, ids))
		}
		if d.IsDir() && strings.Count(strings.TrimPrefix(p, dir), "/") >= depth {
			return filepath.SkipDir
		}
		return nil
	})
	if errors.Is(err, errEnough) {
		err = nil
	}
	return res, err
}

// glob is the paths matching pattern, where "**" stands for any number of
// directories; the walk starts below the pattern's fixed prefix.
func glob(pattern string, most int) (proto.FSResult, error) {
	segs := strings.Split(strings.TrimPrefix(pattern, "/"), "/")
	for _, s := range segs {
		if _, err := path.Match(s, ""); err != nil {
			return proto.FSResult{}, fmt.Errorf("pattern %q: %w", pattern, err)
		}
	}
	fixed := 0
	for fixed < len(segs)-1 && !strings.ContainsAny(segs[fixed], "*?[\\") {
		fixed++
	}
	root := "/" + strings.Join(segs[:fixed], "/")
	ids := newIDNames()
	var res proto.FSResult
	res.Entries = []proto.FSEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel := strings.Split(strings.TrimPrefix(strings.TrimPrefix(p, root), "/"), "/")
		if p == root {
			rel = nil
		}
		if matchSegs(segs[fixed:], rel) && p != root {
			if len(res.Entries) == most {
				res.Truncated = true
				return errEnough
			}
			if fi, err := d.Info(); err == nil {
				res.Entries = append(res.Entries, entryInfo(p, fi, ids))
			}
		}
		if d.IsDir() && p != root && !couldMatchBelow(segs[fixed:], rel) {
			return filepath.SkipDir
		}
		return nil
	})
	if errors.Is(err, errEnough) {
		err = nil
	}
	return res, err
}

// matchSegs matches path segments against pattern segments, "**"
// matching any number of segments.
func matchSegs(pat, name []string) bool {
	if len(pat) == 0 {
		return len(name) == 0
	}
	if pat[0] == "**" {
		for i := 0; i <= len(name); i++ {
			if matchSegs(pat[1:], name[i:]) {
				return true
			}
		}
		return false
	}
	if len(name) == 0 {
		return false
	}
	ok, _ := path.Match(pat[0], name[0])
	return ok && matchSegs(pat[1:], name[1:])
}

// couldMatchBelow says whether something below the directory name (its
// segments) could match pat: the walk skips it otherwise.
func couldMatchBelow(pat, name []string) bool {
	for i, seg := range name {
		if i >= len(pat) {
			return false
		}
		if pat[i] == "**" {
			return true
		}
		if ok, _ := path.Match(pat[i], seg); !ok {
			return false
		}
	}
	return len(name) < len(pat)
}

// search finds the lines matching p.Pattern (RE2: no backtracking, so a
// pattern cannot take exponential time) in the text files under p.Path.
func search(p proto.FSParams, most int) (proto.FSResult, error) {
	re, err := regexp.Compile(p.Pattern)
	if err != nil {
		return proto.FSResult{}, fmt.Errorf("pattern: %w", err)
	}
	if p.Include != "" {
		if _, err := path.Match(p.Include, ""); err != nil {
			return proto.FSResult{}, fmt.Errorf("include %q: %w", p.Include, err)
		}
	}
	var res proto.FSResult
	res.Matches = []proto.FSMatch{}
	err = filepath.WalkDir(p.Path, func(file string, d fs.DirEntry, err error) error {
		if err != nil {
			if file == p.Path {
				return err
			}
			return nil
		}
		if d.IsDir() {
			if d.Name() == ".git" && file != p.Path {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if p.Include != "" {
			if ok, _ := path.Match(p.Include, d.Name()); !ok {
				return nil
			}
		}
		if fi, err := d.Info(); err != nil || fi.Size() > searchMaxFile {
			return nil
		}
		return searchFile(file, re, &res, most)
	})
	if errors.Is(err, errEnough) {
		err = nil
	}
	return res, err
}

func searchFile(file string, re *regexp.Regexp, res *proto.FSResult, most int) error {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	br := bufio.NewReader(f)
	if head, _ := br.Peek(8000); bytes.IndexByte(head, 0) >= 0 {
		return nil // binary
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if !re.Match(line) {
			continue
		}
		if len(res.Matches) == most {
			res.Truncated = true
			return errEnough
		}
		text := line[:min(len(line), searchMaxLine)]
		res.Matches = append(res.Matches, proto.FSMatch{Path: file, Line: n, Text: strings.ToValidUTF8(string(text), "\uFFFD")})
	}
	_ = sc.Err() // a line over 1 MiB ends this file's search
	return nil
}

// readAt is readFile's part of a file: Limit bytes (0: the rest) from
// Offset.
func readAt(f *os.File, p proto.FileParams) (io.Reader, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if p.Offset < 0 || p.Limit < 0 {
		return nil, 0, errors.New("negative offset or limit")
	}
	if _, err := f.Seek(p.Offset, io.SeekStart); err != nil {
		return nil, 0, err
	}
	var r io.Reader = f
	if p.Limit > 0 {
		r = io.LimitReader(f, p.Limit)
	}
	return r, fi.Size(), nil
}

// ownerOf is the account a user name gives what a call makes; nil for
// none (root keeps it).
func ownerOf(user string) (*passwd.Account, error) {
	if user == "" {
		return nil, nil
	}
	a, err := passwd.Lookup("/", user)
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// mkdirOwned makes dir and its missing parents (0755), each one it makes
// owned by own when given; what was there is left as it is.
func mkdirOwned(dir string, own *passwd.Account) error {
	dir = filepath.Clean(dir)
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return &os.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirOwned(parent, own); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	if own != nil {
		// Lchown: dir was just made by this call, a directory, no link.
		return os.Lchown(dir, int(own.UID), int(own.GID))
	}
	return nil
}
