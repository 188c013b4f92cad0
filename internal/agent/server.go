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
	_ = l.send(proto.Frame{Kind: proto.KindResponse, Stream: stream, Payload: b})
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
			r, err = writeFile(p, ch)
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
	// Frames from the caller: stdin into a pipe, sizes to resize.
	var stdin io.Reader
	var stdinW *io.PipeWriter
	if p.Stdin || p.Tty {
		pr, pw := io.Pipe()
		// Closing the reader on return frees a frame being written to
		// a process that no longer reads.
		defer pr.Close()
		stdin, stdinW = pr, pw
	}
	resize := make(chan Winsize, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		if stdinW != nil {
			defer stdinW.Close()
		}
		for {
			select {
			case f, ok := <-ch:
				if !ok {
					return
				}
				switch {
				case f.Kind == proto.KindData && f.Payload[0] == proto.Stdin && stdinW != nil:
					if _, err := stdinW.Write(f.Payload[1:]); err != nil {
						return
					}
				case f.Kind == proto.KindClose && f.Payload[0] == proto.Stdin && stdinW != nil:
					stdinW.Close()
				case f.Kind == proto.KindWindow:
					rows, cols := proto.WindowSize(f.Payload)
					select {
					case resize <- Winsize{rows, cols}:
					case <-stop:
						return
					}
				}
			case <-stop:
				return
			}
		}
	}()
	stdout := &frameWriter{l: l, stream: stream, fd: proto.Stdout}
	if p.Tty {
		return RunTTY(s.spawn(), p, stdin, stdout, resize)
	}
	return RunPipes(s.spawn(), p, stdin, stdout, &frameWriter{l: l, stream: stream, fd: proto.Stderr})
}

// pipeStream joins a stream to conn: the caller's stdin frames are
// written to it, what it yields goes back as stdout frames. It returns
// once conn closed, by either end.
func pipeStream(l *link, stream uint32, conn net.Conn, ch chan proto.Frame) {
	stop := make(chan struct{})
	go func() {
		defer conn.Close()
		for {
			select {
			case f, ok := <-ch:
				if !ok {
					return
				}
				switch {
				case f.Kind == proto.KindData && f.Payload[0] == proto.Stdin:
					if _, err := conn.Write(f.Payload[1:]); err != nil {
						return
					}
				case f.Kind == proto.KindClose && f.Payload[0] == proto.Stdin:
					return
				}
			case <-stop:
				return
			}
		}
	}()
	_, _ = io.Copy(&frameWriter{l: l, stream: stream, fd: proto.Stdout}, conn)
	conn.Close()
	close(stop)
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
	var n int64
	buf := make([]byte, 64<<10)
	for {
		m, err := f.Read(buf)
		if m > 0 {
			if err := l.sendData(stream, proto.Stdout, buf[:m]); err != nil {
				return proto.FileResult{}, err
			}
			n += int64(m)
		}
		if errors.Is(err, io.EOF) {
			return proto.FileResult{Size: n}, nil
		}
		if err != nil {
			return proto.FileResult{}, err
		}
	}
}

// writeFile writes the caller's bytes to a temporary file beside the
// target and renames it into place once the caller closed its stream, so
// a broken transfer never leaves half a file.
func writeFile(p proto.FileParams, ch chan proto.Frame) (proto.FileResult, error) {
	mode := os.FileMode(p.Mode & 0o7777)
	if mode == 0 {
		mode = 0o644
	}
	tmp, err := os.CreateTemp(filepath.Dir(p.Path), ".banger-write-*")
	if err != nil {
		return proto.FileResult{}, err
	}
	defer os.Remove(tmp.Name())
	var n int64
	for f := range ch {
		switch {
		case f.Kind == proto.KindData && f.Payload[0] == proto.Stdin:
			m, err := tmp.Write(f.Payload[1:])
			n += int64(m)
			if err != nil {
				tmp.Close()
				return proto.FileResult{}, err
			}
		case f.Kind == proto.KindClose && f.Payload[0] == proto.Stdin:
			if err := tmp.Chmod(mode); err != nil {
				tmp.Close()
				return proto.FileResult{}, err
			}
			if err := tmp.Close(); err != nil {
				return proto.FileResult{}, err
			}
			if err := os.Rename(tmp.Name(), p.Path); err != nil {
				return proto.FileResult{}, err
			}
			return proto.FileResult{Size: n}, nil
		}
	}
	tmp.Close()
	return proto.FileResult{}, errors.New("the caller went away mid-transfer")
}
