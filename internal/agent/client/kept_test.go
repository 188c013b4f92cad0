package client_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/server"
)

// lockedBuffer is a buffer read while an exec writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor polls until cond holds (what a command writes, as it runs).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within 30s", what)
		}
	}
}

// newLink gives a new link to s and a way to break it, as a suspend does.
func newLink(t *testing.T, s *server.Server) (*client.Client, func()) {
	t.Helper()
	a, b := net.Pipe()
	go s.Serve(b)
	c := client.New(a)
	t.Cleanup(func() { c.Close() })
	return c, func() { a.Close() }
}

// TestKeptExec: a kept exec runs on when its link breaks; what it wrote
// meanwhile (the newest proto.KeptOutput bytes) and its end come to the
// caller that attaches on a new link, with stdin going to it again; an
// end nobody heard is kept until collected, once; a plain exec's
// handle, and an unknown one, cannot be attached to.
func TestKeptExec(t *testing.T) {
	s := &server.Server{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mark := filepath.Join(t.TempDir(), "burst")
	script := `read x; echo "got $x"; while [ ! -e ` + mark + `.go ]; do sleep 0.05; done
echo while-away; head -c 2000000 /dev/zero | tr '\0' x; echo; echo end-of-burst; touch ` + mark + `
read y; echo "y=$y"; exit 5`
	c1, break1 := newLink(t, s)
	inR, inW := io.Pipe()
	var out1 lockedBuffer
	ended := make(chan error, 1)
	go func() {
		_, err := c1.Exec(ctx, proto.ExecParams{Args: []string{"sh", "-c", script}, Handle: "k1", Keep: true}, inR, &out1, io.Discard)
		ended <- err
	}()
	if _, err := inW.Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first output", func() bool { return strings.Contains(out1.String(), "got a") })
	break1()
	if err := <-ended; err == nil {
		t.Fatal("an exec whose link broke returned no error")
	}
	// Detached, it writes on: 2 MB, more than it keeps.
	if err := os.WriteFile(mark+".go", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the burst, while detached", func() bool { _, err := os.Stat(mark); return err == nil })

	c2, _ := newLink(t, s)
	var out2 lockedBuffer
	type result struct {
		r   proto.ExecResult
		err error
	}
	attached := make(chan result, 1)
	inR2, inW2 := io.Pipe()
	go func() {
		r, err := c2.Attach(ctx, "k1", inR2, &out2, io.Discard, nil)
		attached <- result{r, err}
	}()
	waitFor(t, "the kept output", func() bool { return strings.Contains(out2.String(), "end-of-burst") })
	if _, err := inW2.Write([]byte("b\n")); err != nil {
		t.Fatal(err)
	}
	res := <-attached
	got := out2.String()
	if res.err != nil || res.r.ExitCode != 5 {
		t.Fatalf("attached: %+v, %v", res.r, res.err)
	}
	if !strings.HasSuffix(got, "end-of-burst\ny=b\n") || strings.Contains(got, "while-away") || len(got) != proto.KeptOutput+len("y=b\n") {
		t.Fatalf("attached got %d bytes ending %q; want the newest %d kept, then y=b", len(got), got[max(0, len(got)-40):], proto.KeptOutput)
	}
	if _, err := c2.Attach(ctx, "k1", nil, io.Discard, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "no kept exec") {
		t.Fatalf("attaching to a collected exec: %v", err)
	}

	// It ends while no one listens: the end waits for the next caller;
	// a terminal's works the same.
	for _, tty := range []bool{false, true} {
		c3, break3 := newLink(t, s)
		in3R, in3W := io.Pipe()
		var out3 lockedBuffer
		ended := make(chan error, 1)
		p := proto.ExecParams{Args: []string{"sh", "-c", "echo ready; read x; echo got:$x; exit 3"}, Handle: "k2", Keep: true, Tty: tty, Rows: 24, Cols: 80}
		go func() {
			var err error
			if tty {
				_, err = c3.ExecTTY(ctx, p, in3R, &out3, nil)
			} else {
				_, err = c3.Exec(ctx, p, in3R, &out3, io.Discard)
			}
			ended <- err
		}()
		waitFor(t, "ready", func() bool { return strings.Contains(out3.String(), "ready") })
		break3()
		<-ended
		c4, _ := newLink(t, s)
		var out4 lockedBuffer
		r, err := c4.Attach(ctx, "k2", strings.NewReader("hi\n"), &out4, io.Discard, nil)
		if err != nil || r.ExitCode != 3 || !strings.Contains(out4.String(), "got:hi") {
			t.Fatalf("tty %v: attached: %+v, %v, %q", tty, r, err, out4.String())
		}
		in3W.Close()
	}

	c5, _ := newLink(t, s)
	if _, err := c5.Exec(ctx, proto.ExecParams{Args: []string{"true"}, Handle: "plain"}, nil, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"plain", "nope"} {
		if _, err := c5.Attach(ctx, h, nil, io.Discard, io.Discard, nil); err == nil {
			t.Errorf("attached to %q", h)
		}
	}
	if _, err := c5.Exec(ctx, proto.ExecParams{Args: []string{"true"}, Keep: true}, nil, io.Discard, io.Discard); err == nil {
		t.Error("a kept exec without a handle was started")
	}
}
