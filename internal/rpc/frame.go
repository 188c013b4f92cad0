// Package rpc is banger's wire framing: newline-delimited JSON frames over a
// stream socket, one request at a time per connection, each answered by zero
// or more event frames and exactly one final result or error frame.
//
//	→ {"v":1,"id":7,"method":"operations.wait","params":{"id":"op-1"}}
//	← {"id":7,"event":{...}}            (streaming methods only, any number)
//	← {"id":7,"result":{...}}           (or {"id":7,"error":{"code":…,"message":…}})
//
// Newline framing keeps the socket debuggable with socat; frames are bounded
// (MaxFrameSize) and a malformed frame costs the sender one error frame, not
// the connection, because the next newline resynchronises the stream.
package rpc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/bangerdev/banger/api"
)

// MaxFrameSize bounds one frame, newline included. Larger payloads (logs,
// file transfers) travel as several event frames.
const MaxFrameSize = 8 << 20

// ErrFrameTooLarge means a peer sent more than MaxFrameSize bytes without a
// newline. The stream cannot be resynchronised cheaply, so the reader's owner
// closes the connection after answering.
var ErrFrameTooLarge = errors.New("frame too large")

// maxCaller bounds Request.Caller, which is logged.
const maxCaller = 128

// Request is one call.
type Request struct {
	// V is the protocol version the client speaks (api.ProtocolVersion).
	V int `json:"v"`
	// ID is chosen by the client and echoed on every frame of the answer.
	ID uint64 `json:"id"`
	// Method names the call (api.Method*).
	Method string `json:"method"`
	// Client is the client's build version, for error messages and logs.
	Client string `json:"client,omitempty"`
	// Caller names who the client acts for, when not its user alone (an
	// MCP server: "mcp:NAME"), for the daemon's log. Self-asserted: it
	// grants nothing.
	Caller string `json:"caller,omitempty"`
	// Params are decoded by the method's handler.
	Params json.RawMessage `json:"params,omitempty"`
}

// Response is one frame of an answer: exactly one of Event, Result or Error.
type Response struct {
	ID     uint64          `json:"id"`
	Event  json.RawMessage `json:"event,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *api.Error      `json:"error,omitempty"`
}

// Final reports whether r ends its call.
func (r Response) Final() bool { return r.Event == nil }

// Reader reads frames from a stream.
type Reader struct {
	br  *bufio.Reader
	max int
}

// NewReader returns a Reader bounded by MaxFrameSize.
func NewReader(r io.Reader) *Reader { return NewReaderSize(r, MaxFrameSize) }

// NewReaderSize returns a Reader bounded by max bytes per frame.
func NewReaderSize(r io.Reader, max int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// Buffered returns the bytes read from the stream but not yet framed, for a
// method that switches the connection to a raw byte stream.
func (r *Reader) Buffered() *bufio.Reader { return r.br }

// ReadFrame returns the next frame without its newline. Blank lines are
// skipped. A final frame without a newline before EOF is returned as is.
func (r *Reader) ReadFrame() ([]byte, error) {
	for {
		var frame []byte
		for {
			chunk, err := r.br.ReadSlice('\n')
			if len(frame)+len(chunk) > r.max {
				return nil, fmt.Errorf("reading frame: %w (more than %d bytes without a newline)", ErrFrameTooLarge, r.max)
			}
			frame = append(frame, chunk...)
			if err == nil {
				break
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if errors.Is(err, io.EOF) && len(bytes.TrimSpace(frame)) > 0 {
				return frame, nil
			}
			return nil, err
		}
		frame = bytes.TrimSpace(frame)
		if len(frame) > 0 {
			return frame, nil
		}
	}
}

// DecodeRequest parses one request frame. Every failure wraps
// api.ErrInvalidRequest; the returned Request carries whatever ID could be
// read so the error frame can echo it.
func DecodeRequest(frame []byte) (Request, error) {
	var raw struct {
		V      *int            `json:"v"`
		ID     *uint64         `json:"id"`
		Method *string         `json:"method"`
		Client string          `json:"client"`
		Caller string          `json:"caller"`
		Params json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(frame, &raw); err != nil {
		// A frame that is not a JSON object may still carry a usable id.
		var idOnly struct {
			ID uint64 `json:"id"`
		}
		_ = json.Unmarshal(frame, &idOnly)
		return Request{ID: idOnly.ID}, fmt.Errorf("%w: frame is not a JSON request object: %v", api.ErrInvalidRequest, err)
	}
	var req Request
	if raw.ID != nil {
		req.ID = *raw.ID
	}
	req.Client = raw.Client
	if len(raw.Caller) > maxCaller {
		return req, fmt.Errorf("%w: caller is longer than %d bytes", api.ErrInvalidRequest, maxCaller)
	}
	req.Caller = raw.Caller
	if raw.V == nil {
		return req, fmt.Errorf("%w: request has no protocol version (field \"v\"); this daemon speaks %d", api.ErrInvalidRequest, api.ProtocolVersion)
	}
	req.V = *raw.V
	if raw.Method == nil || *raw.Method == "" {
		return req, fmt.Errorf("%w: request has no method (field \"method\")", api.ErrInvalidRequest)
	}
	req.Method = *raw.Method
	if len(raw.Params) > 0 && !bytes.Equal(raw.Params, []byte("null")) {
		req.Params = raw.Params
	}
	return req, nil
}

// Writer writes frames. It is not safe for concurrent use.
type Writer struct {
	w   io.Writer
	buf bytes.Buffer
}

// NewWriter returns a Writer on w. Callers serialise writes themselves
// (a connection has one writer at a time).
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteFrame marshals v as one frame.
func (w *Writer) WriteFrame(v any) error {
	w.buf.Reset()
	enc := json.NewEncoder(&w.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode appends the newline
		return fmt.Errorf("encoding frame: %w", err)
	}
	if w.buf.Len() > MaxFrameSize {
		return fmt.Errorf("writing frame: %w (%d bytes)", ErrFrameTooLarge, w.buf.Len())
	}
	if _, err := w.w.Write(w.buf.Bytes()); err != nil {
		return fmt.Errorf("writing frame: %w", err)
	}
	return nil
}
