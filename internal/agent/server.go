package agent

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

	"github.com/bangerdev/banger/internal/agent/proto"
)

// Server is the guest side.
type Server struct {
	Spawn    Spawn
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
	l := newLink(rw)
	if err := l.send(proto.Frame{Kind: proto.KindHello}); err != nil {
		return err
	}
	var wg sync.WaitGroup
	l.readLoop(func(f proto.Frame) {
		ch, err := l.open(f.Stream)
		if err != nil {
			return
		}
		wg.Go(func() {
			defer l.release(f.Stream)
			s.handle(l, f, ch)
		})
	})
	wg.Wait()
	return l.err
}

func (s *Server) respond(l *link, stream uint32, result any, err error) {
	var resp proto.Response
	if err != nil {
		resp.Error = err.Error()
	} else if result != nil {
		b, merr := json.Marshal(result)
		if merr != nil {
			resp.Error = merr.Error()
		}
		resp.Result = b
	}
	b, _ := json.Marshal(resp)
	if err := l.send(proto.Frame{Kind: proto.KindResponse, Stream: stream, Payload: b}); errors.Is(err, proto.ErrFrame) {
		// Too big for a frame: say so rather than leave the caller waiting.
		b, _ = json.Marshal(proto.Response{Error: fmt.Sprintf("the answer (%d bytes) does not fit an agent frame", len(b))})
		_ = l.send(proto.Frame{Kind: proto.KindResponse, Stream: stream, Payload: b})
	}
}

func (s *Server) handle(l *link, f proto.Frame, ch chan proto.Frame) {
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

func (s *Server) spawn() Spawn {
	if s.Spawn == nil {
		return OSSpawn
	}
	return s.Spawn
}

func (s *Server) exec(l *link, stream uint32, p proto.ExecParams, ch chan proto.Frame) (proto.ExecResult, error) {
	done := make(chan struct{})
	defer close(done) // ends the reads of the caller's frames
	in := &frameReader{ch: ch, fd: proto.Stdin, done: done, link: l}
	stdout := &frameWriter{l: l, stream: stream, fd: proto.Stdout}
	if p.Tty {
		resize := make(chan Winsize, 1)
		in.resize = resize
		return RunTTY(s.spawn(), p, in, stdout, resize)
	}
	var stdin io.Reader = in
	if !p.Stdin {
		stdin = nil                                    // the process gets /dev/null
		go func() { _, _ = io.Copy(io.Discard, in) }() // and the link never waits on this stream
	}
	return RunPipes(s.spawn(), p, stdin, stdout, &frameWriter{l: l, stream: stream, fd: proto.Stderr})
}

// pipeStream joins a stream to conn: the caller's stdin frames are
// written to it, what it yields goes back as stdout frames. It returns
// once conn closed, by either end.
func pipeStream(l *link, stream uint32, conn net.Conn, ch chan proto.Frame) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(conn, &frameReader{ch: ch, fd: proto.Stdin, done: done, link: l})
		conn.Close()
	}()
	_, _ = io.Copy(&frameWriter{l: l, stream: stream, fd: proto.Stdout}, conn)
	conn.Close()
	close(done)
	_ = l.send(proto.Frame{Kind: proto.KindClose, Stream: stream, Payload: []byte{proto.Stdout}})
}

// frameWriter sends what is written as Data frames of one stream.
type frameWriter struct {
	l      *link
	stream uint32
	fd     byte
}

func (w *frameWriter) Write(p []byte) (int, error) {
	if err := w.l.sendData(w.stream, w.fd, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func readFile(l *link, stream uint32, p proto.FileParams) (proto.FileResult, error) {
	f, err := os.Open(p.Path)
	if err != nil {
		return proto.FileResult{}, err
	}
	defer f.Close()
	n, err := io.Copy(&frameWriter{l: l, stream: stream, fd: proto.Stdout}, f)
	return proto.FileResult{Size: n}, err
}

// writeFile writes the caller's bytes to a temporary file beside the
// target and renames it into place once the caller closed its stream, so
// a broken transfer never leaves half a file.
func writeFile(l *link, p proto.FileParams, ch chan proto.Frame) (proto.FileResult, error) {
	mode := os.FileMode(p.Mode & 0o7777)
	if mode == 0 {
		mode = 0o644
	}
	tmp, err := os.CreateTemp(filepath.Dir(p.Path), ".banger-write-*")
	if err != nil {
		return proto.FileResult{}, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, &frameReader{ch: ch, fd: proto.Stdin, link: l})
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
