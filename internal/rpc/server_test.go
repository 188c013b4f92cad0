package rpc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// echo serves "echo" (result = params), "stream" (three events, then a
// result), "fail" (not_found), "panic" and "block" (waits for cancellation).
func echo(canceled chan<- struct{}) HandlerFunc {
	return func(ctx context.Context, call *Call) Response {
		switch call.Method {
		case "echo":
			return Response{Result: call.Params}
		case "stream":
			for i := range 3 {
				if err := call.Emit(map[string]int{"n": i}); err != nil {
					return Error(err)
				}
			}
			return Result("done")
		case "fail":
			return Error(api.ErrNotFound)
		case "panic":
			panic("boom")
		case "block":
			<-ctx.Done()
			if canceled != nil {
				close(canceled)
			}
			return Error(ctx.Err())
		}
		return Error(api.ErrUnknownMethod)
	}
}

func serve(t *testing.T, h HandlerFunc) net.Conn {
	t.Helper()
	server, client := net.Pipe()
	go ServeConn(context.Background(), server, h, discard(), nil)
	t.Cleanup(func() { client.Close() })
	return client
}

func TestRoundTrip(t *testing.T) {
	c := NewConn(serve(t, echo(nil)), "test")
	ctx := context.Background()

	var got map[string]int
	if err := c.Call(ctx, "echo", map[string]int{"x": 1}, nil, &got); err != nil || got["x"] != 1 {
		t.Fatalf("echo = %v, %v", got, err)
	}

	var events []int
	var res string
	err := c.Call(ctx, "stream", nil, func(ev json.RawMessage) error {
		var e map[string]int
		if err := json.Unmarshal(ev, &e); err != nil {
			return err
		}
		events = append(events, e["n"])
		return nil
	}, &res)
	if err != nil || res != "done" || len(events) != 3 || events[2] != 2 {
		t.Fatalf("stream = %q %v, %v", res, events, err)
	}

	err = c.Call(ctx, "fail", nil, nil, nil)
	var wire *api.Error
	if !errors.As(err, &wire) || wire.Code != api.CodeNotFound || !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("fail = %#v", err)
	}

	err = c.Call(ctx, "panic", nil, nil, nil)
	if !errors.Is(err, api.ErrOperationFailed) {
		t.Fatalf("panic = %v, want operation_failed", err)
	}
	// The connection survives a panicking handler.
	if err := c.Call(ctx, "echo", 1, nil, nil); err != nil {
		t.Fatalf("echo after panic: %v", err)
	}
}

func TestGarbageGetsAnErrorAndTheConnectionLives(t *testing.T) {
	conn := serve(t, echo(nil))
	br := bufio.NewReader(conn)
	for _, garbage := range []string{"hello", "\x00\x01\x02", `{"id":5}`, `{"v":1,"id":6}`, "[]"} {
		if _, err := io.WriteString(conn, garbage+"\n"); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		var resp Response
		if err := json.Unmarshal([]byte(line), &resp); err != nil {
			t.Fatalf("answer to %q is not JSON: %q", garbage, line)
		}
		if resp.Error == nil || resp.Error.Code != api.CodeInvalidRequest {
			t.Fatalf("answer to %q = %s, want invalid_request", garbage, line)
		}
	}
	io.WriteString(conn, `{"v":1,"id":9,"method":"echo","params":7}`+"\n")
	line, _ := br.ReadString('\n')
	if strings.TrimSpace(line) != `{"id":9,"result":7}` {
		t.Fatalf("echo after garbage = %q", line)
	}
}

func TestOversizedFrameClosesTheConnection(t *testing.T) {
	conn := serve(t, echo(nil))
	go func() {
		// net.Pipe is synchronous: write from a goroutine. The reader only
		// sees the overflow once a whole buffer's worth lands past the
		// limit, so overshoot by more than one buffer.
		_, _ = conn.Write([]byte(strings.Repeat("x", MaxFrameSize+128<<10)))
	}()
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, string(api.CodeInvalidRequest)) || !strings.Contains(line, "too large") {
		t.Fatalf("answer = %q", line)
	}
	if _, err := br.ReadString('\n'); err == nil {
		t.Fatal("connection still open after an oversized frame")
	}
}

func TestHangupCancelsTheCall(t *testing.T) {
	canceled := make(chan struct{})
	conn := serve(t, echo(canceled))
	io.WriteString(conn, `{"v":1,"id":1,"method":"block"}`+"\n")
	conn.Close()
	select {
	case <-canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("handler not canceled after the client hung up")
	}
}

func TestClientContextCancel(t *testing.T) {
	c := NewConn(serve(t, echo(nil)), "test")
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	err := c.Call(ctx, "block", nil, nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Call with canceled ctx = %v", err)
	}
}

// FuzzServeConn throws arbitrary bytes at a served connection: the server
// must not panic, and everything it writes back must be well-formed frames.
// socketPair is a connected pair of unix sockets: unlike net.Pipe, it
// can be half-closed.
func socketPair(t *testing.T) (server net.Conn, client *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1].(*net.UnixConn)
}

func FuzzServeConn(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":1,"method":"echo","params":{}}` + "\n"))
	f.Add([]byte("garbage\n{\"v\":1}\n"))
	f.Add([]byte(`{"v":1,"id":2,"method":"stream"}` + "\n" + `{"v":1,"id":3,"method":"panic"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		server, client := socketPair(t)
		done := make(chan struct{})
		go func() {
			ServeConn(context.Background(), server, echo(nil), discard(), nil)
			close(done)
		}()
		go func() {
			_, _ = client.Write(data)
			_, _ = client.Write([]byte("\n"))
			// The server answers what it read, then sees the end.
			_ = client.CloseWrite()
		}()
		// A server that never ends fails the input instead of hanging.
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		r := NewReader(client)
		for {
			frame, err := r.ReadFrame()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the server neither answered nor hung up within 10s")
			}
			if err != nil {
				break
			}
			var resp Response
			if err := json.Unmarshal(frame, &resp); err != nil {
				t.Fatalf("server wrote a malformed frame %q: %v", frame, err)
			}
			if resp.Final() && resp.Result == nil && resp.Error == nil {
				t.Fatalf("final frame without result or error: %q", frame)
			}
		}
		client.Close()
		<-done
	})
}

// An upgradable call turns the connection into a byte stream; bytes the
// client sent right behind its request are not lost to the frame reader.
func TestUpgrade(t *testing.T) {
	server, client := socketPair(t)
	defer client.Close()
	go ServeConn(context.Background(), server, func(ctx context.Context, call *Call) Response {
		rw, err := call.Upgrade(map[string]string{"mode": "raw"})
		if err != nil {
			return Error(err)
		}
		_, _ = io.Copy(rw, rw) // echo until the client half-closes
		return Response{}
	}, discard(), func(m string) bool { return m == "pipe" })

	req, _ := json.Marshal(Request{V: api.ProtocolVersion, ID: 1, Method: "pipe"})
	if _, err := client.Write(append(append(req, '\n'), "early bytes|"...)); err != nil {
		t.Fatal(err)
	}
	c := NewConn(client, "test")
	// Read the answer the way Upgrade does, then the stream.
	frame, err := c.r.ReadFrame()
	if err != nil || !strings.Contains(string(frame), `"mode":"raw"`) {
		t.Fatalf("answer = %s, %v", frame, err)
	}
	client.Write([]byte("late bytes"))
	client.CloseWrite()
	back, err := io.ReadAll(c.r.Buffered())
	if err != nil || string(back) != "early bytes|late bytes" {
		t.Fatalf("echoed %q, %v", back, err)
	}

	// A method not declared upgradable cannot upgrade.
	s2, c2 := socketPair(t)
	defer c2.Close()
	go ServeConn(context.Background(), s2, func(ctx context.Context, call *Call) Response {
		_, err := call.Upgrade(nil)
		return Error(err)
	}, discard(), nil)
	err = NewConn(c2, "test").Call(context.Background(), "pipe", nil, nil, nil)
	if !errors.Is(err, api.ErrInvalidRequest) {
		t.Fatalf("upgrading an undeclared method: %v", err)
	}
}
