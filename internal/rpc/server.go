package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"github.com/bangerdev/banger/api"
)

// writeTimeout bounds one frame write so a client that stops reading cannot
// pin a handler forever.
const writeTimeout = 30 * time.Second

// Call is one request being served. Handlers of streaming methods send
// events with Emit before returning their final answer.
type Call struct {
	Request
	w    *Writer
	conn net.Conn
	// raw holds the bytes read past this call's frame, for Upgrade; set
	// only for methods the server was told may upgrade.
	raw      io.Reader
	upgraded bool
}

// Upgrade answers the call with result and turns the connection into a
// raw byte stream, which it returns: what the client sends next is no
// longer frames. Only calls of methods given to ServeConn as upgradable
// can do so; the connection closes when the handler returns.
func (c *Call) Upgrade(result any) (io.ReadWriter, error) {
	if c.raw == nil {
		return nil, fmt.Errorf("%w: %s cannot switch to a byte stream", api.ErrInvalidRequest, c.Method)
	}
	resp := Result(result)
	resp.ID = c.ID
	if err := c.write(resp); err != nil {
		return nil, err
	}
	_ = c.conn.SetWriteDeadline(time.Time{})
	c.upgraded = true
	return struct {
		io.Reader
		io.Writer
	}{c.raw, c.conn}, nil
}

// Emit sends one event frame for this call.
func (c *Call) Emit(event any) error {
	b, err := json.Marshal(event)
	if err != nil {
		return fmt.Errorf("encoding event: %w", err)
	}
	return c.write(Response{ID: c.ID, Event: b})
}

func (c *Call) write(r Response) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.w.WriteFrame(r)
}

// Result builds a final success frame.
func Result(v any) Response {
	b, err := json.Marshal(v)
	if err != nil {
		return Error(fmt.Errorf("encoding result: %w", err))
	}
	return Response{Result: b}
}

// Error builds a final error frame, mapping err to its wire code.
func Error(err error) Response {
	return Response{Error: api.ToWire(err)}
}

// HandlerFunc serves one call and returns its final frame.
type HandlerFunc func(ctx context.Context, call *Call) Response

// ServeConn serves requests on conn until the peer closes it, ctx ends or a
// frame cannot be read. The context passed to handle is canceled when the
// peer hangs up, so an abandoned call stops its work. A panicking handler
// costs its caller an operation_failed error, never the daemon.
//
// A request for a method that upgradable accepts (nil: none) is the last
// frame read from the connection: its handler may Upgrade it to a byte
// stream.
func ServeConn(ctx context.Context, conn net.Conn, handle HandlerFunc, log *slog.Logger, upgradable func(method string) bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()

	type frameOrErr struct {
		frame []byte
		err   error
		raw   io.Reader // the rest of the stream, after an upgradable request
	}
	frames := make(chan frameOrErr, 16)
	go func() {
		defer close(frames)
		r := NewReader(conn)
		for {
			frame, err := r.ReadFrame()
			if err != nil {
				// The peer is gone (or unreadable): abandon any call in flight.
				if !errors.Is(err, ErrFrameTooLarge) {
					cancel()
				}
				frames <- frameOrErr{err: err}
				return
			}
			f := frameOrErr{frame: frame}
			if upgradable != nil {
				if req, err := DecodeRequest(frame); err == nil && upgradable(req.Method) {
					// Read no further: what follows may be raw bytes.
					f.raw = r.Buffered()
				}
			}
			select {
			case frames <- f:
			case <-ctx.Done():
				return
			}
			if f.raw != nil {
				return
			}
		}
	}()

	w := NewWriter(conn)
	for f := range frames {
		if f.err != nil {
			if errors.Is(f.err, ErrFrameTooLarge) {
				log.Warn("closing connection", "reason", f.err)
				c := &Call{w: w, conn: conn}
				_ = c.write(Error(fmt.Errorf("%w: %v", api.ErrInvalidRequest, f.err)))
			} else if !errors.Is(f.err, io.EOF) && !errors.Is(f.err, net.ErrClosed) && !errors.Is(f.err, context.Canceled) && ctx.Err() == nil {
				log.Debug("reading request", "err", f.err)
			}
			return
		}
		req, err := DecodeRequest(f.frame)
		call := &Call{Request: req, w: w, conn: conn, raw: f.raw}
		var resp Response
		if err != nil {
			log.Debug("rejecting frame", "err", err)
			resp = Error(err)
		} else {
			resp = serveOne(ctx, call, handle, log)
		}
		if call.upgraded {
			return // the stream was the handler's; it is over
		}
		resp.ID = req.ID
		resp.Event = nil
		if resp.Error == nil && len(resp.Result) == 0 {
			// Every final frame says how the call ended, even when a
			// handler produced nothing to return.
			resp.Result = json.RawMessage("null")
		}
		if err := call.write(resp); err != nil {
			log.Debug("writing response", "method", req.Method, "err", err)
			return
		}
	}
}

func serveOne(ctx context.Context, call *Call, handle HandlerFunc, log *slog.Logger) (resp Response) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("handler panicked", "method", call.Method, "panic", p, "stack", string(debug.Stack()))
			resp = Error(fmt.Errorf("%w: internal error serving %s (see the daemon log)", api.ErrOperationFailed, call.Method))
		}
	}()
	return handle(ctx, call)
}
