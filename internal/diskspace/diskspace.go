// Package diskspace names the file system a write ran out of room on:
// which mount, how big, what it holds, so an error tells the user where
// to free space rather than only that some write failed.
package diskspace

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/units"
)

// Margin is kept free beyond what a checked write needs: the store,
// logs and the write's own metadata need room too.
const Margin = 64 << 20

// Usage is the file system holding a path.
type Usage struct {
	Mount       string // its mount point
	Free, Total int64  // bytes the daemon may still write; the file system's size
}

// Of returns the usage of the file system holding path, or of its
// nearest existing ancestor when path is not there (yet).
func Of(path string) (Usage, error) {
	path = filepath.Clean(path)
	var st unix.Statfs_t
	for {
		err := unix.Statfs(path, &st)
		if errors.Is(err, unix.ENOENT) && filepath.Dir(path) != path {
			path = filepath.Dir(path)
			continue
		}
		if err != nil {
			return Usage{}, fmt.Errorf("check free space in %s: %w", path, err)
		}
		break
	}
	return Usage{Mount: mountOf(path), Free: int64(st.Bavail) * st.Bsize, Total: int64(st.Blocks) * st.Bsize}, nil
}

// mountOf walks up from an existing path while the parent is on the
// same device: the last directory before the device changes is the
// mount point (bind mounts of one file system show as their top).
func mountOf(path string) string {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return path
	}
	for path != "/" {
		parent := filepath.Dir(path)
		var pst unix.Stat_t
		if unix.Stat(parent, &pst) != nil || pst.Dev != st.Dev {
			return path
		}
		path = parent
	}
	return "/"
}

// Need returns an api.ErrNoSpace error naming the file system when the
// one holding dir has less than n bytes and the margin free, for a
// request that knows its size before it starts writing.
func Need(dir string, n int64) error {
	u, err := Of(dir)
	if err != nil {
		return err
	}
	switch {
	case u.Free >= n+Margin:
		return nil
	case n == 0:
		return fmt.Errorf("%w: the file system mounted at %s (holding %s) has %s free of %s, less than the %s banger keeps free; free space there, then try again",
			api.ErrNoSpace, u.Mount, dir, units.FormatSize(u.Free), units.FormatSize(u.Total), units.FormatSize(Margin))
	default:
		return fmt.Errorf("%w: %s needs %s, and the file system mounted at %s has %s free of %s, of which banger keeps %s free; free space there, then try again",
			api.ErrNoSpace, dir, units.FormatSize(n), u.Mount, units.FormatSize(u.Free), units.FormatSize(u.Total), units.FormatSize(Margin))
	}
}

// Explain gives an error that ran out of space (ENOSPC, or EDQUOT for a
// quota) the file system it happened on and api.ErrNoSpace; any other
// error comes back as it was.
func Explain(err error) error {
	if err == nil || errors.Is(err, api.ErrNoSpace) {
		return err
	}
	quota := errors.Is(err, syscall.EDQUOT)
	if !quota && !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || !filepath.IsAbs(pe.Path) {
		return fmt.Errorf("%w: a file system is full: %w; free space where banger keeps its state and cache (banger doctor names them), then try again", api.ErrNoSpace, err)
	}
	what := "is full"
	if quota {
		what = "is over your quota"
	}
	u, uerr := Of(pe.Path)
	if uerr != nil {
		return fmt.Errorf("%w: the file system holding %s %s: %w; free space there, then try again", api.ErrNoSpace, pe.Path, what, err)
	}
	return fmt.Errorf("%w: the file system mounted at %s (%s, holding %s) %s: %w; free space there, then try again",
		api.ErrNoSpace, u.Mount, units.FormatSize(u.Total), pe.Path, what, err)
}
