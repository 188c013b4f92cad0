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
