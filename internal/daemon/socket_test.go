package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/roottest"
)

// TestSharedSocket shares a system layout's socket with a group, as
// `banger system install --group` has it: the socket 0660 and its
// directory 0750, the group's; a member connects, another user does not.
func TestSharedSocket(t *testing.T) {
	roottest.Require(t, "it makes users and a group")
	member, removeMember, err := roottest.AddUser("bgm")
	if err != nil {
		t.Fatal(err)
	}
	defer removeMember()
	other, removeOther, err := roottest.AddUser("bgo")
	if err != nil {
		t.Fatal(err)
	}
	defer removeOther()
	group := member.Name + "g"
	if out, err := exec.Command("groupadd", "--system", group).CombinedOutput(); err != nil {
		t.Fatalf("groupadd: %v: %s", err, out)
	}
	defer exec.Command("groupdel", group).Run()
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(g.Gid)

	base, err := os.MkdirTemp("", "bgs")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	l := paths.Layout{Mode: paths.ModeSystem, StateDir: filepath.Join(base, "state"), CacheDir: filepath.Join(base, "cache"),
		RuntimeDir: filepath.Join(base, "run"), LogDir: filepath.Join(base, "log")}
	if got, err := socketGroup(l, group); err != nil || got != gid {
		t.Fatalf("socketGroup: %d, %v", got, err)
	}
	if got, err := socketGroup(l, ""); err != nil || got != -1 {
		t.Fatalf("no group: %d, %v", got, err)
	}
	if _, err := socketGroup(l, "nosuch"+group); err == nil || !strings.Contains(err.Error(), "groupadd") {
		t.Fatalf("a missing group: %v", err)
	}
	if err := prepareDirs(l, gid); err != nil {
		t.Fatal(err)
	}
	ln, err := listen(l, gid)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for path, want := range map[string]os.FileMode{l.RuntimeDir: os.ModeDir | 0o750, l.Socket(): os.ModeSocket | 0o660} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want || int(fi.Sys().(*syscall.Stat_t).Gid) != gid {
			t.Errorf("%s: %v gid %d, want %v gid %d", path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, want, gid)
		}
	}

	self, err := os.ReadFile(os.Args[0]) // go test's own directory is root's alone
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "daemon.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	dial := func(u roottest.User, groups []uint32) error {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), "DAEMON_TEST_DIAL="+l.Socket())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID), Groups: groups}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return errors.New(string(out))
		}
		return nil
	}
	if err := dial(member, []uint32{uint32(gid)}); err != nil {
		t.Errorf("a member of %s: %v", group, err)
	}
	if err := dial(other, nil); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("another user: %v", err)
	}
}

// TestMain lets the test binary, run as another user, dial a socket
// (DAEMON_TEST_DIAL) and exit 0 when it connects.
func TestMain(m *testing.M) {
	if p := os.Getenv("DAEMON_TEST_DIAL"); p != "" {
		c, err := net.Dial("unix", p)
		if err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		c.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
