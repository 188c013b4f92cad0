// Package server is the guest's end of the agent protocol: it answers
// the host's calls on one link (ping, info, exec with pipes or a terminal,
// files, trees, stats, ports, dial, SSH, power-off). The guest agent
// (internal/agent/guest) runs it; it links no host code.
package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bangerdev/banger/internal/agent/link"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/spawn"
)

// Server is the guest side.
type Server struct {
	Spawn    spawn.Func
	Ping     func() proto.PingResult
	Info     func() proto.InfoResult
	Shutdown func() // powers the guest off; called after the answer is sent
	// SSH serves one SSH connection (MethodSSH); nil refuses the method.
	SSH func(net.Conn)
	// Stats and Ports answer MethodStats and MethodPorts; nil refuses.
	Stats func() (proto.StatsResult, error)
	Ports func() ([]proto.Socket, error)
}

// Serve answers calls on rw until it fails.
func (s *Server) Serve(rw io.ReadWriteCloser) error {
	l := link.New(rw)
	if err := l.Send(proto.Frame{Kind: proto.KindHello}); err != nil {
		return err
	}
	var wg sync.WaitGroup
	l.Run(func(f proto.Frame) {
		ch, err := l.Open(f.Stream)
		if err != nil {
			return
		}
		wg.Go(func() {
			defer l.Release(f.Stream)
			s.handle(l, f, ch)
		})
	})
	wg.Wait()
	return l.Err()
}

func (s *Server) respond(l *link.Link, stream uint32, result any, err error) {
	l.Respond(stream, result, err)
}

func (s *Server) handle(l *link.Link, f proto.Frame, ch <-chan proto.Frame) {
	var req proto.Request
	if err := json.Unmarshal(f.Payload, &req); err != nil {
		s.respond(l, f.Stream, nil, fmt.Errorf("bad request: %v", err))
		return
	}
	switch req.Method {
	case proto.MethodPing:
		var r proto.PingResult
		if s.Ping != nil {
			r = s.Ping()
		}
		s.respond(l, f.Stream, r, nil)
	case proto.MethodInfo:
		var r proto.InfoResult
		if s.Info != nil {
			r = s.Info()
		}
		s.respond(l, f.Stream, r, nil)
	case proto.MethodShutdown:
		s.respond(l, f.Stream, struct{}{}, nil)
		if s.Shutdown != nil {
			s.Shutdown()
		}
	case proto.MethodReadFile, proto.MethodWriteFile:
		var p proto.FileParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			s.respond(l, f.Stream, nil, fmt.Errorf("bad file params: %v", err))
			return
		}
		var r proto.FileResult
		var err error
		if req.Method == proto.MethodReadFile {
			r, err = readFile(l, f.Stream, p)
		} else {
			r, err = writeFile(l, p, ch)
		}
		s.respond(l, f.Stream, r, err)
	case proto.MethodSSH:
		if s.SSH == nil {
			s.respond(l, f.Stream, nil, errors.New("this agent serves no SSH"))
			return
		}
		ours, theirs := net.Pipe()
		go s.SSH(theirs)
		pipeStream(l, f.Stream, ours, ch)
		s.respond(l, f.Stream, struct{}{}, nil)
	case proto.MethodDial:
		var p proto.DialParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			s.respond(l, f.Stream, nil, fmt.Errorf("bad dial params: %v", err))
			return
		}
		c, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
		if err != nil {
			s.respond(l, f.Stream, nil, err)
			return
		}
		pipeStream(l, f.Stream, c, ch)
		s.respond(l, f.Stream, struct{}{}, nil)
	case proto.MethodStats:
		if s.Stats == nil {
			s.respond(l, f.Stream, nil, errors.New("this agent serves no stats"))
			return
		}
		r, err := s.Stats()
		s.respond(l, f.Stream, r, err)
	case proto.MethodPorts:
		if s.Ports == nil {
			s.respond(l, f.Stream, nil, errors.New("this agent serves no ports"))
			return
		}
		socks, err := s.Ports()
		s.respond(l, f.Stream, proto.PortsResult{Sockets: socks}, err)
	case proto.MethodPutTree, proto.MethodGetTree, proto.MethodManifest:
		s.handleTree(l, f.Stream, req, ch)
	case proto.MethodExec:
		var p proto.ExecParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			s.respond(l, f.Stream, nil, fmt.Errorf("bad exec params: %v", err))
			return
		}
		r, err := s.exec(l, f.Stream, p, ch)
		s.respond(l, f.Stream, r, err)
	default:
		s.respond(l, f.Stream, nil, fmt.Errorf("unknown method %q", req.Method))
	}
}

func (s *Server) spawn() spawn.Func {
	if s.Spawn == nil {
		return spawn.OS
	}
	return s.Spawn
}

func (s *Server) exec(l *link.Link, stream uint32, p proto.ExecParams, ch <-chan proto.Frame) (proto.ExecResult, error) {
	done := make(chan struct{})
	defer close(done) // ends the reads of the caller's frames
	in := l.NewReader(ch, proto.Stdin, done)
	stdout := l.NewWriter(stream, proto.Stdout)
	if p.Tty {
		resize := make(chan proto.Winsize, 1)
		in.Resize(resize)
		return spawn.RunTTY(s.spawn(), p, in, stdout, resize)
	}
	var stdin io.Reader = in
	if !p.Stdin {
		stdin = nil                                    // the process gets /dev/null
		go func() { _, _ = io.Copy(io.Discard, in) }() // and the link never waits on this stream
	}
	return spawn.RunPipes(s.spawn(), p, stdin, stdout, l.NewWriter(stream, proto.Stderr))
}

// pipeStream joins a stream to conn: the caller's stdin frames are
// written to it, what it yields goes back as stdout frames. It returns
// once conn closed, by either end.
func pipeStream(l *link.Link, stream uint32, conn net.Conn, ch <-chan proto.Frame) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(conn, l.NewReader(ch, proto.Stdin, done))
		conn.Close()
	}()
	_, _ = io.Copy(l.NewWriter(stream, proto.Stdout), conn)
	conn.Close()
	close(done)
	_ = l.CloseFD(stream, proto.Stdout)
}

func readFile(l *link.Link, stream uint32, p proto.FileParams) (proto.FileResult, error) {
	f, err := os.Open(p.Path)
	if err != nil {
		return proto.FileResult{}, err
	}
	defer f.Close()
	n, err := io.Copy(l.NewWriter(stream, proto.Stdout), f)
	return proto.FileResult{Size: n}, err
}

// writeFile writes the caller's bytes to a temporary file beside the
// target and renames it into place once the caller closed its stream, so
// a broken transfer never leaves half a file.
func writeFile(l *link.Link, p proto.FileParams, ch <-chan proto.Frame) (proto.FileResult, error) {
	mode := os.FileMode(p.Mode & 0o7777)
	if mode == 0 {
		mode = 0o644
	}
	tmp, err := os.CreateTemp(filepath.Dir(p.Path), ".banger-write-*")
	if err != nil {
		return proto.FileResult{}, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, l.NewReader(ch, proto.Stdin, nil))
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return proto.FileResult{}, fmt.Errorf("writing %s: %w", p.Path, err)
	}
	if err := os.Rename(tmp.Name(), p.Path); err != nil {
		return proto.FileResult{}, err
	}
	return proto.FileResult{Size: n}, nil
}
