package rpc

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// unixListener serves on a fresh unix socket with serve and returns a dialer.
func unixListener(b *testing.B, serve func(net.Conn)) string {
	b.Helper()
	dir, err := os.MkdirTemp("", "rpcb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return sock
}

// BenchmarkRoundTrip measures one call over a unix socket: "baseline" is a
// bare line echo (the cost of the socket itself), "call" is a full RPC
// call through ServeConn and Conn. `make bench` prints their ratio.
func BenchmarkRoundTrip(b *testing.B) {
	b.Run("baseline", func(b *testing.B) {
		sock := unixListener(b, func(c net.Conn) {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadBytes('\n')
				if err != nil {
					return
				}
				if _, err := c.Write(line); err != nil {
					return
				}
			}
		})
		c, err := net.Dial("unix", sock)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		msg := []byte(`{"v":1,"id":1,"method":"echo","params":{"x":1}}` + "\n")
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := r.ReadBytes('\n'); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("call", func(b *testing.B) {
		sock := unixListener(b, func(c net.Conn) { ServeConn(context.Background(), c, echo(nil), discard(), nil) })
		conn, err := Dial(context.Background(), sock, "bench")
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		ctx := context.Background()
		params := map[string]int{"x": 1}
		var out map[string]int
		b.ReportAllocs()
		for b.Loop() {
			if err := conn.Call(ctx, "echo", params, nil, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
