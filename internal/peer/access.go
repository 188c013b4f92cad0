package peer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/api"
)

// maxLinks is how many symlinks one walk follows (the kernel's limit).
const maxLinks = 40

// Host is what a daemon running as Self lets its callers use on the
// host.
type Host struct {
	Self uint32 // the daemon's euid
}

// trusted is the caller of ctx, and whether it has every right the
// daemon has on host files: root, the daemon's own user, or the daemon
// itself (no caller: its own work).
func (h Host) trusted(ctx context.Context) (Cred, bool) {
	c, ok := FromContext(ctx)
	return c, !ok || c.UID == 0 || c.UID == h.Self
}

// Credentials says whether the daemon may use its own registry
// credentials (its user's docker config) for the caller of ctx: nil for
// a trusted caller; for any other, a permission_denied error saying why,
// for a refusal (a push) or as the reason a pull went anonymous.
func (h Host) Credentials(ctx context.Context) error {
	c, ok := h.trusted(ctx)
	if ok {
		return nil
	}
	return fmt.Errorf("%w: the daemon's registry credentials (uid %d's docker config) serve root and uid %d only, not %s; "+
		"run it as uid %d, or use a daemon of your own (`banger daemon start`) with your own `docker login`",
		api.ErrPermissionDenied, h.Self, h.Self, c, h.Self)
}

// File is the path the daemon reads for a host file the caller of ctx
// named. A trusted caller's path is used as is. Any other caller's is
// opened by a walk with that caller's rights (every directory on the way
// searchable by it, the file readable by it, each symlink followed with
// the same checks) and is read through the descriptor the walk ended on,
// as /proc/self/fd/N, until release: what the caller swaps in afterwards
// changes nothing.
func (h Host) File(ctx context.Context, path string) (use string, release func(), err error) {
	c, ok := h.trusted(ctx)
	if ok {
		return path, func() {}, nil
	}
	f, err := c.Open(path)
	if err != nil {
		return "", nil, err
	}
	return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())), func() { f.Close() }, nil
}

// Tree refuses a host directory tree to any caller but a trusted one:
// the daemon would read or write it, and run git in it, with its own
// rights, file by file, where the caller could swap what a path names
// between a check and its use. what says what the daemon would do.
func (h Host) Tree(ctx context.Context, path, what string) error {
	c, ok := h.trusted(ctx)
	if ok {
		return nil
	}
	return fmt.Errorf("%w: %s: %s %s works with the daemon's rights (uid %d) on a whole tree, which it cannot do safely for %s; run it as uid %d, or use a daemon of your own (`banger daemon start`)",
		api.ErrPermissionDenied, path, what, path, h.Self, c, h.Self)
}

// Open opens path for reading as c could: resolved from / one name at a
// time (O_PATH, O_NOFOLLOW), every directory checked searchable by c,
// symlinks followed with the same checks, the last a regular file c may
// read. The descriptor the walk ended on is the one reopened, so the file
// read is the file checked.
func (c Cred) Open(path string) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%w: %q is not an absolute path", api.ErrInvalidArgument, path)
	}
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	cur, err := unix.Dup(root)
	if err != nil {
		return nil, err
	}
	defer func() { unix.Close(cur) }()
	rest := strings.Split(path, "/")
	walked := "/"
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		if name == "" || name == "." {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(cur, &st); err != nil {
			return nil, err
		}
		if !c.may(cur, &st, 1) {
			return nil, c.denied(path, walked, "may not search")
		}
		next, err := unix.Openat(cur, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", api.ErrInvalidArgument, path, err)
		}
		if err := unix.Fstat(next, &st); err != nil {
			unix.Close(next)
			return nil, err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			target, err := readlink(next)
			unix.Close(next)
			if err != nil {
				return nil, err
			}
			if links++; links > maxLinks {
				return nil, fmt.Errorf("%w: %s: too many symlinks", api.ErrInvalidArgument, path)
			}
			if strings.HasPrefix(target, "/") {
				unix.Close(cur)
				if cur, err = unix.Dup(root); err != nil {
					return nil, err
				}
				walked = "/"
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		}
		unix.Close(cur)
		cur = next
		walked = filepath.Join(walked, name)
	}
	var st unix.Stat_t
	if err := unix.Fstat(cur, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w: %s: for uid %d the daemon reads single regular files only (not a directory or a device); pack it in a tarball first", api.ErrPermissionDenied, path, c.UID)
	}
	if !c.may(cur, &st, 4) {
		return nil, c.denied(path, walked, "may not read")
	}
	f, err := os.Open("/proc/self/fd/" + strconv.Itoa(cur))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: the daemon (uid %d) cannot read it either: %w", api.ErrPermissionDenied, path, os.Geteuid(), err)
	}
	return f, nil
}

func (c Cred) denied(path, at, what string) error {
	return fmt.Errorf("%w: %s: uid %d %s %s, so the daemon will not read it for it", api.ErrPermissionDenied, path, c.UID, what, at)
}

// may says whether c has the want bits (4 read, 2 write, 1 search) on
// the file fd, whose stat is st. A file with an access ACL is c's only
// when c owns it: the mode's group bits are then the ACL's mask, which
// says what a named user or group may do at most, not what c may.
func (c Cred) may(fd int, st *unix.Stat_t, want uint32) bool {
	var bits uint32
	switch {
	case st.Uid == c.UID:
		return (st.Mode>>6)&want == want
	case c.inGroup(st.Gid):
		bits = (st.Mode >> 3) & 7
	default:
		bits = st.Mode & 7
	}
	return bits&want == want && !hasACL(fd)
}

// hasACL says whether fd has an access ACL; unknown counts as yes.
func hasACL(fd int) bool {
	_, err := unix.Getxattr("/proc/self/fd/"+strconv.Itoa(fd), "system.posix_acl_access", nil)
	return err == nil || !(errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP))
}

func readlink(fd int) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
