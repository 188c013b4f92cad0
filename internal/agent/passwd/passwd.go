// Package passwd finds a user of a guest image in its /etc/passwd and
// /etc/group, so the agent can run a process or an SSH session as that
// user without the image's libc (many images have none usable by a
// static binary, some have no passwd at all).
package passwd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Account is a user as processes need it.
type Account struct {
	Name   string
	UID    uint32
	GID    uint32
	Home   string
	Shell  string // empty when passwd names none
	Groups []uint32
}

// ErrUnknownUser means neither passwd nor a numeric uid names the user.
var ErrUnknownUser = errors.New("unknown user")

// rootAccount stands in when the image has no passwd entry for root.
func rootAccount() Account { return Account{Name: "root", Home: "/root"} }

// Lookup finds user (a name or a numeric uid) in the files under root.
// Root always exists; a numeric uid without an entry runs with gid = uid
// and home /, as Docker does.
func Lookup(root, user string) (Account, error) {
	if user == "" {
		user = "root"
	}
	f, err := os.Open(filepath.Join(root, "etc/passwd"))
	var acct Account
	found := false
	if err == nil {
		acct, found, err = find(f, user)
		f.Close()
		if err != nil {
			return Account{}, fmt.Errorf("reading /etc/passwd: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return Account{}, err
	}
	if !found {
		switch uid, nerr := strconv.ParseUint(user, 10, 32); {
		case user == "root" || (nerr == nil && uid == 0):
			acct = rootAccount()
		case nerr == nil:
			acct = Account{Name: user, UID: uint32(uid), GID: uint32(uid), Home: "/"}
		default:
			return Account{}, fmt.Errorf("%w %q: the image's /etc/passwd has no such entry", ErrUnknownUser, user)
		}
	}
	if g, err := os.Open(filepath.Join(root, "etc/group")); err == nil {
		acct.Groups, err = groups(g, acct)
		g.Close()
		if err != nil {
			return Account{}, fmt.Errorf("reading /etc/group: %w", err)
		}
	}
	return acct, nil
}

// maxLine bounds a line: an image is untrusted input.
const maxLine = 64 << 10

func scanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	return sc
}

// find parses passwd lines name:pw:uid:gid:gecos:home:shell.
func find(r io.Reader, user string) (Account, bool, error) {
	sc := scanner(r)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 7 || f[0] == "" || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] != user && f[2] != user {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		home := f[5]
		if home == "" {
			home = "/"
		}
		return Account{Name: f[0], UID: uint32(uid), GID: uint32(gid), Home: home, Shell: f[6]}, true, nil
	}
	return Account{}, false, sc.Err()
}

// groups lists the gids of the groups naming acct as a member, plus its
// primary group.
func groups(r io.Reader, acct Account) ([]uint32, error) {
	out := []uint32{acct.GID}
	sc := scanner(r)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 4 {
			continue
		}
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil || uint32(gid) == acct.GID {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == acct.Name {
				out = append(out, uint32(gid))
				break
			}
		}
	}
	return out, sc.Err()
}

// maxNames bounds the ids Names keeps of each file.
const maxNames = 65536

// Names maps the uids of root's /etc/passwd and the gids of its
// /etc/group to their names (the first of each id; missing files: none).
func Names(root string) (users, groups map[uint32]string, err error) {
	users, groups = map[uint32]string{}, map[uint32]string{}
	for _, f := range []struct {
		file string
		m    map[uint32]string
	}{{"etc/passwd", users}, {"etc/group", groups}} {
		r, err := os.Open(filepath.Join(root, f.file))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		sc := scanner(r)
		for sc.Scan() && len(f.m) < maxNames {
			fields := strings.Split(sc.Text(), ":")
			if len(fields) < 3 || fields[0] == "" || strings.HasPrefix(fields[0], "#") {
				continue
			}
			id, err := strconv.ParseUint(fields[2], 10, 32)
			if _, seen := f.m[uint32(id)]; err == nil && !seen {
				f.m[uint32(id)] = fields[0]
			}
		}
		err = sc.Err()
		r.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("reading /%s: %w", f.file, err)
		}
	}
	return users, groups, nil
}
