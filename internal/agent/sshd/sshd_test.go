package sshd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/internal/roottest"
	"github.com/bangerdev/banger/internal/sshkey"
)

func newKey(t *testing.T) ssh.Signer {
	t.Helper()
	s, err := sshkey.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serve starts a server for the key user and returns its address and
// host key.
func serve(t *testing.T, user ssh.Signer) (string, ssh.PublicKey) {
	t.Helper()
	hk, err := sshkey.LoadOrCreate(filepath.Join(t.TempDir(), "host_key"))
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Config{HostKey: hk, Authorized: []ssh.PublicKey{user.PublicKey()}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go srv.Serve(l)
	return l.Addr().String(), hk.PublicKey()
}

func dial(t *testing.T, addr string, hostKey ssh.PublicKey, key ssh.Signer) (*ssh.Client, error) {
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)}, HostKeyCallback: ssh.FixedHostKey(hostKey),
	})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func session(t *testing.T, c *ssh.Client) *ssh.Session {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSSH(t *testing.T) {
	roottest.Require(t, "its sessions run as root")
	user := newKey(t)
	addr, hostKey := serve(t, user)

	if _, err := dial(t, addr, hostKey, newKey(t)); err == nil {
		t.Fatal("a key banger did not authorise got in")
	}
	c, err := dial(t, addr, hostKey, user)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("exec", func(t *testing.T) {
		s := session(t, c)
		s.Setenv("GREETING", "hello")
		var out, errb bytes.Buffer
		s.Stdout, s.Stderr, s.Stdin = &out, &errb, strings.NewReader("from stdin")
		err := s.Run(`echo "$GREETING $(cat)"; echo oops >&2; exit 3`)
		var exit *ssh.ExitError
		if !errors.As(err, &exit) || exit.ExitStatus() != 3 || out.String() != "hello from stdin\n" || errb.String() != "oops\n" {
			t.Fatalf("run = %v, %q, %q", err, out.String(), errb.String())
		}
	})
	t.Run("pty", func(t *testing.T) {
		s := session(t, c)
		if err := s.RequestPty("vt100", 30, 100, ssh.TerminalModes{}); err != nil {
			t.Fatal(err)
		}
		out, err := s.Output("tty; stty size; echo $TERM")
		if err != nil || !strings.Contains(string(out), "/dev/pts/") || !strings.Contains(string(out), "30 100") || !strings.Contains(string(out), "vt100") {
			t.Fatalf("pty output = %q, %v", out, err)
		}
	})
	t.Run("shell", func(t *testing.T) {
		s := session(t, c)
		if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		s.Stdout, s.Stdin = &out, strings.NewReader("echo $((6*7)); exit 5\n")
		if err := s.Shell(); err != nil {
			t.Fatal(err)
		}
		err := s.Wait()
		var exit *ssh.ExitError
		if !errors.As(err, &exit) || exit.ExitStatus() != 5 || !strings.Contains(out.String(), "42") {
			t.Fatalf("shell = %v, %q", err, out.String())
		}
	})
	t.Run("sftp", func(t *testing.T) {
		sc, err := sftp.NewClient(c)
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		path := filepath.Join(t.TempDir(), "f")
		data := bytes.Repeat([]byte("banger"), 100000)
		f, err := sc.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := sc.Chmod(path, 0o751); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		fi, _ := os.Stat(path)
		if err != nil || !bytes.Equal(got, data) || fi.Mode().Perm() != 0o751 {
			t.Fatalf("sftp upload: %d bytes, mode %v, %v", len(got), fi.Mode(), err)
		}
		r, err := sc.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		back, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("sftp download: %d bytes, %v", len(back), err)
		}
	})
	t.Run("sftp exit status", func(t *testing.T) {
		// scp fails a transfer whose session ends without an exit status.
		ch, reqs, err := c.OpenChannel("session", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		if ok, err := ch.SendRequest("subsystem", true, ssh.Marshal(struct{ Value string }{"sftp"})); !ok || err != nil {
			t.Fatalf("subsystem request: %v, %v", ok, err)
		}
		ch.CloseWrite() // the client is done
		go io.Copy(io.Discard, ch)
		var status *uint32
		for req := range reqs {
			if req.Type == "exit-status" {
				var st struct{ Status uint32 }
				if ssh.Unmarshal(req.Payload, &st) == nil {
					status = &st.Status
				}
			}
		}
		if status == nil || *status != 0 {
			t.Fatalf("sftp session ended with exit status %v, want 0", status)
		}
	})
	t.Run("direct-tcpip", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			conn, err := l.Accept()
			if err == nil {
				io.Copy(conn, conn)
				conn.Close()
			}
		}()
		conn, err := c.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("forwarded echo = %q, %v", buf, err)
		}
		if _, err := c.Dial("tcp", "127.0.0.1:1"); err == nil {
			t.Fatal("a forward to a closed port succeeded")
		}
	})
	t.Run("unknown subsystem", func(t *testing.T) {
		s := session(t, c)
		if err := s.RequestSubsystem("nope"); err != nil {
			t.Fatal(err)
		}
		if err := s.Wait(); err == nil {
			t.Fatal("an unknown subsystem exited 0")
		}
	})
}

func TestUnknownUser(t *testing.T) {
	user := newKey(t)
	addr, hostKey := serve(t, user)
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "no-such-user-here", Auth: []ssh.AuthMethod{ssh.PublicKeys(user)}, HostKeyCallback: ssh.FixedHostKey(hostKey)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.CombinedOutput("true")
	if err == nil || !strings.Contains(string(out), "unknown user") {
		t.Fatalf("unknown user: %q, %v", out, err)
	}
}

// TestReconfigure: a restored guest's server takes its VM's keys: the
// template's host key and authorised keys no longer serve.
func TestReconfigure(t *testing.T) {
	oldUser, newUser := newKey(t), newKey(t)
	oldHost, newHost := newKey(t), newKey(t)
	srv := New(Config{HostKey: oldHost, Authorized: []ssh.PublicKey{oldUser.PublicKey()}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go srv.Serve(l)
	addr := l.Addr().String()
	if _, err := dial(t, addr, oldHost.PublicKey(), oldUser); err != nil {
		t.Fatalf("before: %v", err)
	}
	srv.Reconfigure(newHost, []ssh.PublicKey{newUser.PublicKey()})
	for _, c := range []struct {
		name string
		host ssh.PublicKey
		user ssh.Signer
		ok   bool
	}{
		{"the new keys", newHost.PublicKey(), newUser, true},
		{"the old host key", oldHost.PublicKey(), newUser, false},
		{"the old user key", newHost.PublicKey(), oldUser, false},
	} {
		if _, err := dial(t, addr, c.host, c.user); (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
