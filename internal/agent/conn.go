// Package agent is both ends of banger's guest agent protocol
// (internal/agent/proto): Client, used by the daemon, and Server, run by
// the guest agent (cmd/banger-agent).
package agent

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// ErrClosed means the link to the agent went away.
var ErrClosed = errors.New("agent connection closed")

// link is the frame layer shared by both ends: serialized writes, and a
// reader that hands each frame to the stream it belongs to.
type link struct {
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

func newLink(rw io.ReadWriteCloser) *link {
	return &link{rw: rw, streams: map[uint32]chan proto.Frame{}, done: make(chan struct{}), hello: make(chan struct{})}
}

func (l *link) send(f proto.Frame) error {
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

// sendData splits p into Data frames.
func (l *link) sendData(stream uint32, fd byte, p []byte) error {
	const chunk = 256 << 10
	for len(p) > 0 {
		n := min(len(p), chunk)
		payload := make([]byte, 1+n)
		payload[0] = fd
		copy(payload[1:], p[:n])
		if err := l.send(proto.Frame{Kind: proto.KindData, Stream: stream, Payload: payload}); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// open registers a stream; frames for it arrive on the returned channel,
// which is closed when the link goes down.
func (l *link) open(id uint32) (chan proto.Frame, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	ch := make(chan proto.Frame, 64)
	l.streams[id] = ch
	return ch, nil
}

func (l *link) release(id uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.streams, id)
}

// readLoop routes frames until the link fails; unknown streams go to
// onNew (the server opens streams on requests), or are dropped.
func (l *link) readLoop(onNew func(proto.Frame)) {
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

// frameReader reads one stream's bytes for one fd: the payloads of its
// Data frames, to io.EOF at that fd's Close frame. Both ends read their
// peer's streams through it. A Response frame also ends the bytes (the
// call is over; it is kept in resp), Window frames go to resize when set
// and are dropped otherwise, and frames for other fds are skipped.
type frameReader struct {
	ch     <-chan proto.Frame
	fd     byte
	done   <-chan struct{} // closed: reads end with io.EOF (the call is over)
	resize chan<- Winsize  // nil: Window frames are dropped
	link   *link           // for the error of a link that went down

	buf  []byte
	err  error
	resp *proto.Frame
}

func (r *frameReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		select {
		case f, ok := <-r.ch:
			switch {
			case !ok:
				r.err = r.link.err
			case f.Kind == proto.KindData && f.Payload[0] == r.fd:
				r.buf = f.Payload[1:]
			case f.Kind == proto.KindClose && f.Payload[0] == r.fd:
				r.err = io.EOF
			case f.Kind == proto.KindResponse:
				r.resp, r.err = &f, io.EOF
			case f.Kind == proto.KindWindow && r.resize != nil:
				rows, cols := proto.WindowSize(f.Payload)
				select {
				case r.resize <- Winsize{rows, cols}:
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
