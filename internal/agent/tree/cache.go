package tree

import (
	"io/fs"
	"sync"
	"syscall"
	"time"
)

// Cache remembers the hashes of a tree's files by what lstat says of
// them, as git's index does: a file whose size, mtime, ctime, inode and
// device are as they were is not read again. A hash taken of a file
// changed so recently that a later change could keep the same times
// (racy-clean, in git's words) is not kept: that file is hashed again
// the next time. A manifest stays hash-exact; an unchanged tree costs
// its lstats.
type Cache struct {
	mu    sync.Mutex
	roots map[string]map[string]stamp // dir → rel → stamp
	files int                         // in all roots
	// Now is the clock (nil: time.Now), for tests.
	Now func() time.Time
}

// stamp is what a file's hash was taken against.
type stamp struct {
	size, mtime, ctime int64
	ino, dev           uint64
	hash               string
}

// Bounds on what a cache holds: trees at once, and files in all (about
// 160 bytes each).
const (
	cacheRoots = 16
	cacheFiles = 1 << 20
	// racyWindow is how close to the scan a file's change may be and
	// its hash still be kept: file times come from a coarse clock.
	racyWindow = 2 * time.Second
)

func stampOf(fi fs.FileInfo) (stamp, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return stamp{}, false
	}
	return stamp{size: fi.Size(), mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(), ino: st.Ino, dev: uint64(st.Dev)}, true
}

// Scan is one listing's use of the cache for a tree.
type Scan struct {
	c     *Cache
	dir   string
	old   map[string]stamp
	seen  map[string]stamp
	start int64
}

// Begin starts a listing of the tree at dir (a nil cache: one that
// hashes every file); End ends it.
func (c *Cache) Begin(dir string) *Scan {
	if c == nil {
		return nil
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	c.mu.Lock()
	old := c.roots[dir]
	c.mu.Unlock()
	return &Scan{c: c, dir: dir, old: old, seen: map[string]stamp{}, start: now().UnixNano()}
}

// hash is the hash of the regular file at file (named rel in the tree),
// from the cache when its stamp is unchanged.
func (s *Scan) hash(file, rel string, fi fs.FileInfo) (string, error) {
	if s == nil {
		return hashFile(file)
	}
	st, ok := stampOf(fi)
	if !ok {
		return hashFile(file)
	}
	if was, hit := s.old[rel]; hit && was.hash != "" && was.size == st.size && was.mtime == st.mtime &&
		was.ctime == st.ctime && was.ino == st.ino && was.dev == st.dev {
		s.keep(rel, was)
		return was.hash, nil
	}
	h, err := hashFile(file)
	if err != nil {
		return "", err
	}
	// Racy-clean: changed within the window before this scan began, a
	// later write might keep these times; hash it again next time.
	if cutoff := s.start - int64(racyWindow); st.mtime < cutoff && st.ctime < cutoff {
		st.hash = h
		s.keep(rel, st)
	}
	return h, nil
}

func (s *Scan) keep(rel string, st stamp) {
	if len(s.seen) < cacheFiles {
		s.seen[rel] = st
	}
}

// End replaces the tree's entries by what this listing saw (a file gone
// is forgotten); a failed listing keeps the old ones. Past the bounds,
// other trees (any of them) make room.
func (s *Scan) End(ok bool) {
	if s == nil || !ok {
		return
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.roots == nil {
		c.roots = map[string]map[string]stamp{}
	}
	c.files -= len(c.roots[s.dir])
	delete(c.roots, s.dir)
	for k, v := range c.roots {
		if len(c.roots) < cacheRoots && c.files+len(s.seen) <= cacheFiles {
			break
		}
		delete(c.roots, k)
		c.files -= len(v)
	}
	c.roots[s.dir] = s.seen
	c.files += len(s.seen)
}

// Record adds to dir's entries what an extraction wrote there: each
// file's stamp and hash, taken as it was written, so the first listing
// after a put reads none of it again. A file changed within the racy
// window before now is left out, as a scan leaves it out. A file renamed
// into place since (a put into a directory that was not empty) may have
// a new ctime: the next listing then reads it again.
func (c *Cache) Record(dir string, files map[string]stamp) {
	if c == nil || len(files) == 0 {
		return
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	cutoff := now().UnixNano() - int64(racyWindow)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.roots == nil {
		c.roots = map[string]map[string]stamp{}
	}
	m := c.roots[dir]
	if m == nil {
		if len(c.roots) >= cacheRoots {
			for k, v := range c.roots { // any other tree makes room
				delete(c.roots, k)
				c.files -= len(v)
				break
			}
		}
		m = map[string]stamp{}
		c.roots[dir] = m
	}
	for rel, st := range files {
		if st.mtime >= cutoff || st.ctime >= cutoff || c.files >= cacheFiles {
			continue
		}
		if _, had := m[rel]; !had {
			c.files++
		}
		m[rel] = st
	}
}

// Len is how many files' hashes the cache holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.files
}
