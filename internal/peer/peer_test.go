package peer

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bangerdev/banger/api"
)

// shared makes a directory others may search (t.TempDir's are 0700),
// removed after the test.
func shared(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpen walks paths as a caller who owns none of the files: what it
// may read opens, what it may not is refused by name, symlinks included.
func TestOpen(t *testing.T) {
	dir := shared(t)
	me := uint32(os.Getuid())
	gid := uint32(os.Getgid())
	stranger := Cred{UID: 54321, GID: 54321}
	member := Cred{UID: 54321, GID: 54321, Groups: []uint32{gid}}
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(content), mode))
		must(t, os.Chmod(p, mode))
		return p
	}
	public := write("public", "public", 0o644)
	secret := write("secret", "secret", 0o600)
	groupOnly := write("group", "group", 0o640)
	write("closed/inside", "inside", 0o644)
	must(t, os.Chmod(filepath.Join(dir, "closed"), 0o700))
	must(t, os.Mkdir(filepath.Join(dir, "adir"), 0o755))
	must(t, os.Symlink(secret, filepath.Join(dir, "to-secret")))
	must(t, os.Symlink("public", filepath.Join(dir, "to-public")))
	must(t, os.Symlink("../"+filepath.Base(dir)+"/closed/inside", filepath.Join(dir, "to-closed")))
	must(t, os.Symlink("loop2", filepath.Join(dir, "loop1")))
	must(t, os.Symlink("loop1", filepath.Join(dir, "loop2")))
	must(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o666))

	for _, tc := range []struct {
		name string
		cred Cred
		path string
		want string // content, or "" for a refusal
		err  error
		msg  string
	}{
		{"a public file", stranger, public, "public", nil, ""},
		{"through a relative symlink", stranger, filepath.Join(dir, "to-public"), "public", nil, ""},
		{"with dot-dot", stranger, filepath.Join(dir, "adir", "..", "public"), "public", nil, ""},
		{"the owner's own", Cred{UID: me, GID: gid}, secret, "secret", nil, ""},
		{"a group member", member, groupOnly, "group", nil, ""},
		{"another's private file", stranger, secret, "", api.ErrPermissionDenied, "may not read"},
		{"through a symlink to it", stranger, filepath.Join(dir, "to-secret"), "", api.ErrPermissionDenied, "may not read"},
		{"not in the group", stranger, groupOnly, "", api.ErrPermissionDenied, "may not read"},
		{"in a closed directory", stranger, filepath.Join(dir, "closed", "inside"), "", api.ErrPermissionDenied, "may not search"},
		{"through a symlink into it", stranger, filepath.Join(dir, "to-closed"), "", api.ErrPermissionDenied, "may not search"},
		{"a directory", stranger, filepath.Join(dir, "adir"), "", api.ErrPermissionDenied, "single regular files"},
		{"a fifo", stranger, filepath.Join(dir, "fifo"), "", api.ErrPermissionDenied, "single regular files"},
		{"a symlink loop", stranger, filepath.Join(dir, "loop1"), "", api.ErrInvalidArgument, "too many symlinks"},
		{"missing", stranger, filepath.Join(dir, "nothing"), "", api.ErrInvalidArgument, "no such file"},
		{"relative", stranger, "public", "", api.ErrInvalidArgument, "not an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.cred.Open(tc.path)
			if tc.want == "" {
				if err == nil {
					f.Close()
					t.Fatal("opened")
				}
				if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("err = %v, want %v with %q", err, tc.err, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b, _ := io.ReadAll(f)
			if string(b) != tc.want {
				t.Fatalf("read %q, want %q", b, tc.want)
			}
		})
	}
}

// TestFileIsTheOneChecked swaps the path for a symlink to a private file
// after the check: the daemon still reads the file that was checked.
func TestFileIsTheOneChecked(t *testing.T) {
	dir := shared(t)
	secret := filepath.Join(dir, "secret")
	must(t, os.WriteFile(secret, []byte("secret"), 0o600))
	mine := filepath.Join(dir, "mine.tar")
	must(t, os.WriteFile(mine, []byte("mine"), 0o644))
	h := Host{Self: uint32(os.Geteuid())}
	ctx := NewContext(context.Background(), Cred{UID: 54321, GID: 54321})
	use, release, err := h.File(ctx, mine)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if !strings.HasPrefix(use, "/proc/self/fd/") {
		t.Fatalf("a foreign caller's file is read at %s", use)
	}
	must(t, os.Remove(mine))
	must(t, os.Symlink(secret, mine))
	b, err := os.ReadFile(use)
	if err != nil || string(b) != "mine" {
		t.Fatalf("read %q, %v after the swap", b, err)
	}
}

func TestHost(t *testing.T) {
	self := uint32(os.Geteuid())
	h := Host{Self: self}
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		trusted bool
	}{
		{"the daemon's own work", context.Background(), true},
		{"root", NewContext(context.Background(), Cred{UID: 0}), true},
		{"the daemon's user", NewContext(context.Background(), Cred{UID: self}), true},
		{"another user", NewContext(context.Background(), Cred{UID: self + 1000}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := h.Tree(tc.ctx, "/srv/project", "workspace prepare")
			if tc.trusted != (err == nil) {
				t.Fatalf("Tree: %v", err)
			}
			if err != nil && (!errors.Is(err, api.ErrPermissionDenied) || !strings.Contains(err.Error(), "banger daemon start")) {
				t.Fatalf("Tree: %v", err)
			}
			if err := h.Credentials(tc.ctx); tc.trusted != (err == nil) ||
				err != nil && (!errors.Is(err, api.ErrPermissionDenied) || !strings.Contains(err.Error(), "docker login")) {
				t.Fatalf("Credentials: %v", err)
			}
			use, release, err := h.File(tc.ctx, "/etc/hostname")
			if err != nil {
				t.Fatal(err)
			}
			release()
			if tc.trusted != (use == "/etc/hostname") {
				t.Fatalf("File: %s", use)
			}
		})
	}
}

// TestFromConn asks the kernel who is on the other end of a socket pair.
func TestFromConn(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "a")
	defer f.Close()
	syscall.Close(fds[1])
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cred, err := FromConn(c)
	if err != nil {
		t.Fatal(err)
	}
	if cred.UID != uint32(os.Geteuid()) || cred.PID != int32(os.Getpid()) {
		t.Fatalf("cred %+v", cred)
	}
	if _, err := FromConn(&net.TCPConn{}); !errors.Is(err, ErrNoCred) {
		t.Fatalf("a TCP conn: %v", err)
	}
	if got := groupsOf(int32(os.Getpid()), uint32(os.Getuid())+1); got != nil {
		t.Fatalf("groups of a process whose uid is not the caller's: %v", got)
	}
}

// FuzzOpen walks paths a caller chose (symlink targets are the caller's
// too): never a panic, and what opens is a regular file the caller may
// read by its mode.
func FuzzOpen(f *testing.F) {
	for _, s := range []string{"/", "/etc/hostname", "/proc/self/fd/0", "//etc/../etc/./hostname", "/etc/hostname/x", "/a\x00b", "/" + strings.Repeat("../", 50) + "etc/hostname"} {
		f.Add(s)
	}
	stranger := Cred{UID: 54321, GID: 54321}
	f.Fuzz(func(t *testing.T, path string) {
		file, err := stranger.Open(path)
		if err != nil {
			return
		}
		defer file.Close()
		fi, err := file.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%q opened %v, %v", path, fi, err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != stranger.UID && fi.Mode().Perm()&0o004 == 0 {
			t.Fatalf("%q opened a file others may not read: %v", path, fi.Mode())
		}
	})
}
