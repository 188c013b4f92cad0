package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// Spawn starts a process with the given files and returns a function
// that waits for its exit. PID 1 supplies one that cooperates with its
// zombie reaper; OSSpawn serves everywhere else.
type Spawn func(p proto.ExecParams, stdin, stdout, stderr *os.File) (wait func() proto.ExecResult, err error)

// OSSpawn starts processes with os/exec.
func OSSpawn(p proto.ExecParams, stdin, stdout, stderr *os.File) (func() proto.ExecResult, error) {
	if len(p.Args) == 0 {
		return nil, errors.New("exec: no command")
	}
	cmd := exec.Command(p.Args[0], p.Args[1:]...)
	cmd.Env, cmd.Dir = p.Env, p.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() proto.ExecResult {
		_ = cmd.Wait()
		return ExitResult(cmd.ProcessState.Sys().(syscall.WaitStatus))
	}, nil
}

// ExitResult turns a wait status into an exec result (128+n for a signal,
// as shells report it).
func ExitResult(ws syscall.WaitStatus) proto.ExecResult {
	if ws.Signaled() {
		return proto.ExecResult{ExitCode: 128 + int(ws.Signal()), Signal: ws.Signal().String()}
	}
	return proto.ExecResult{ExitCode: ws.ExitStatus()}
}

// Server is the guest side.
type Server struct {
	Spawn    Spawn
	Ping     func() proto.PingResult
	Info     func() proto.InfoResult
	Shutdown func() // powers the guest off; called after the answer is sent
}

// Serve answers calls on rw until it fails.
func (s *Server) Serve(rw io.ReadWriteCloser) error {
	l := newLink(rw)
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

func (s *Server) exec(l *link, stream uint32, p proto.ExecParams, ch chan proto.Frame) (proto.ExecResult, error) {
	spawn := s.Spawn
	if spawn == nil {
		spawn = OSSpawn
	}
	var files []*os.File // the child's ends, closed once it started
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	stdin, err := os.Open(os.DevNull)
	if err != nil {
		return proto.ExecResult{}, err
	}
	files = append(files, stdin)
	var stdinW *os.File
	if p.Stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return proto.ExecResult{}, err
		}
		stdin, stdinW = r, w
		files = append(files, r)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return proto.ExecResult{}, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return proto.ExecResult{}, err
	}
	files = append(files, outW, errW)
	wait, err := spawn(p, stdin, outW, errW)
	if err != nil {
		outR.Close()
		errR.Close()
		if stdinW != nil {
			stdinW.Close()
		}
		return proto.ExecResult{}, fmt.Errorf("exec %q: %w", p.Args, err)
	}
	for _, f := range files {
		f.Close()
	}
	files = nil

	var copies sync.WaitGroup
	pump := func(r *os.File, fd byte) {
		defer r.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if l.sendData(stream, fd, buf[:n]) != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	copies.Go(func() { pump(outR, proto.Stdout) })
	copies.Go(func() { pump(errR, proto.Stderr) })
	stopStdin := make(chan struct{})
	if stdinW != nil {
		go func() {
			defer stdinW.Close()
			for {
				select {
				case f, ok := <-ch:
					if !ok {
						return
					}
					switch f.Kind {
					case proto.KindData:
						if f.Payload[0] == proto.Stdin {
							if _, err := stdinW.Write(f.Payload[1:]); err != nil {
								return
							}
						}
					case proto.KindClose:
						if f.Payload[0] == proto.Stdin {
							return
						}
					}
				case <-stopStdin:
					return
				}
			}
		}()
	}
	res := wait()
	close(stopStdin)
	copies.Wait()
	return res, nil
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
