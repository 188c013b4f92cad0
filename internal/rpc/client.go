package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/bangerdev/banger/api"
)

// Conn is the client side of one connection. Calls on a Conn are serialised.
type Conn struct {
	mu      sync.Mutex
	conn    net.Conn
	r       *Reader
	w       *Writer
	nextID  uint64
	client  string
	caller  string
	version int
}

// Dial connects to a daemon's unix socket.
func Dial(ctx context.Context, socket, clientVersion string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	return NewConn(c, clientVersion), nil
}

// SetCaller names who the calls are made for (Request.Caller).
func (c *Conn) SetCaller(caller string) { c.caller = caller }

// NewConn wraps an established connection.
func NewConn(c net.Conn, clientVersion string) *Conn {
	return &Conn{conn: c, r: NewReader(c), w: NewWriter(c), client: clientVersion, version: api.ProtocolVersion}
}

// Close closes the connection.
func (c *Conn) Close() error { return c.conn.Close() }

// Call sends one request and waits for its final frame, decoding a result
// into result (when non-nil) and passing each event to onEvent (when
// non-nil). A canceled ctx closes the connection, which cancels the call on
// the daemon's side too. A daemon error comes back as *api.Error.
func (c *Conn) Call(ctx context.Context, method string, params any, onEvent func(json.RawMessage) error, result any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	req := Request{V: c.version, ID: c.nextID, Method: method, Client: c.client, Caller: c.caller}
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			return fmt.Errorf("encoding params: %w", err)
		}
		req.Params = b
	}
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Now()) })
	defer stop()
	if err := c.w.WriteFrame(req); err != nil {
		return ctxErr(ctx, err)
	}
	for {
		frame, err := c.r.ReadFrame()
		if err != nil {
			return ctxErr(ctx, fmt.Errorf("reading answer to %s: %w", method, err))
		}
		var resp Response
		if err := json.Unmarshal(frame, &resp); err != nil {
			return fmt.Errorf("decoding answer to %s: %w", method, err)
		}
		if resp.ID != req.ID {
			return fmt.Errorf("decoding answer to %s: frame for call %d, want %d", method, resp.ID, req.ID)
		}
		switch {
		case resp.Event != nil:
			if onEvent != nil {
				if err := onEvent(resp.Event); err != nil {
					return err
				}
			}
		case resp.Error != nil:
			return resp.Error
		default:
			if result != nil && resp.Result != nil {
				if err := json.Unmarshal(resp.Result, result); err != nil {
					return fmt.Errorf("decoding result of %s: %w", method, err)
				}
			}
			return nil
		}
	}
}

// SetProtocolVersion overrides the protocol version sent with requests. Only
// tests use it, to speak as an older or newer client would.
func (c *Conn) SetProtocolVersion(v int) { c.version = v }

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %v", ctx.Err(), err)
	}
	return err
}

// Upgrade calls a method that answers by turning the connection into a
// byte stream (see Call.Upgrade), and returns that stream; closing it
// closes the connection. A Conn is spent once upgraded.
func (c *Conn) Upgrade(ctx context.Context, method string, params, result any) (io.ReadWriteCloser, error) {
	if err := c.Call(ctx, method, params, nil, result); err != nil {
		return nil, err
	}
	return &stream{r: c.r.Buffered(), conn: c.conn}, nil
}

// stream is an upgraded connection: reads start with what the frame
// reader had buffered.
type stream struct {
	r    io.Reader
	conn net.Conn
}

func (s *stream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *stream) Write(p []byte) (int, error) { return s.conn.Write(p) }
func (s *stream) Close() error                { return s.conn.Close() }

// CloseWrite tells the daemon nothing more comes, where the connection
// can say so (a unix socket can).
func (s *stream) CloseWrite() error {
	if cw, ok := s.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
