package server

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/spawn"
)

// errDetached ends a call whose kept exec runs on without it.
var errDetached = errors.New("detached: the exec runs on; attach to it again by its handle")

// kept is an exec that outlives its call (ExecParams.Keep): a suspend
// breaks the host's link, and E2B's processes run on across a pause.
// What it writes while no caller listens is kept (the newest
// proto.KeptOutput bytes), and so is its end, until a caller attaches.
type kept struct {
	handle string
	seq    uint64 // order of making, for evicting the oldest ended

	// wmu orders output: a caller that attaches gets what was kept
	// before anything newer.
	wmu     sync.Mutex
	out     [3]io.Writer // by fd; nil: no one listens
	pending []keptChunk
	size    int
	owner   chan struct{} // closed when another caller takes over

	stdin  *io.PipeWriter     // nil without stdin
	resize chan proto.Winsize // nil without a terminal

	done chan struct{} // closed at its end, res and err set
	res  proto.ExecResult
	err  error
}

type keptChunk struct {
	fd byte
	b  []byte
}

// keptOut writes one fd of a kept exec.
type keptOut struct {
	k  *kept
	fd byte
}

func (o keptOut) Write(p []byte) (int, error) {
	k := o.k
	k.wmu.Lock()
	defer k.wmu.Unlock()
	if w := k.out[o.fd]; w != nil {
		if _, err := w.Write(p); err == nil {
			return len(p), nil
		}
		k.out = [3]io.Writer{} // the caller is gone: keep what follows
	}
	k.keepLocked(o.fd, p)
	return len(p), nil
}

// keepLocked holds p for the next caller, dropping the oldest bytes
// past proto.KeptOutput.
func (k *kept) keepLocked(fd byte, p []byte) {
	if len(p) > proto.KeptOutput {
		p = p[len(p)-proto.KeptOutput:]
	}
	k.pending = append(k.pending, keptChunk{fd, append([]byte(nil), p...)})
	k.size += len(p)
	for k.size > proto.KeptOutput {
		c := &k.pending[0]
		drop := min(len(c.b), k.size-proto.KeptOutput)
		c.b = c.b[drop:]
		k.size -= drop
		if len(c.b) == 0 {
			k.pending = k.pending[1:]
		}
	}
}

// attach makes out the exec's listener: what was kept first. The
// channel returned closes when a later caller takes over.
func (k *kept) attach(out [3]io.Writer) (<-chan struct{}, error) {
	k.wmu.Lock()
	defer k.wmu.Unlock()
	for i, c := range k.pending {
		if _, err := out[c.fd].Write(c.b); err != nil {
			k.pending = k.pending[i:]
			k.size = 0
			for _, c := range k.pending {
				k.size += len(c.b)
			}
			return nil, fmt.Errorf("sending what exec %.128q wrote: %w", k.handle, err)
		}
	}
	k.pending, k.size = nil, 0
	if k.owner != nil {
		close(k.owner)
	}
	k.out = out
	k.owner = make(chan struct{})
	return k.owner, nil
}

// detach stops sending to the caller that owns mine, unless another
// took over.
func (k *kept) detach(mine <-chan struct{}) {
	k.wmu.Lock()
	defer k.wmu.Unlock()
	if k.owner == mine {
		k.out = [3]io.Writer{}
	}
}

// keep registers an exec to keep under handle, evicting the oldest
// ended one that no caller collected when the agent holds
// proto.MaxKept.
func (s *Server) keep(handle string) (*kept, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kept == nil {
		s.kept = map[string]*kept{}
	}
	if _, taken := s.kept[handle]; taken || len(handle) > 128 {
		return nil, fmt.Errorf("exec handle %.128q is in use or too long", handle)
	}
	if len(s.kept) >= proto.MaxKept {
		var oldest *kept
		for _, k := range s.kept {
			select {
			case <-k.done:
				if oldest == nil || k.seq < oldest.seq {
					oldest = k
				}
			default:
			}
		}
		if oldest == nil {
			return nil, fmt.Errorf("%d kept execs run already", proto.MaxKept)
		}
		delete(s.kept, oldest.handle)
	}
	s.keptSeq++
	k := &kept{handle: handle, seq: s.keptSeq, done: make(chan struct{})}
	s.kept[handle] = k
	return k, nil
}

// execKept starts p as a kept exec and follows it.
func (s *Server) execKept(c *call, p proto.ExecParams) (proto.ExecResult, error) {
	if p.Handle == "" {
		return proto.ExecResult{}, errors.New("a kept exec needs a handle")
	}
	k, err := s.keep(p.Handle)
	if err != nil {
		return proto.ExecResult{}, err
	}
	var stdin io.Reader
	if p.Stdin || p.Tty {
		r, w := io.Pipe()
		stdin, k.stdin = r, w
	}
	if p.Tty {
		k.resize = make(chan proto.Winsize, 4)
	}
	// Its callers come and go: nothing ends it but its own end, or a
	// signal by its handle.
	run := s.named(s.spawn(), p.Handle)
	go func() {
		if p.Tty {
			k.res, k.err = spawn.RunTTY(run, p, stdin, keptOut{k, proto.Stdout}, k.resize)
		} else {
			k.res, k.err = spawn.RunPipes(run, p, stdin, keptOut{k, proto.Stdout}, keptOut{k, proto.Stderr})
		}
		if k.stdin != nil {
			_ = k.stdin.CloseWithError(io.ErrClosedPipe)
		}
		close(k.done)
	}()
	return s.follow(c, k)
}

// attachKept joins the kept exec named.
func (s *Server) attachKept(c *call, p proto.AttachParams) (proto.ExecResult, error) {
	s.mu.Lock()
	k := s.kept[p.Handle]
	s.mu.Unlock()
	if k == nil {
		return proto.ExecResult{}, fmt.Errorf("no kept exec %.128q (its end was collected, or the guest restarted)", p.Handle)
	}
	return s.follow(c, k)
}

// follow sends k's output to the caller, and its stdin and sizes to k,
// until it ends (its result, collected), the caller goes or the link
// breaks (it runs on), or another caller takes it over.
func (s *Server) follow(c *call, k *kept) (proto.ExecResult, error) {
	done := make(chan struct{})
	var left atomic.Bool
	defer func() { left.Store(true); close(done) }()
	in := c.in(done)
	if k.resize != nil {
		in.Resize(k.resize)
	}
	mine, err := k.attach([3]io.Writer{nil, c.out(proto.Stdout), c.out(proto.Stderr)})
	if err != nil {
		return proto.ExecResult{}, err
	}
	go func() {
		if k.stdin == nil {
			_, _ = io.Copy(io.Discard, in) // the link never waits on this stream
			return
		}
		// The caller's end of its stdin ends the exec's; a caller that
		// goes leaves it open for the next.
		if _, err := io.Copy(k.stdin, in); err == nil && !left.Load() {
			_ = k.stdin.Close()
		}
	}()
	select {
	case <-k.done:
		if c.l.Err() == nil { // a broken link would lose the end: keep it
			s.mu.Lock()
			if s.kept[k.handle] == k {
				delete(s.kept, k.handle)
			}
			s.mu.Unlock()
		}
		return k.res, k.err
	case <-mine:
		return proto.ExecResult{}, errors.New("another caller attached to the exec")
	case <-c.l.Abandoned(c.stream):
	case <-c.l.Done():
	}
	k.detach(mine)
	return proto.ExecResult{}, errDetached
}
