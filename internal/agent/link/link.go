// Package link is the frame layer both ends of the agent protocol share:
// one byte stream (internal/agent/proto frames) multiplexed into streams,
// with serialized writes and a reader that hands each frame to the stream
// it belongs to. The host's client (internal/agent/client) and the guest's
// server (internal/agent/server) are built on it; it knows neither side.
package link

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// ErrClosed means the link went away.
var ErrClosed = errors.New("agent connection closed")

// Link is one connection between the host and a guest agent.
type Link struct {
	rw io.ReadWriteCloser

	wmu sync.Mutex
	buf []byte

	mu      sync.Mutex
	streams map[uint32]chan proto.Frame
	err     error // set once the reader stops
	done    chan struct{}
	hello   chan struct{} // closed at the peer's first hello
	helloed bool
}

// New wraps rw; Run reads its frames.
func New(rw io.ReadWriteCloser) *Link {
	return &Link{rw: rw, streams: map[uint32]chan proto.Frame{}, done: make(chan struct{}), hello: make(chan struct{})}
}

// Close closes the connection; Run then ends.
func (l *Link) Close() error { return l.rw.Close() }

// Done is closed once the reader stopped: the link is down.
func (l *Link) Done() <-chan struct{} { return l.done }

// Hello is closed at the peer's first hello frame.
func (l *Link) Hello() <-chan struct{} { return l.hello }

// Err is why the link went down, once Done is closed.
func (l *Link) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Send writes one frame.
func (l *Link) Send(f proto.Frame) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	b, err := proto.AppendFrame(l.buf[:0], f)
	if err != nil {
		return err
	}
	l.buf = b
	if _, err := l.rw.Write(b); err != nil {
		return fmt.Errorf("writing to the agent link: %w", err)
	}
	return nil
}

// chunk is the most bytes one Data frame carries.
const chunk = 256 << 10

// SendData sends p on stream as fd's bytes, split into Data frames.
func (l *Link) SendData(stream uint32, fd byte, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), chunk)
		payload := make([]byte, 1+n)
		payload[0] = fd
		copy(payload[1:], p[:n])
		if err := l.Send(proto.Frame{Kind: proto.KindData, Stream: stream, Payload: payload}); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// CloseFD ends fd's bytes on stream.
func (l *Link) CloseFD(stream uint32, fd byte) error {
	return l.Send(proto.Frame{Kind: proto.KindClose, Stream: stream, Payload: []byte{fd}})
}

// Request opens a call on stream: a Request frame of method and params.
func (l *Link) Request(stream uint32, method string, params any) error {
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
	return l.Send(proto.Frame{Kind: proto.KindRequest, Stream: stream, Payload: b})
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
	if err := l.Send(proto.Frame{Kind: proto.KindResponse, Stream: stream, Payload: b}); errors.Is(err, proto.ErrFrame) {
		b, _ = json.Marshal(proto.Response{Error: fmt.Sprintf("the answer (%d bytes) does not fit an agent frame", len(b))})
		_ = l.Send(proto.Frame{Kind: proto.KindResponse, Stream: stream, Payload: b})
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
		return json.Unmarshal(resp.Result, result)
	}
	return nil
}

// Call performs a call without data streams on stream, which must be
// open: its Request, then its Response decoded into result.
func (l *Link) Call(ctx context.Context, stream uint32, ch <-chan proto.Frame, method string, params, result any) error {
	if err := l.Request(stream, method, params); err != nil {
		return err
	}
	for {
		select {
		case f, ok := <-ch:
			if !ok {
				return l.Err()
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
// which is closed when the link goes down.
func (l *Link) Open(id uint32) (chan proto.Frame, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	ch := make(chan proto.Frame, 64)
	l.streams[id] = ch
	return ch, nil
}

// Release forgets a stream.
func (l *Link) Release(id uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.streams, id)
}

// Run routes frames until the link fails; requests on unknown streams go
// to onNew (the server opens streams on requests), other frames of
// unknown streams are dropped.
func (l *Link) Run(onNew func(proto.Frame)) {
	var err error
	for {
		var f proto.Frame
		f, err = proto.ReadFrame(l.rw)
		if err != nil {
			break
		}
		if f.Kind == proto.KindHello {
			if !l.helloed {
				l.helloed = true
				close(l.hello)
			}
			continue
		}
		l.mu.Lock()
		ch, ok := l.streams[f.Stream]
		l.mu.Unlock()
		switch {
		case ok:
			ch <- f
		case f.Kind == proto.KindRequest && onNew != nil:
			onNew(f)
		}
	}
	if errors.Is(err, io.EOF) {
		err = ErrClosed
	} else {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	l.mu.Lock()
	l.err = err
	for id, ch := range l.streams {
		close(ch)
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

	buf  []byte
	err  error
	resp *proto.Frame
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
				r.err = r.link.Err()
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
	if err := w.l.SendData(w.stream, w.fd, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
