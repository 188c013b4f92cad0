// Package peer is who called the daemon (SO_PEERCRED on its socket) and
// what that caller may make it touch on the host. The daemon acts with
// its own rights; a caller who is neither root nor the daemon's own user
// (a member of the install's --group) gets only what the daemon can
// prove the caller could do itself: a file the caller can read, opened
// by a walk that checks the caller's rights at every step and read
// through the descriptor that walk ended on, so nothing can be swapped
// in between. Anything else of such a caller's (a directory to read or
// write, a repository to run git in) is refused, naming why.
package peer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Cred is a caller: its uid, gid and groups, and the pid it had when it
// connected.
type Cred struct {
	UID, GID uint32
	PID      int32
	Groups   []uint32 // supplementary groups, when /proc told them
}

// ErrNoCred means the connection is not a unix socket the kernel can
// name the peer of.
var ErrNoCred = errors.New("no peer credentials")

// FromConn asks the kernel who is on the other end of c (SO_PEERCRED),
// and /proc for that process's supplementary groups.
func FromConn(c net.Conn) (Cred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Cred{}, ErrNoCred
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Cred{}, err
	}
	var ucred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		ucred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, err
	}
	if serr != nil {
		return Cred{}, fmt.Errorf("%w: %w", ErrNoCred, serr)
	}
	cr := Cred{UID: ucred.Uid, GID: ucred.Gid, PID: ucred.Pid}
	cr.Groups = groupsOf(ucred.Pid, ucred.Uid)
	return cr, nil
}

// groupsOf reads a process's supplementary groups from /proc, provided
// the process there is still the caller's (same uid): a pid reused by
// another user's process gives none, which only narrows what the caller
// may use.
func groupsOf(pid int32, uid uint32) []uint32 {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	var groups []uint32
	sameUser := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		switch key {
		case "Uid":
			// real, effective, saved, fs: the fs uid is what file access uses
			sameUser = len(fields) == 4 && fields[1] == strconv.Itoa(int(uid)) && fields[3] == fields[1]
		case "Groups":
			for _, g := range fields {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					groups = append(groups, uint32(n))
				}
			}
		}
	}
	if !sameUser {
		return nil
	}
	return groups
}

// String names the caller for logs and errors.
func (c Cred) String() string { return fmt.Sprintf("uid %d (pid %d)", c.UID, c.PID) }

// inGroup says whether gid is one of the caller's groups.
func (c Cred) inGroup(gid uint32) bool { return c.GID == gid || slices.Contains(c.Groups, gid) }

type ctxKey struct{}

// NewContext carries the caller of a request.
func NewContext(ctx context.Context, c Cred) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext is the caller of a request, if it came through the socket
// (the daemon's own work, such as a create's operation, has none).
func FromContext(ctx context.Context) (Cred, bool) {
	c, ok := ctx.Value(ctxKey{}).(Cred)
	return c, ok
}
