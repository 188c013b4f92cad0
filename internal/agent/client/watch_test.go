package client_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/server"
)

// TestWatch: the real agent server watches a directory with inotify,
// recursively, a new subdirectory included, until the host stops.
func TestWatch(t *testing.T) {
	c := pair(t, &server.Server{})
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	events := make(chan proto.WatchEvent, 64)
	done := make(chan error, 1)
	wctx, stop := context.WithCancel(ctx)
	go func() {
		done <- c.Watch(wctx, proto.WatchParams{Path: root, Recursive: true}, nil, func(e proto.WatchEvent) error {
			events <- e
			return nil
		})
	}()
	want := func(name, op string, do func()) {
		t.Helper()
		// The watch starts asynchronously: repeat the change until its
		// event comes, so the first one is not lost to the start.
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		do()
		for {
			select {
			case e := <-events:
				if strings.Contains(e.Name, ".banger-write-") {
					t.Fatalf("the agent's temporary file showed: %+v", e)
				}
				if e.Name == name && e.Op == op {
					return
				}
			case <-tick.C:
				do()
			case <-ctx.Done():
				t.Fatalf("no %s event for %s", op, name)
			}
		}
	}
	write := func(p string) func() {
		return func() { _ = os.WriteFile(filepath.Join(root, p), []byte("x"), 0o644) }
	}
	want("a.txt", proto.WatchWrite, write("a.txt"))
	want("old/b.txt", proto.WatchCreate, func() { _ = os.Remove(filepath.Join(root, "old/b.txt")); write("old/b.txt")() })
	want("new", proto.WatchCreate, func() { _ = os.Mkdir(filepath.Join(root, "new"), 0o755) })
	want("new/c.txt", proto.WatchWrite, write("new/c.txt"))
	want("a.txt", proto.WatchRemove, func() { write("a.txt")(); _ = os.Remove(filepath.Join(root, "a.txt")) })
	// A file written through the agent (beside, then renamed over) shows
	// as a write of its name, never as the temporary file.
	want("new/d.txt", proto.WatchWrite, func() {
		if _, err := c.WriteFile(ctx, filepath.Join(root, "new/d.txt"), 0o644, strings.NewReader("y")); err != nil {
			t.Error(err)
		}
	})
	for len(events) > 0 {
		if e := <-events; strings.Contains(e.Name, ".banger-write-") {
			t.Fatalf("the agent's temporary file showed: %+v", e)
		}
	}
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("the watch ended with %v", err)
	}
	// A file is not a directory to watch.
	if err := c.Watch(ctx, proto.WatchParams{Path: filepath.Join(root, "new/c.txt")}, nil, func(proto.WatchEvent) error { return nil }); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("watching a file: %v", err)
	}
}

const start = `{"name":"","op":"start"}` + "\n"

// TestParseWatchEvents: what a hostile guest could send as watch events
// is refused as a protocol break.
func TestParseWatchEvents(t *testing.T) {
	for _, in := range []string{"", `{"name":"a","op":"create"}` + "\n", `{"name":"x","op":"start"}` + "\n", start + start} {
		if err := client.ParseWatchEvents(strings.NewReader(in), nil, func(proto.WatchEvent) error { return nil }); in != "" && !errors.Is(err, proto.ErrFrame) {
			t.Errorf("%q: %v, want a protocol break", in, err)
		}
	}
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"good", `{"name":"a/b","op":"create"}` + "\n", true},
		{"absolute", `{"name":"/etc/shadow","op":"write"}` + "\n", false},
		{"outside", `{"name":"../x","op":"write"}` + "\n", false},
		{"dot dot", `{"name":"..","op":"write"}` + "\n", false},
		{"unclean", `{"name":"a/../../b","op":"write"}` + "\n", false},
		{"NUL", `{"name":"a\u0000b","op":"write"}` + "\n", false},
		{"unknown op", `{"name":"a","op":"exec"}` + "\n", false},
		{"unknown field", `{"name":"a","op":"write","run":"rm -rf /"}` + "\n", false},
		{"empty name", `{"name":"","op":"write"}` + "\n", false},
		{"long line", `{"name":"` + strings.Repeat("a", 9000) + `","op":"write"}` + "\n", false},
		{"not JSON", "hello\n", false},
	} {
		n := 0
		err := client.ParseWatchEvents(strings.NewReader(start+tc.in), nil, func(proto.WatchEvent) error { n++; return nil })
		if (err == nil) != tc.ok || (!tc.ok && (n != 0 || !errors.Is(err, proto.ErrFrame))) {
			t.Errorf("%s: err %v, %d events", tc.name, err, n)
		}
	}
}

func FuzzParseWatchEvents(f *testing.F) {
	f.Add([]byte(start + `{"name":"a/b","op":"create"}` + "\n" + `{"name":"c","op":"remove"}`))
	f.Add([]byte(start + `{"name":"../x","op":"write"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		_ = client.ParseWatchEvents(strings.NewReader(string(in)), nil, func(e proto.WatchEvent) error {
			if err := client.CheckWatchEvent(e); err != nil {
				t.Fatalf("emitted %+v: %v", e, err)
			}
			if filepath.IsAbs(e.Name) || strings.HasPrefix(e.Name, "..") && (len(e.Name) == 2 || e.Name[2] == '/') {
				t.Fatalf("emitted a name outside: %q", e.Name)
			}
			return nil
		})
	})
}
