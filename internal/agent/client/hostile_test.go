package client_test

// The host's client against a hostile guest: the guest end of the link
// is the test's, answering calls with what no honest agent sends.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/link"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/server"
)

// hostile is a guest that answers every request with answer.
func hostile(t *testing.T, answer func(l *link.Link, req proto.Frame)) *client.Client {
	t.Helper()
	a, b := net.Pipe()
	l := link.New(b)
	go l.Run(func(f proto.Frame) { go answer(l, f) })
	c := client.New(a)
	t.Cleanup(func() { c.Close(); b.Close() })
	return c
}

func manifestLine(path string) string {
	return `{"path":"` + path + `","type":"f","mode":420,"size":1,"sha256":"` + strings.Repeat("a", 64) + `"}` + "\n"
}

// TestHostileManifest: a manifest's count, length and lines are bounded
// before anything is allocated for them.
func TestHostileManifest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines string
		count int
	}{
		{"a count of 2^50 and no entries (was a fatal make)", "", 1 << 50},
		{"a negative count", "", -1},
		{"more entries than allowed", strings.Repeat(manifestLine("x"), 101), 101},
		{"more bytes than allowed", manifestLine(strings.Repeat("y", 2<<20)), 1},
		{"one line of 8 MiB", `{"path":"` + strings.Repeat("z", 8<<20), 1},
		{"garbage", "\x00\x01\x02\n", 1},
		{"fewer entries than counted", manifestLine("a"), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := hostile(t, func(l *link.Link, req proto.Frame) {
				_ = l.SendData(context.Background(), req.Stream, proto.Stdout, []byte(tc.lines))
				_ = l.CloseFD(context.Background(), req.Stream, proto.Stdout)
				l.Respond(req.Stream, proto.ManifestResult{Count: tc.count}, nil)
			})
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			m, err := c.Manifest(ctx, proto.ManifestParams{Dir: "/w"}, 100, 1<<20)
			if !errors.Is(err, proto.ErrFrame) {
				t.Fatalf("Manifest = %d entries, %v; want a bad frame", len(m), err)
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
				t.Fatalf("the heap grew by %d MiB", grew>>20)
			}
		})
	}
}

// FuzzParseManifest: any listing gives at most max entries, or an error.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(manifestLine("a") + manifestLine("b")))
	f.Add([]byte(`{"path":"x"`))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := client.ParseManifest(bytes.NewReader(b), 3, 4096)
		if err == nil && len(m) > 3 {
			t.Fatalf("%d entries past the cap", len(m))
		}
	})
}

// FuzzClientFrames: whatever bytes a guest writes on its link, every
// host call ends (with an answer or an error) and the client does not
// panic.
func FuzzClientFrames(f *testing.F) {
	frame := func(kind byte, stream uint32, payload string) []byte {
		b, _ := proto.AppendFrame(nil, proto.Frame{Kind: kind, Stream: stream, Payload: []byte(payload)})
		return b
	}
	f.Add(frame(proto.KindResponse, 1, `{"result":{"uptime":1}}`))
	f.Add(append(frame(proto.KindData, 2, "\x01"+manifestLine("a")), frame(proto.KindResponse, 2, `{"result":{"count":1}}`)...))
	f.Add(frame(proto.KindResponse, 3, `{"result":{"sockets":[{"port":-1}]}}`))
	f.Add(frame(proto.KindData, 4, "\x01garbage"))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, g := net.Pipe()
		c := client.New(a)
		defer c.Close()
		go func() {
			_, _ = g.Write(b)
			g.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = c.Ping(ctx)
		_, _ = c.Manifest(ctx, proto.ManifestParams{Dir: "/w"}, 10, 4096)
		_, _ = c.Ports(ctx)
		_, _ = c.Stats(ctx)
		var out bytes.Buffer
		_, _ = c.GetTree(ctx, "/w", []string{"a"}, &out)
		if ctx.Err() != nil {
			t.Fatal("a call outlived the link")
		}
	})
}

// TestStreamDeadlines: a guest port that accepts and never answers (a
// port probe's TLS handshake, a read) ends at the caller's deadline on an
// agent stream, as on a socket; before, deadlines were unsupported there
// and `vm ports` could hang forever.
func TestStreamDeadlines(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never written
		}
	}()
	c := pair(t, &server.Server{})
	ctx := context.Background()
	conn, err := c.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline = %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the read took %s", took)
	}
	// A read already blocked ends when the deadline is moved to now.
	conn3, err := c.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn3.Close()
	blocked := make(chan error, 1)
	go func() {
		_, err := conn3.Read(make([]byte, 1))
		blocked <- err
	}()
	_ = conn3.SetReadDeadline(time.Now().Add(time.Hour))
	_ = conn3.SetReadDeadline(time.Now())
	select {
	case err := <-blocked:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the blocked read = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked read ignored a deadline moved to now")
	}
	conn2, err := c.Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	_ = conn2.SetDeadline(time.Now().Add(300 * time.Millisecond))
	hctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := tls.Client(conn2, &tls.Config{InsecureSkipVerify: true}).HandshakeContext(hctx); err == nil {
		t.Fatal("a handshake with a silent port succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the handshake took %s", took)
	}
}

// TestSlowDripBlocksNoOtherCall: a guest that drips its manifest a few
// bytes at a time holds only that call, which its caller's context ends;
// the link's other calls answer meanwhile.
func TestSlowDripBlocksNoOtherCall(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	c := hostile(t, func(l *link.Link, req proto.Frame) {
		var r proto.Request
		_ = json.Unmarshal(req.Payload, &r)
		if r.Method == proto.MethodPing {
			l.Respond(req.Stream, proto.PingResult{Uptime: 1}, nil)
			return
		}
		line := manifestLine("drip")
		for i := 0; ; i = (i + 1) % len(line) {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if l.SendData(context.Background(), req.Stream, proto.Stdout, []byte{line[i]}) != nil {
				return
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	dripped := make(chan error, 1)
	go func() {
		_, err := c.Manifest(ctx, proto.ManifestParams{Dir: "/w"}, 100, 1<<20)
		dripped <- err
	}()
	for range 5 {
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := c.Ping(pctx); err != nil {
			t.Fatalf("a ping beside a dripping manifest: %v", err)
		}
		pcancel()
	}
	select {
	case err := <-dripped:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the dripping manifest ended with %v; want its context's deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the dripping manifest outlived its context")
	}
}
