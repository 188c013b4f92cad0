// Package link is the frame layer both ends of the agent protocol share:
// one byte stream (internal/agent/proto frames) multiplexed into streams,
// with serialized writes and a reader that hands each frame to the stream
// it belongs to. The host's client (internal/agent/client) and the guest's
// server (internal/agent/server) are built on it; it knows neither side.
package link

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
)

// ErrClosed means the link went away.
var ErrClosed = errors.New("agent connection closed")

// ErrStalled means the peer stopped reading the link: a frame could not
// be written within the write timeout, so the link was closed.
// It is api.ErrUnresponsive to the daemon's callers.
var ErrStalled = fmt.Errorf("the peer stopped reading the link: %w", api.ErrUnresponsive)

// errGone: the stream was released while a send waited on it.
var errGone = errors.New("the stream was closed")

// Link is one connection between the host and a guest agent.
type Link struct {
	rw           io.ReadWriteCloser
	writeTimeout time.Duration

	wsem chan struct{} // the write lock, taken with a context
	buf  []byte

	mu      sync.Mutex
	streams map[uint32]*stream
	err     error // set once the reader stopped
	stalled bool
	done    chan struct{}
	hello   chan struct{} // closed at the peer's first hello
	helloed bool
	peer    uint16 // the protocol the hello said; set before hello closes
	once    sync.Once
	closed  atomic.Bool
}

// stream is one stream's state on this side. Frames the reader routes
// to it wait in q (bounded by the window the peer may fill) until pump
// hands them to ch: the reader itself never waits on a consumer.
type stream struct {
	ch   chan proto.Frame
	wake chan struct{} // cap 1: q grew, or the link ended
	more chan struct{} // cap 1: send credit came
	gone chan struct{} // closed by Release
	// abandoned is closed when the peer reset the stream before its
	// answer: the caller gave up, and what it asked for may stop.
	abandoned chan struct{}

	// Under Link.mu.
	q       []proto.Frame
	ended   bool  // the link is down: deliver q, then close ch
	window  int64 // receiving: units the peer may still send
	pending int64 // receiving: units consumed, not yet given back
	credit  int64 // sending: units we may still send
	control int   // uncharged frames received
	// answered: a Response went either way, so the call is over on both
	// sides and nothing waits on the stream's credit.
	answered bool
	reset    bool // the peer reset it: abandoned is closed
}

// maxControl bounds the uncharged frames (Request, Response, Close) a
// stream may receive: an honest peer sends at most five.
const maxControl = 16

// unlimited is the credit of a stream whose peer reset it.
const unlimited = 1 << 62

// New wraps rw; Run reads its frames.
func New(rw io.ReadWriteCloser) *Link {
	return &Link{rw: rw, streams: map[uint32]*stream{}, done: make(chan struct{}), hello: make(chan struct{}), wsem: make(chan struct{}, 1)}
}

// SetWriteTimeout bounds the write of one frame (0: none): a peer that
// does not take a frame in that time has the link closed under it
// (ErrStalled). Set it before the link is used.
func (l *Link) SetWriteTimeout(d time.Duration) { l.writeTimeout = d }

// Close closes the connection; Run then ends.
func (l *Link) Close() error {
	var err error
	l.once.Do(func() {
		l.closed.Store(true)
		err = l.rw.Close()
	})
	return err
}

// closedErr is why a write cannot start: the link was closed (by a
// stall, perhaps), though its reader may not have seen it yet.
func (l *Link) closedErr() error {
	if !l.closed.Load() {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stalled {
		return fmt.Errorf("%w: %w", ErrClosed, ErrStalled)
	}
	return cmp.Or(l.err, ErrClosed)
}

// Done is closed once the reader stopped: the link is down.
func (l *Link) Done() <-chan struct{} { return l.done }

// Hello is closed at the peer's first hello frame.
func (l *Link) Hello() <-chan struct{} { return l.hello }

// PeerProtocol is the protocol the peer's hello said, once Hello is
// closed (0 before).
func (l *Link) PeerProtocol() uint16 {
	select {
	case <-l.hello:
		return l.peer
	default:
		return 0
	}
}

// Err is why the link went down, once Done is closed.
func (l *Link) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Send writes one frame; a Data or Window frame first waits for the
// stream's credit. ctx bounds the waits, not a write under way.
func (l *Link) Send(ctx context.Context, f proto.Frame) error {
	if !proto.Charged(f.Kind) {
		return l.write(ctx, f)
	}
	cost := int64(len(f.Payload)) + proto.FrameCost
	if _, err := l.acquire(ctx, f.Stream, cost, cost); err != nil {
		return err
	}
	return l.spend(ctx, f, cost)
}

// spend writes a charged frame whose credit was taken; a write that
// never started (its context ended waiting for the lock) gives it back.
func (l *Link) spend(ctx context.Context, f proto.Frame, cost int64) error {
	err := l.write(ctx, f)
	if err != nil && ctx.Err() != nil {
		l.mu.Lock()
		if st := l.streams[f.Stream]; st != nil {
			st.credit += cost
			signal(st.more)
		}
		l.mu.Unlock()
	}
	return err
}

// write writes one frame under the write lock. A write that does not
// finish within the write timeout closes the link: half a frame is
// written, the stream of frames cannot go on.
func (l *Link) write(ctx context.Context, f proto.Frame) error {
	select {
	case l.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.done:
		return l.Err()
	}
	defer func() { <-l.wsem }()
	if err := l.closedErr(); err != nil {
		return err
	}
	b, err := proto.AppendFrame(l.buf[:0], f)
	if err != nil {
		return err
	}
	l.buf = b
	var t *time.Timer
	if l.writeTimeout > 0 {
		t = time.AfterFunc(l.writeTimeout, func() {
			l.mu.Lock()
			l.stalled = true
			l.mu.Unlock()
			_ = l.Close()
		})
	}
	_, err = l.rw.Write(b)
	if t != nil && !t.Stop() {
		return fmt.Errorf("%w: a frame waited over %s", ErrStalled, l.writeTimeout)
	}
	if err != nil {
		_ = l.Close()
		return fmt.Errorf("writing to the agent link: %w", err)
	}
	return nil
}

// acquire takes up to want units of stream's send credit, at least
// least (or want, when less is available only after waiting).
func (l *Link) acquire(ctx context.Context, id uint32, want, least int64) (int64, error) {
	for {
		l.mu.Lock()
		st := l.streams[id]
		if st == nil {
			err := l.err
			l.mu.Unlock()
			return 0, cmp.Or(err, errGone)
		}
		if st.credit >= least {
			got := min(want, st.credit)
			st.credit -= got
			if st.credit > 0 {
				signal(st.more) // another sender may be waiting on the same credit
			}
			l.mu.Unlock()
			return got, nil
		}
		l.mu.Unlock()
		select {
		case <-st.more:
		case <-st.gone:
			return 0, errGone
		case <-l.done:
			return 0, l.Err()
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// chunk is the most bytes one Data frame carries.
const chunk = 256 << 10

// SendData sends p on stream as fd's bytes, split into Data frames as
// the stream's credit allows.
func (l *Link) SendData(ctx context.Context, stream uint32, fd byte, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), chunk)
		const head = 1 + proto.FrameCost // the fd byte is payload too
		want := int64(n) + head
		got, err := l.acquire(ctx, stream, want, min(want, 16<<10+head))
		if err != nil {
			return err
		}
		n = int(got - head)
		payload := make([]byte, 1+n)
		payload[0] = fd
		copy(payload[1:], p[:n])
		if err := l.spend(ctx, proto.Frame{Kind: proto.KindData, Stream: stream, Payload: payload}, got); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// CloseFD ends fd's bytes on stream.
func (l *Link) CloseFD(ctx context.Context, stream uint32, fd byte) error {
	return l.write(ctx, proto.Frame{Kind: proto.KindClose, Stream: stream, Payload: []byte{fd}})
}

// Request opens a call on stream: a Request frame of method and params.
func (l *Link) Request(ctx context.Context, stream uint32, method string, params any) error {
	req := proto.Request{Method: method}
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			return err
		}
		req.Params = b
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return l.write(ctx, proto.Frame{Kind: proto.KindRequest, Stream: stream, Payload: b})
}

// Respond ends a call on stream with result, or err. An answer too big
// for a frame is reported as such rather than leaving the caller waiting.
func (l *Link) Respond(stream uint32, result any, err error) {
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
	l.mu.Lock()
	if st := l.streams[stream]; st != nil {
		st.answered = true
	}
	l.mu.Unlock()
	ctx := context.Background()
	if err := l.write(ctx, proto.Frame{Kind: proto.KindResponse, Stream: stream, Payload: b}); errors.Is(err, proto.ErrFrame) {
		b, _ = json.Marshal(proto.Response{Error: fmt.Sprintf("the answer (%d bytes) does not fit an agent frame", len(b))})
		_ = l.write(ctx, proto.Frame{Kind: proto.KindResponse, Stream: stream, Payload: b})
	}
}

// DecodeResponse decodes a Response frame into result; the agent's error
// comes back as an error.
func DecodeResponse(f proto.Frame, result any) error {
	var resp proto.Response
	if err := json.Unmarshal(f.Payload, &resp); err != nil {
		return fmt.Errorf("%w: response: %v", proto.ErrFrame, err)
	}
	if resp.Error != "" {
		return fmt.Errorf("agent: %s", resp.Error)
	}
	if result != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return fmt.Errorf("%w: result: %v", proto.ErrFrame, err)
		}
	}
	return nil
}

// Call performs a call without data streams on stream, which must be
// open: its Request, then its Response decoded into result.
func (l *Link) Call(ctx context.Context, stream uint32, ch <-chan proto.Frame, method string, params, result any) error {
	if err := l.Request(ctx, stream, method, params); err != nil {
		return err
	}
	for {
		select {
		case f, ok := <-ch:
			if !ok {
				return cmp.Or(l.Err(), ErrClosed)
			}
			if f.Kind == proto.KindResponse {
				return DecodeResponse(f, result)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Open registers a stream; frames for it arrive on the returned channel,
// which is closed when the link goes down (after the frames that came
// before) or the stream is released.
func (l *Link) Open(id uint32) (chan proto.Frame, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	if l.streams[id] != nil {
		return nil, fmt.Errorf("%w: stream %d is open already", proto.ErrFrame, id)
	}
	st := &stream{ch: make(chan proto.Frame), wake: make(chan struct{}, 1), more: make(chan struct{}, 1),
		gone: make(chan struct{}), abandoned: make(chan struct{}), window: proto.Window, credit: proto.Window}
	l.streams[id] = st
	go l.pump(id, st)
	return st.ch, nil
}

// Abandoned is closed once the peer gave the stream up before its
// answer (a caller whose context ended): a served call may stop its
// work. Nil for a stream not open.
func (l *Link) Abandoned(id uint32) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.streams[id]; st != nil {
		return st.abandoned
	}
	return nil
}

// Release forgets a stream. One released before its call was answered
// (a caller that gave up) tells the peer to stop counting credit on it:
// the peer may be waiting to send what nobody will read. An answered
// call costs no such frame.
func (l *Link) Release(id uint32) {
	l.mu.Lock()
	st := l.streams[id]
	delete(l.streams, id)
	reset := l.err == nil && st != nil && !st.answered
	l.mu.Unlock()
	if st == nil {
		return
	}
	close(st.gone)
	if reset {
		ctx, cancel := context.WithTimeout(context.Background(), max(l.writeTimeout, time.Second))
		defer cancel()
		_ = l.write(ctx, proto.Frame{Kind: proto.KindCredit, Stream: id, Payload: proto.CreditPayload(proto.CreditReset)})
	}
}

// pump hands a stream's queued frames to its consumer, and gives the
// peer its credit back as they go.
func (l *Link) pump(id uint32, st *stream) {
	defer close(st.ch)
	for {
		l.mu.Lock()
		for len(st.q) == 0 {
			if st.ended {
				l.mu.Unlock()
				return
			}
			l.mu.Unlock()
			select {
			case <-st.wake:
			case <-st.gone:
				return
			}
			l.mu.Lock()
		}
		f := st.q[0]
		st.q[0] = proto.Frame{}
		st.q = st.q[1:]
		l.mu.Unlock()
		select {
		case st.ch <- f:
		case <-st.gone:
			return
		}
		if !proto.Charged(f.Kind) {
			continue
		}
		l.mu.Lock()
		st.pending += int64(len(f.Payload)) + proto.FrameCost
		var grant int64
		if st.pending >= proto.Window/4 || len(st.q) == 0 && st.pending > 0 && st.window < proto.Window/2 {
			grant, st.pending = st.pending, 0
			st.window += grant
		}
		ended := st.ended
		l.mu.Unlock()
		if grant > 0 && !ended {
			_ = l.write(context.Background(), proto.Frame{Kind: proto.KindCredit, Stream: id, Payload: proto.CreditPayload(uint32(grant))})
		}
	}
}

// route queues a frame for its stream; a peer that overruns its credit
// or floods a stream with control frames breaks the protocol.
func (l *Link) route(st *stream, f proto.Frame) error {
	if proto.Charged(f.Kind) {
		st.window -= int64(len(f.Payload)) + proto.FrameCost
		if st.window < 0 {
			return fmt.Errorf("%w: stream %d sent past its credit", proto.ErrFrame, f.Stream)
		}
	} else if st.control++; st.control > maxControl {
		return fmt.Errorf("%w: stream %d sent %d control frames", proto.ErrFrame, f.Stream, st.control)
	}
	if f.Kind == proto.KindResponse {
		st.answered = true
	}
	st.q = append(st.q, f)
	signal(st.wake)
	return nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Run routes frames until the link fails; requests on unknown streams go
// to onNew (the server opens streams on requests), other frames of
// unknown streams are dropped. It never waits on a stream's consumer.
func (l *Link) Run(onNew func(proto.Frame)) {
	var err error
	for err == nil {
		var f proto.Frame
		if f, err = proto.ReadFrame(l.rw); err != nil {
			break
		}
		if f.Kind == proto.KindHello {
			if !l.helloed {
				l.helloed = true
				l.peer = proto.HelloProtocol(f)
				close(l.hello)
			}
			continue
		}
		l.mu.Lock()
		st := l.streams[f.Stream]
		switch {
		case st != nil && f.Kind == proto.KindCredit:
			if n := proto.CreditUnits(f.Payload); n == proto.CreditReset {
				if !st.reset {
					st.reset = true
					close(st.abandoned)
				}
				st.credit = unlimited
			} else {
				st.credit = min(st.credit+int64(n), unlimited)
			}
			signal(st.more)
		case st != nil:
			err = l.route(st, f)
		}
		l.mu.Unlock()
		if st == nil && f.Kind == proto.KindRequest && onNew != nil {
			onNew(f)
		}
	}
	if errors.Is(err, io.EOF) {
		err = ErrClosed
	} else {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	_ = l.Close() // a broken peer's link is done: writes fail at once
	l.mu.Lock()
	if l.stalled {
		err = fmt.Errorf("%w: %w", ErrClosed, ErrStalled)
	}
	l.err = err
	for id, st := range l.streams {
		st.ended = true
		signal(st.wake)
		delete(l.streams, id)
	}
	l.mu.Unlock()
	close(l.done)
}

// Reader reads one stream's bytes for one fd: the payloads of its Data
// frames, to io.EOF at that fd's Close frame. Both ends read their peer's
// streams through it. A Response frame also ends the bytes (the call is
// over; Response returns it), Window frames go to Resize when set and are
// dropped otherwise, and frames for other fds are skipped.
type Reader struct {
	ch     <-chan proto.Frame
	fd     byte
	done   <-chan struct{} // closed: reads end with io.EOF (the call is over)
	link   *Link           // for the error of a link that went down
	resize chan<- proto.Winsize

	buf    []byte
	err    error
	resp   *proto.Frame
	expiry func() <-chan struct{}
}

// Expiry makes reads end with os.ErrDeadlineExceeded when the channel
// expiry returns (asked anew at each wait) is closed.
func (r *Reader) Expiry(expiry func() <-chan struct{}) { r.expiry = expiry }

func (r *Reader) expired() <-chan struct{} {
	if r.expiry == nil {
		return nil
	}
	return r.expiry()
}

// NewReader reads fd's bytes from ch, a stream of l; done (nil: never)
// ends the reading early.
func (l *Link) NewReader(ch <-chan proto.Frame, fd byte, done <-chan struct{}) *Reader {
	return &Reader{ch: ch, fd: fd, done: done, link: l}
}

// Resize sends the stream's Window frames to c.
func (r *Reader) Resize(c chan<- proto.Winsize) { r.resize = c }

// Response is the Response frame that ended the bytes, if one did.
func (r *Reader) Response() *proto.Frame { return r.resp }

func (r *Reader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		select {
		case f, ok := <-r.ch:
			switch {
			case !ok:
				r.err = cmp.Or(r.link.Err(), ErrClosed)
			case f.Kind == proto.KindData && f.Payload[0] == r.fd:
				r.buf = f.Payload[1:]
			case f.Kind == proto.KindClose && f.Payload[0] == r.fd:
				r.err = io.EOF
			case f.Kind == proto.KindResponse:
				r.resp, r.err = &f, io.EOF
			case f.Kind == proto.KindWindow && r.resize != nil:
				rows, cols := proto.WindowSize(f.Payload)
				select {
				case r.resize <- proto.Winsize{Rows: rows, Cols: cols}:
				case <-r.done:
					r.err = io.EOF
				}
			}
		case <-r.done:
			r.err = io.EOF
		case <-r.expired():
			return 0, os.ErrDeadlineExceeded // not sticky: a later deadline reads on
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// Writer sends what is written as Data frames of one stream's fd.
type Writer struct {
	l      *Link
	stream uint32
	fd     byte
}

// NewWriter writes to fd of stream.
func (l *Link) NewWriter(stream uint32, fd byte) *Writer {
	return &Writer{l: l, stream: stream, fd: fd}
}

func (w *Writer) Write(p []byte) (int, error) {
	if err := w.l.SendData(context.Background(), w.stream, w.fd, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
