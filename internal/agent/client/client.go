// Package client is the host's end of the guest agent protocol: the
// daemon's calls to an agent (ping, info, exec with pipes or a terminal,
// files, trees, stats, ports, power-off) and byte streams to the guest's
// SSH server and TCP ports, all over one link. It links no guest code.
package client

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bangerdev/banger/internal/agent/link"
	"github.com/bangerdev/banger/internal/agent/proto"
)

// ErrClosed means the link to the agent went away.
var ErrClosed = link.ErrClosed

// Client talks to one guest agent over one link.
type Client struct {
	l      *link.Link
	mu     sync.Mutex
	next   uint32
	pinged atomic.Uint32 // the protocol the last ping answer said
}

// WriteTimeout bounds the write of one frame to an agent: a guest that
// stops reading its link for that long has it closed (link.ErrStalled),
// and no caller waits on it longer.
const WriteTimeout = 10 * time.Second

// New starts reading frames from rw; Close stops it.
func New(rw io.ReadWriteCloser) *Client {
	l := link.New(rw)
	l.SetWriteTimeout(WriteTimeout)
	c := &Client{l: l}
	go c.l.Run(nil)
	return c
}

// Close closes the link.
func (c *Client) Close() error { return c.l.Close() }

// Hello is closed once the agent said hello on this link: it is up.
func (c *Client) Hello() <-chan struct{} { return c.l.Hello() }

// Protocol is the protocol the agent's hello said, or its last ping
// (a restored guest says no hello to a new link); 0 before either.
func (c *Client) Protocol() uint16 {
	if v := c.l.PeerProtocol(); v != 0 {
		return v
	}
	return uint16(c.pinged.Load())
}

// Done is closed when the link goes down.
func (c *Client) Done() <-chan struct{} { return c.l.Done() }

func (c *Client) stream() (uint32, chan proto.Frame, error) {
	c.mu.Lock()
	c.next++
	id := c.next
	c.mu.Unlock()
	ch, err := c.l.Open(id)
	return id, ch, err
}

// open starts a call of method on a new stream; the caller releases it.
func (c *Client) open(ctx context.Context, method string, params any) (uint32, chan proto.Frame, error) {
	id, ch, err := c.stream()
	if err != nil {
		return 0, nil, err
	}
	if err := c.l.Request(ctx, id, method, params); err != nil {
		c.l.Release(id)
		return 0, nil, err
	}
	return id, ch, nil
}

// Call performs a call without data streams.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	id, ch, err := c.stream()
	if err != nil {
		return err
	}
	defer c.l.Release(id)
	return c.l.Call(ctx, id, ch, method, params, result)
}

// Ping checks that the agent answers.
func (c *Client) Ping(ctx context.Context) (proto.PingResult, error) {
	var r proto.PingResult
	err := c.Call(ctx, proto.MethodPing, nil, &r)
	if err == nil {
		c.pinged.Store(uint32(proto.PingProtocol(r)))
	}
	return r, err
}

// Exec runs a process in the guest, streaming its stdin (when non-nil),
// stdout and stderr, and returns its exit status.
func (c *Client) Exec(ctx context.Context, p proto.ExecParams, stdin io.Reader, stdout, stderr io.Writer) (proto.ExecResult, error) {
	p.Tty = false
	return c.exec(ctx, p, stdin, stdout, stderr, nil)
}

// ExecTTY runs a process on a guest terminal of p.Rows x p.Cols: stdin is
// typed into it, what it writes comes to stdout, and each size received
// on resize resizes it.
func (c *Client) ExecTTY(ctx context.Context, p proto.ExecParams, stdin io.Reader, stdout io.Writer, resize <-chan proto.Winsize) (proto.ExecResult, error) {
	p.Tty = true
	return c.exec(ctx, p, stdin, stdout, nil, resize)
}

// Signal sends sig to the process group of the running exec started with
// handle (ExecParams.Handle). An agent before the method answers with
// an error naming it unknown.
func (c *Client) Signal(ctx context.Context, handle string, sig int) error {
	return c.Call(ctx, proto.MethodSignal, proto.SignalParams{Handle: handle, Signal: sig}, nil)
}

// Attach joins the kept exec started with handle (ExecParams.Keep)
// again: what it wrote while no one listened comes first; stdin, stdout,
// stderr and resize are as Exec's and ExecTTY's (a terminal's output is
// stdout's). An agent before the method answers naming it unknown.
func (c *Client) Attach(ctx context.Context, handle string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan proto.Winsize) (proto.ExecResult, error) {
	return c.follow(ctx, proto.MethodAttach, proto.AttachParams{Handle: handle}, stdin, stdout, stderr, resize)
}

func (c *Client) exec(ctx context.Context, p proto.ExecParams, stdin io.Reader, stdout, stderr io.Writer, resize <-chan proto.Winsize) (proto.ExecResult, error) {
	p.Stdin = stdin != nil
	return c.follow(ctx, proto.MethodExec, p, stdin, stdout, stderr, resize)
}

// follow calls an exec-like method: stdin and resize go to it, its
// output to stdout and stderr, until its ExecResult.
func (c *Client) follow(ctx context.Context, method string, params any, stdin io.Reader, stdout, stderr io.Writer, resize <-chan proto.Winsize) (proto.ExecResult, error) {
	id, ch, err := c.open(ctx, method, params)
	if err != nil {
		return proto.ExecResult{}, err
	}
	defer c.l.Release(id)
	if stdin != nil {
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := stdin.Read(buf)
				if n > 0 {
					if c.l.SendData(ctx, id, proto.Stdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					_ = c.l.CloseFD(ctx, id, proto.Stdin)
					return
				}
			}
		}()
	}
	if resize != nil {
		done := make(chan struct{})
		defer close(done)
		go func() {
			for {
				select {
				case ws := <-resize:
					if c.l.Send(ctx, proto.Frame{Kind: proto.KindWindow, Stream: id, Payload: proto.WindowPayload(ws.Rows, ws.Cols)}) != nil {
						return
					}
				case <-done:
					return
				}
			}
		}()
	}
	for {
		select {
		case f, ok := <-ch:
			if !ok {
				return proto.ExecResult{}, cmp.Or(c.l.Err(), ErrClosed)
			}
			switch f.Kind {
			case proto.KindData:
				w := stdout
				if f.Payload[0] == proto.Stderr {
					w = stderr
				}
				if w != nil {
					if _, err := w.Write(f.Payload[1:]); err != nil {
						return proto.ExecResult{}, fmt.Errorf("writing exec output: %w", err)
					}
				}
			case proto.KindResponse:
				var r proto.ExecResult
				err := link.DecodeResponse(f, &r)
				return r, err
			}
		case <-ctx.Done():
			return proto.ExecResult{}, ctx.Err()
		}
	}
}

// Shutdown asks the guest to power off; the link closes as it does.
func (c *Client) Shutdown(ctx context.Context) error {
	err := c.Call(ctx, proto.MethodShutdown, nil, nil)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// ReadFile copies a guest file to w.
func (c *Client) ReadFile(ctx context.Context, path string, w io.Writer) (int64, error) {
	var res proto.FileResult
	err := c.download(ctx, proto.MethodReadFile, proto.FileParams{Path: path}, nil, w, &res)
	return res.Size, err
}

// GetTree writes a tar of paths under the guest's dir to w.
func (c *Client) GetTree(ctx context.Context, dir string, paths []string, w io.Writer) (proto.TreeResult, error) {
	var res proto.TreeResult
	list := []byte(strings.Join(paths, "\x00"))
	err := c.download(ctx, proto.MethodGetTree, proto.GetTreeParams{Dir: dir}, list, w, &res)
	return res, err
}

// Manifest lists a guest directory tree with content hashes, decoded as
// it arrives: at most max entries in at most maxBytes of listing (see
// ParseManifest). More is the guest's fault, never the host's memory.
func (c *Client) Manifest(ctx context.Context, p proto.ManifestParams, max int, maxBytes int64) ([]proto.TreeEntry, error) {
	pr, pw := io.Pipe()
	type parsed struct {
		entries []proto.TreeEntry
		err     error
	}
	done := make(chan parsed, 1)
	go func() {
		entries, err := ParseManifest(pr, max, maxBytes)
		// Stops the download too when the listing broke a limit.
		pr.CloseWithError(cmp.Or(err, io.ErrClosedPipe))
		done <- parsed{entries, err}
	}()
	var r proto.ManifestResult
	err := c.download(ctx, proto.MethodManifest, p, nil, pw, &r)
	pw.CloseWithError(err)
	got := <-done
	if got.err != nil {
		return nil, got.err
	}
	if err != nil {
		return nil, err
	}
	if len(got.entries) != r.Count {
		return nil, fmt.Errorf("%w: manifest of %d entries, %d came", proto.ErrFrame, r.Count, len(got.entries))
	}
	return got.entries, nil
}

// maxManifestLine bounds one manifest entry's JSON: a path and a link
// of PATH_MAX, every byte escaped.
const maxManifestLine = 64 << 10

// ParseManifest reads a manifest listing, one JSON entry per line, of at
// most max entries and maxBytes; a longer listing, a longer line or one
// that is not an entry is a bad frame. Entries are not checked further:
// what a path may be is the caller's business.
func ParseManifest(r io.Reader, max int, maxBytes int64) ([]proto.TreeEntry, error) {
	lr := &io.LimitedReader{R: r, N: maxBytes + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, 64<<10), maxManifestLine)
	out := []proto.TreeEntry{}
	for sc.Scan() {
		if lr.N <= 0 {
			return nil, fmt.Errorf("%w: manifest over %d bytes", proto.ErrFrame, maxBytes)
		}
		if len(out) == max {
			return nil, fmt.Errorf("%w: manifest of more than %d entries", proto.ErrFrame, max)
		}
		var e proto.TreeEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("%w: manifest entry %d: %v", proto.ErrFrame, len(out)+1, err)
		}
		out = append(out, e)
	}
	if lr.N <= 0 {
		return nil, fmt.Errorf("%w: manifest over %d bytes", proto.ErrFrame, maxBytes)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: a manifest entry over %d bytes", proto.ErrFrame, maxManifestLine)
		}
		return nil, err
	}
	return out, nil
}

// download runs method, first sending stdin (when not nil) and closing
// it, then copying its stdout to w; it decodes the answer into result.
func (c *Client) download(ctx context.Context, method string, params any, stdin []byte, w io.Writer, result any) error {
	id, ch, err := c.open(ctx, method, params)
	if err != nil {
		return err
	}
	defer c.l.Release(id)
	if stdin != nil {
		if err := c.l.SendData(ctx, id, proto.Stdin, stdin); err != nil {
			return err
		}
		if err := c.l.CloseFD(ctx, id, proto.Stdin); err != nil {
			return err
		}
	}
	r := c.l.NewReader(ch, proto.Stdout, ctx.Done())
	if _, err := io.Copy(w, r); err != nil {
		return err
	}
	if r.Response() == nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: the agent ended %s without an answer", proto.ErrFrame, method)
	}
	return link.DecodeResponse(*r.Response(), result)
}

// WriteFile replaces a guest file with what r yields.
func (c *Client) WriteFile(ctx context.Context, path string, mode uint32, r io.Reader) (int64, error) {
	var res proto.FileResult
	if err := c.upload(ctx, proto.MethodWriteFile, proto.FileParams{Path: path, Mode: mode}, r, &res); err != nil {
		return 0, fmt.Errorf("sending %s: %w", path, err)
	}
	return res.Size, nil
}

// PutTree sends a tar stream of files to a guest directory, which takes
// all of it or nothing.
func (c *Client) PutTree(ctx context.Context, p proto.PutTreeParams, r io.Reader) (proto.TreeResult, error) {
	var res proto.TreeResult
	err := c.upload(ctx, proto.MethodPutTree, p, r, &res)
	return res, err
}

// upload runs method with r as its stdin, and decodes its answer into
// result. Canceled, it closes the stdin so the agent stops waiting (a
// put then fails as cut off).
func (c *Client) upload(ctx context.Context, method string, params any, r io.Reader, result any) error {
	id, ch, err := c.open(ctx, method, params)
	if err != nil {
		return err
	}
	defer c.l.Release(id)
	closeStdin := func() error {
		return c.l.CloseFD(context.WithoutCancel(ctx), id, proto.Stdin)
	}
	sent := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := r.Read(buf)
			if n > 0 {
				if serr := c.l.SendData(ctx, id, proto.Stdin, buf[:n]); serr != nil {
					sent <- serr
					return
				}
			}
			if errors.Is(err, io.EOF) {
				sent <- closeStdin()
				return
			}
			if err != nil {
				_ = closeStdin()
				sent <- err
				return
			}
		}
	}()
	for {
		select {
		case err := <-sent:
			if err != nil {
				return err
			}
		case f, ok := <-ch:
			if !ok {
				return cmp.Or(c.l.Err(), ErrClosed)
			}
			if f.Kind == proto.KindResponse {
				return link.DecodeResponse(f, result)
			}
		case <-ctx.Done():
			_ = closeStdin()
			return ctx.Err()
		}
	}
}

// DialSSH opens a byte stream to the agent's SSH server, for an SSH
// client to run its protocol over: ssh reaches the guest through the
// agent's channel, with no network.
func (c *Client) DialSSH(ctx context.Context) (net.Conn, error) {
	return c.pipe(ctx, proto.MethodSSH, nil)
}

// Dial connects to addr, a TCP address in the guest, through the agent:
// no network between host and guest is needed. A refused connection
// shows as the first Read's error.
func (c *Client) Dial(ctx context.Context, addr string) (net.Conn, error) {
	return c.pipe(ctx, proto.MethodDial, proto.DialParams{Addr: addr})
}

// Stats samples the guest's counters.
func (c *Client) Stats(ctx context.Context) (proto.StatsResult, error) {
	var r proto.StatsResult
	err := c.Call(ctx, proto.MethodStats, nil, &r)
	return r, err
}

// Ports lists the guest's listening sockets.
func (c *Client) Ports(ctx context.Context) ([]proto.Socket, error) {
	var r proto.PortsResult
	err := c.Call(ctx, proto.MethodPorts, nil, &r)
	return r.Sockets, err
}

// pipe opens a stream that method turns into a byte pipe.
func (c *Client) pipe(ctx context.Context, method string, params any) (net.Conn, error) {
	id, ch, err := c.open(ctx, method, params)
	if err != nil {
		return nil, err
	}
	closed := make(chan struct{})
	s := &streamConn{c: c, id: id, closed: closed, r: c.l.NewReader(ch, proto.Stdout, closed)}
	s.rd.init()
	s.wd.init()
	s.r.Expiry(s.rd.expired)
	return s, nil
}

// streamConn is one stream used as a connection, with deadlines: a TLS
// handshake or a read from a guest port ends when its caller says.
type streamConn struct {
	c  *Client
	id uint32
	r  *link.Reader

	rd, wd deadline
	once   sync.Once
	closed chan struct{}
}

func (s *streamConn) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF && s.r.Response() != nil {
		if rerr := link.DecodeResponse(*s.r.Response(), nil); rerr != nil {
			return n, rerr
		}
	}
	return n, err
}

func (s *streamConn) Write(p []byte) (int, error) {
	select {
	case <-s.closed:
		return 0, net.ErrClosed
	default:
	}
	// The write deadline as the send's context: no goroutine a write.
	if err := s.c.l.SendData(expiry{s.wd.expired()}, s.id, proto.Stdin, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// expiry is a context done when a deadline's channel closes.
type expiry struct{ done <-chan struct{} }

func (expiry) Deadline() (time.Time, bool) { return time.Time{}, false }
func (e expiry) Done() <-chan struct{}     { return e.done }
func (expiry) Value(any) any               { return nil }
func (e expiry) Err() error {
	select {
	case <-e.done:
		return os.ErrDeadlineExceeded
	default:
		return nil
	}
}

// Close hangs up: the agent closes its end of the connection.
func (s *streamConn) Close() error {
	s.once.Do(func() {
		close(s.closed)
		ctx, cancel := context.WithTimeout(context.Background(), WriteTimeout)
		defer cancel()
		_ = s.c.l.CloseFD(ctx, s.id, proto.Stdin)
		s.c.l.Release(s.id)
	})
	return nil
}

type agentAddr struct{}

func (agentAddr) Network() string { return "banger-agent" }
func (agentAddr) String() string  { return "agent" }

func (s *streamConn) LocalAddr() net.Addr  { return agentAddr{} }
func (s *streamConn) RemoteAddr() net.Addr { return agentAddr{} }

func (s *streamConn) SetDeadline(t time.Time) error {
	s.rd.set(t)
	s.wd.set(t)
	return nil
}
func (s *streamConn) SetReadDeadline(t time.Time) error  { s.rd.set(t); return nil }
func (s *streamConn) SetWriteDeadline(t time.Time) error { s.wd.set(t); return nil }

// deadline is one direction's deadline as a channel closed when it
// passes. A waiter holds the channel it was given: a deadline moved
// later keeps the channel (its timer moves), one set in the past closes
// it at once, so a blocked Read or Write ends as net.Conn promises.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	c      chan struct{}
	closed bool
}

func (d *deadline) init() { d.c = make(chan struct{}) }

// expired is the channel of the current deadline.
func (d *deadline) expired() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

// set replaces the deadline.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.closed { // passed: a new deadline needs a new channel
		d.c, d.closed = make(chan struct{}), false
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.c)
		d.closed = true
		return
	}
	c := d.c
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.c == c && !d.closed {
			close(c)
			d.closed = true
		}
	})
}
