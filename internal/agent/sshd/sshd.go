// Package sshd is the guest agent's SSH server: sessions (shell, exec,
// the sftp subsystem, with or without a terminal) and direct-tcpip
// forwards, for exactly the keys banger authorised. It needs nothing
// from the image, so an image without sshd, or without a shell, is still
// reachable by ssh, scp, rsync, git and IDE remotes.
package sshd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/internal/agent/passwd"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/spawn"
)

// Server serves SSH connections.
type Server struct {
	spawn spawn.Func
	root  string // the guest's root, "/" in a guest
	log   *slog.Logger
	conf  atomic.Pointer[ssh.ServerConfig] // swapped whole by Reconfigure
	open  atomic.Int32                     // connections past the handshake
}

// Connections counts the open, authenticated connections: the host's
// idle sweep counts them as activity.
func (s *Server) Connections() int { return int(s.open.Load()) }

// Config wires a Server.
type Config struct {
	HostKey    ssh.Signer
	Authorized []ssh.PublicKey
	Spawn      spawn.Func // nil: spawn.OS
	Root       string     // default "/"
	Log        *slog.Logger
}

// New makes a server accepting exactly c.Authorized.
func New(c Config) *Server {
	s := &Server{spawn: c.Spawn, root: c.Root, log: c.Log}
	if s.spawn == nil {
		s.spawn = spawn.OS
	}
	if s.root == "" {
		s.root = "/"
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.Reconfigure(c.HostKey, c.Authorized)
	return s
}

// Reconfigure serves new connections with hostKey, for exactly
// authorized: a guest restored from a template takes its own VM's keys.
// Open connections keep what they were accepted with.
func (s *Server) Reconfigure(hostKey ssh.Signer, authorized []ssh.PublicKey) {
	keys := make([][]byte, len(authorized))
	for i, k := range authorized {
		keys[i] = k.Marshal()
	}
	conf := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			b := key.Marshal()
			for _, k := range keys {
				if bytes.Equal(k, b) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, errors.New("key not authorised by banger")
		},
		ServerVersion: "SSH-2.0-banger-agent",
	}
	conf.AddHostKey(hostKey)
	s.conf.Store(conf)
}

// Serve accepts connections until l fails.
func (s *Server) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go s.ServeConn(c)
	}
}

// ServeConn runs one connection to its end.
func (s *Server) ServeConn(c net.Conn) {
	defer c.Close()
	conn, chans, reqs, err := ssh.NewServerConn(c, s.conf.Load())
	if err != nil {
		s.log.Debug("ssh handshake failed", "err", err)
		return
	}
	s.open.Add(1)
	defer s.open.Add(-1)
	defer conn.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			ch, reqs, err := nc.Accept()
			if err != nil {
				continue
			}
			go s.session(conn.User(), ch, reqs)
		case "direct-tcpip":
			go s.forward(nc)
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "banger's agent serves session and direct-tcpip channels")
		}
	}
}

type ptyReq struct {
	Term          string
	Cols, Rows    uint32
	Width, Height uint32
	Modes         string
}

type windowChange struct {
	Cols, Rows    uint32
	Width, Height uint32
}

func clamp(n uint32) uint16 { return uint16(min(n, 0xffff)) }

// session serves one session channel: requests set it up until one of
// shell, exec or subsystem starts what it runs.
func (s *Server) session(user string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	var env []string
	var tty *ptyReq
	resize := make(chan proto.Winsize, 4)
	started := false
	for req := range reqs {
		ok := false
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(req.Payload, &kv) == nil && !started {
				env, ok = append(env, kv.Name+"="+kv.Value), true
			}
		case "pty-req":
			var p ptyReq
			if ssh.Unmarshal(req.Payload, &p) == nil && !started {
				tty, ok = &p, true
			}
		case "window-change":
			var w windowChange
			if ssh.Unmarshal(req.Payload, &w) == nil {
				select {
				case resize <- proto.Winsize{Rows: clamp(w.Rows), Cols: clamp(w.Cols)}:
				default: // a burst of resizes: the last ones win soon enough
				}
			}
		case "shell", "exec", "subsystem":
			if started {
				break
			}
			var arg struct{ Value string }
			if req.Type != "shell" && ssh.Unmarshal(req.Payload, &arg) != nil {
				break
			}
			started, ok = true, true
			// Reply before the run starts: a quick command could
			// otherwise close the channel first, and the client's
			// request would end in EOF instead of its output.
			if req.WantReply {
				_ = req.Reply(true, nil)
				req.WantReply = false
			}
			go func() {
				code := s.run(user, req.Type, arg.Value, env, tty, ch, resize)
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
				ch.Close()
			}()
		}
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
	}
	if !started {
		ch.Close()
	}
}

// run runs what a session asked for and returns its exit status.
func (s *Server) run(user, kind, arg string, env []string, tty *ptyReq, ch ssh.Channel, resize <-chan proto.Winsize) int {
	acct, err := passwd.Lookup(s.root, user)
	if err != nil {
		fmt.Fprintf(ch.Stderr(), "banger: %v\r\n", err)
		return 1
	}
	if kind == "subsystem" {
		return s.subsystem(acct, arg, ch)
	}
	shell := s.shell(acct)
	var args []string
	switch {
	case kind == "shell" && shell == "":
		fmt.Fprintf(ch.Stderr(), "banger: this image has no shell; run a command instead (ssh HOST -- CMD)\r\n")
		return 127
	case kind == "shell":
		args = []string{shell, "-l"}
	case shell == "":
		args = strings.Fields(arg) // no shell to parse it: words, as given
	default:
		args = []string{shell, "-c", arg}
	}
	if len(args) == 0 {
		fmt.Fprintf(ch.Stderr(), "banger: empty command\r\n")
		return 127
	}
	p := proto.ExecParams{Args: args, Env: env, User: user}
	var res proto.ExecResult
	if tty != nil {
		p.Env = append(p.Env, "TERM="+tty.Term)
		p.Rows, p.Cols = clamp(tty.Rows), clamp(tty.Cols)
		res, err = spawn.RunTTY(s.spawn, p, ch, ch, resize)
	} else {
		res, err = spawn.RunPipes(s.spawn, p, ch, ch, ch.Stderr())
	}
	if err != nil {
		fmt.Fprintf(ch.Stderr(), "banger: %v\r\n", err)
		return 127
	}
	return res.ExitCode
}

// shell is the user's login shell if the image has it, else /bin/sh if
// it has that, else "".
func (s *Server) shell(acct passwd.Account) string {
	for _, sh := range []string{acct.Shell, "/bin/sh"} {
		if sh == "" || !filepath.IsAbs(sh) {
			continue
		}
		if fi, err := os.Stat(filepath.Join(s.root, sh)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return sh
		}
	}
	return ""
}

// sftpServers are where images keep OpenSSH's sftp-server.
func sftpServers() []string {
	return []string{"/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server", "/usr/libexec/sftp-server"}
}

// subsystem serves sftp: root gets the agent's own server, which needs
// nothing in the image; another user gets the image's sftp-server run as
// that user, so file access is checked as it should be.
func (s *Server) subsystem(acct passwd.Account, name string, ch ssh.Channel) int {
	if name != "sftp" {
		fmt.Fprintf(ch.Stderr(), "banger: unknown subsystem %q\r\n", name)
		return 1
	}
	if acct.UID != 0 {
		for _, bin := range sftpServers() {
			if _, err := os.Stat(filepath.Join(s.root, bin)); err == nil {
				res, err := spawn.RunPipes(s.spawn, proto.ExecParams{Args: []string{bin}, User: strconv.FormatUint(uint64(acct.UID), 10)}, ch, ch, ch.Stderr())
				if err != nil {
					fmt.Fprintf(ch.Stderr(), "banger: %v\r\n", err)
					return 1
				}
				return res.ExitCode
			}
		}
		fmt.Fprintf(ch.Stderr(), "banger: sftp as %s needs the image's sftp-server (install openssh-sftp-server), or connect as root\r\n", acct.Name)
		return 1
	}
	// The server closes what it serves on when it ends; the channel must
	// stay open to carry the exit status (scp fails without one).
	srv, err := sftp.NewServer(keepOpen{ch}, sftp.WithServerWorkingDirectory(filepath.Join(s.root, acct.Home)))
	if err != nil {
		return 1
	}
	if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
		s.log.Debug("sftp session ended", "err", err)
	}
	_ = srv.Close()
	return 0
}

// keepOpen hides Close from what it wraps.
type keepOpen struct{ io.ReadWriter }

func (keepOpen) Close() error { return nil }

// forward serves a direct-tcpip channel: a connection the client's -L or
// an IDE opens to an address the guest can reach.
func (s *Server) forward(nc ssh.NewChannel) {
	var d struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &d); err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "bad direct-tcpip request")
		return
	}
	conn, err := net.Dial("tcp", net.JoinHostPort(d.Host, strconv.FormatUint(uint64(d.Port), 10)))
	if err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		conn.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = io.Copy(ch, conn)
		_ = ch.CloseWrite()
	})
	wg.Go(func() {
		_, _ = io.Copy(conn, ch)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	})
	wg.Wait()
	ch.Close()
	conn.Close()
}
