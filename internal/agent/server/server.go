// Package server is the guest's end of the agent protocol: it answers
// the host's calls on one link (ping, info, exec with pipes or a terminal,
// files, trees, stats, ports, dial, SSH, power-off, signals to execs,
// execs kept across the host's going and attached to again). The guest agent
// (internal/agent/guest) runs it; it links no host code.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/link"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/spawn"
	"github.com/bangerdev/banger/internal/agent/tree"
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
	// Identity makes a restored guest its VM's (MethodIdentity); nil
	// refuses the method.
	Identity func(proto.IdentityParams) (proto.IdentityResult, error)

	mu      sync.Mutex
	handles map[string]int // a running exec's handle: its process group
	kept    map[string]*kept
	keptSeq uint64
	// manifests holds the hashes of the trees manifested, by stamp: a
	// workspace status re-reads only what changed.
	manifests tree.Cache
}

// Serve answers calls on rw until it fails.
func (s *Server) Serve(rw io.ReadWriteCloser) error {
	l := link.New(rw)
	if err := l.Send(context.Background(), proto.Hello()); err != nil {
		return err
	}
	table := methods()
	var wg sync.WaitGroup
	l.Run(func(f proto.Frame) {
		ch, err := l.Open(f.Stream)
		if err != nil {
			return
		}
		wg.Go(func() {
			defer l.Release(f.Stream)
			s.handle(table, l, f, ch)
		})
	})
	wg.Wait()
	return l.Err()
}

// call is one request being served on its stream.
type call struct {
	l      *link.Link
	stream uint32
	method string
	params json.RawMessage
	ch     <-chan proto.Frame // the caller's frames for this stream
	// after runs once the answer is sent (shutdown powers off then).
	after func()
}

// in reads the caller's stdin bytes; done (nil: never) ends it early.
func (c *call) in(done <-chan struct{}) *link.Reader { return c.l.NewReader(c.ch, proto.Stdin, done) }

// out writes fd's bytes back to the caller.
func (c *call) out(fd byte) *link.Writer { return c.l.NewWriter(c.stream, fd) }

// writeTempPrefix starts the temporary file a write_file fills beside
// its target (watches leave it out).
const writeTempPrefix = ".banger-write-"

// method answers one call with its result or error.
type method func(s *Server, c *call) (any, error)

// methods is the agent's handler table.
func methods() map[string]method {
	return map[string]method{
		proto.MethodPing:      func(s *Server, _ *call) (any, error) { return optional(s.Ping), nil },
		proto.MethodInfo:      func(s *Server, _ *call) (any, error) { return optional(s.Info), nil },
		proto.MethodShutdown:  (*Server).shutdown,
		proto.MethodReadFile:  with(readFile),
		proto.MethodWriteFile: with(writeFile),
		proto.MethodSSH:       (*Server).ssh,
		proto.MethodDial:      with(dial),
		proto.MethodStats:     func(s *Server, _ *call) (any, error) { return served(s.Stats, "stats") },
		proto.MethodPorts:     (*Server).ports,
		proto.MethodExec:      with((*Server).exec),
		proto.MethodPutTree:   with(putTree),
		proto.MethodGetTree:   with(getTree),
		proto.MethodManifest:  with(manifest),
		proto.MethodIdentity:  with(identity),
		proto.MethodFS:        with(fsOp),
		proto.MethodWatch:     with(watch),
		proto.MethodSignal:    with((*Server).signal),
		proto.MethodAttach:    with((*Server).attachKept),
	}
}

// with adapts a method that takes params P, decoded from the request.
func with[P, R any](fn func(*Server, *call, P) (R, error)) method {
	return func(s *Server, c *call) (any, error) {
		var p P
		if len(c.params) > 0 {
			if err := json.Unmarshal(c.params, &p); err != nil {
				return nil, fmt.Errorf("bad %s params: %v", c.method, err)
			}
		}
		return fn(s, c, p)
	}
}

// optional is what fn says, or R's zero value when the agent has none.
func optional[R any](fn func() R) R {
	var r R
	if fn != nil {
		r = fn()
	}
	return r
}

// served calls fn, a method the agent may not serve.
func served[R any](fn func() (R, error), what string) (any, error) {
	if fn == nil {
		return nil, fmt.Errorf("this agent serves no %s", what)
	}
	return fn()
}

func (s *Server) handle(table map[string]method, l *link.Link, f proto.Frame, ch <-chan proto.Frame) {
	var req proto.Request
	if err := json.Unmarshal(f.Payload, &req); err != nil {
		l.Respond(f.Stream, nil, fmt.Errorf("bad request: %v", err))
		return
	}
	m, ok := table[req.Method]
	if !ok {
		l.Respond(f.Stream, nil, fmt.Errorf("unknown method %q", req.Method))
		return
	}
	c := &call{l: l, stream: f.Stream, method: req.Method, params: req.Params, ch: ch}
	r, err := m(s, c)
	l.Respond(f.Stream, r, err)
	if c.after != nil {
		c.after()
	}
}

// shutdown answers, then powers the guest off.
func (s *Server) shutdown(c *call) (any, error) {
	c.after = s.Shutdown
	return struct{}{}, nil
}

// ssh makes the stream a byte pipe to the SSH server.
func (s *Server) ssh(c *call) (any, error) {
	if s.SSH == nil {
		return nil, errors.New("this agent serves no SSH")
	}
	ours, theirs := net.Pipe()
	go s.SSH(theirs)
	pipeStream(c, ours)
	return struct{}{}, nil
}

// dial makes the stream a byte pipe to a TCP address in the guest.
func dial(_ *Server, c *call, p proto.DialParams) (any, error) {
	conn, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	pipeStream(c, conn)
	return struct{}{}, nil
}

func identity(s *Server, _ *call, p proto.IdentityParams) (any, error) {
	if s.Identity == nil {
		return nil, errors.New("this agent takes no new identity")
	}
	return s.Identity(p)
}

func (s *Server) ports(*call) (any, error) {
	if s.Ports == nil {
		return nil, errors.New("this agent serves no ports")
	}
	socks, err := s.Ports()
	return proto.PortsResult{Sockets: socks}, err
}

func (s *Server) spawn() spawn.Func {
	if s.Spawn == nil {
		return spawn.OS
	}
	return s.Spawn
}

func (s *Server) exec(c *call, p proto.ExecParams) (proto.ExecResult, error) {
	if p.Keep {
		return s.execKept(c, p)
	}
	done := make(chan struct{})
	defer close(done) // ends the reads of the caller's frames
	in := c.in(done)
	stdout := c.out(proto.Stdout)
	// A caller that gives up (a timeout, a client gone) ends the command.
	run := s.named(spawn.Stoppable(s.spawn(), c.l.Abandoned(c.stream)), p.Handle)
	if p.Tty {
		resize := make(chan proto.Winsize, 1)
		in.Resize(resize)
		return spawn.RunTTY(run, p, in, stdout, resize)
	}
	var stdin io.Reader = in
	if !p.Stdin {
		stdin = nil                                    // the process gets /dev/null
		go func() { _, _ = io.Copy(io.Discard, in) }() // and the link never waits on this stream
	}
	return spawn.RunPipes(run, p, stdin, stdout, c.out(proto.Stderr))
}

// named is f whose process is known by handle (when not empty) while it
// runs; a handle in use is refused.
func (s *Server) named(f spawn.Func, handle string) spawn.Func {
	if handle == "" {
		return f
	}
	return func(p proto.ExecParams, stdin, stdout, stderr *os.File) (spawn.Process, error) {
		s.mu.Lock()
		_, taken := s.handles[handle]
		s.mu.Unlock()
		if taken || len(handle) > 128 {
			return spawn.Process{}, fmt.Errorf("exec handle %.128q is in use or too long", handle)
		}
		proc, err := f(p, stdin, stdout, stderr)
		if err != nil {
			return proc, err
		}
		s.mu.Lock()
		if s.handles == nil {
			s.handles = map[string]int{}
		}
		s.handles[handle] = proc.Pid
		s.mu.Unlock()
		wait := proc.Wait
		proc.Wait = func() proto.ExecResult {
			r := wait()
			s.mu.Lock()
			delete(s.handles, handle)
			s.mu.Unlock()
			return r
		}
		return proc, nil
	}
}

// signal sends a signal to the process group of the running exec named.
func (s *Server) signal(_ *call, p proto.SignalParams) (struct{}, error) {
	if p.Signal < 1 || p.Signal > 31 {
		return struct{}{}, fmt.Errorf("signal %d: 1 to 31", p.Signal)
	}
	s.mu.Lock()
	pid, ok := s.handles[p.Handle]
	s.mu.Unlock()
	if !ok {
		return struct{}{}, fmt.Errorf("no running exec %.128q", p.Handle)
	}
	// The exec leads its own session and process group (spawn.Prepare).
	return struct{}{}, unix.Kill(-pid, unix.Signal(p.Signal))
}

// pipeStream joins a stream to conn: the caller's stdin frames are
// written to it, what it yields goes back as stdout frames. It returns
// once conn closed, by either end.
func pipeStream(c *call, conn net.Conn) {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(conn, c.in(done))
		conn.Close()
	}()
	_, _ = io.Copy(c.out(proto.Stdout), conn)
	conn.Close()
	close(done)
	_ = c.l.CloseFD(context.Background(), c.stream, proto.Stdout)
}

func readFile(_ *Server, c *call, p proto.FileParams) (proto.FileResult, error) {
	f, err := os.Open(p.Path)
	if err != nil {
		return proto.FileResult{}, err
	}
	defer f.Close()
	r, total, err := readAt(f, p)
	if err != nil {
		return proto.FileResult{}, err
	}
	n, err := io.Copy(c.out(proto.Stdout), r)
	return proto.FileResult{Size: n, Total: total}, err
}

// writeFile writes the caller's bytes to a temporary file beside the
// target and renames it into place once the caller closed its stream, so
// a broken transfer never leaves half a file.
func writeFile(_ *Server, c *call, p proto.FileParams) (proto.FileResult, error) {
	mode := os.FileMode(p.Mode & 0o7777)
	if mode == 0 {
		mode = 0o644
	}
	own, err := ownerOf(p.Owner)
	if err != nil {
		return proto.FileResult{}, err
	}
	if p.Parents {
		if err := mkdirOwned(filepath.Dir(p.Path), own); err != nil {
			return proto.FileResult{}, err
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(p.Path), writeTempPrefix+"*")
	if err != nil {
		return proto.FileResult{}, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, c.in(nil))
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil && own != nil {
		err = tmp.Chown(int(own.UID), int(own.GID))
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
