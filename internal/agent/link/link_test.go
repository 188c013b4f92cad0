package link

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// pair is two linked ends over an in-memory pipe, both running.
func pair(t *testing.T) (*Link, *Link) {
	t.Helper()
	a, b := net.Pipe()
	la, lb := New(a), New(b)
	go la.Run(nil)
	go lb.Run(nil)
	t.Cleanup(func() { la.Close(); lb.Close() })
	return la, lb
}

func within(t *testing.T, d time.Duration, what string, f func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	select {
	case err := <-errc:
		return err
	case <-time.After(d):
		t.Fatalf("%s: still waiting after %s", what, d)
		return nil
	}
}

// TestStalledStreamBlocksNoOther: a stream whose reader never reads
// holds at most its window; the link's other streams go on.
func TestStalledStreamBlocksNoOther(t *testing.T) {
	a, b := pair(t)
	for _, id := range []uint32{1, 2} {
		if _, err := a.Open(id); err != nil {
			t.Fatal(err)
		}
	}
	recv1, _ := b.Open(1) // never read
	_ = recv1
	recv2, _ := b.Open(2)
	// Stream 1 sends until its credit runs out: the sender waits, the
	// link does not.
	sent := make(chan error, 1)
	go func() { sent <- a.SendData(context.Background(), 1, proto.Stdout, make([]byte, 8*proto.Window)) }()
	err := within(t, 10*time.Second, "stream 2 behind a stalled stream 1", func() error {
		if err := a.SendData(context.Background(), 2, proto.Stdout, []byte("hello")); err != nil {
			return err
		}
		f := <-recv2
		if string(f.Payload[1:]) != "hello" {
			t.Errorf("stream 2 got %q", f.Payload)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-sent:
		t.Fatalf("stream 1 sent 8 windows to a reader that reads nothing: %v", err)
	default:
	}
	// Released, the stalled sender stops waiting.
	b.Release(1)
	if err := within(t, 10*time.Second, "the stalled sender after a release", func() error { return <-sent }); err != nil {
		t.Logf("the stalled sender ended with %v", err)
	}
}

// TestPeerThatStopsReading: a write to a peer that reads nothing ends at
// the write timeout with ErrStalled and closes the link; a send waiting
// for the write lock behind it honours its context.
func TestPeerThatStopsReading(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close() // b never reads
	l := New(a)
	l.SetWriteTimeout(300 * time.Millisecond)
	go l.Run(nil)
	if _, err := l.Open(1); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- l.Request(context.Background(), 1, "ping", nil) }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	// Whichever of the two writes first stalls; the other waits for the
	// lock only as long as its context allows, or finds the link closed.
	second := within(t, 5*time.Second, "a send behind a stalled write", func() error { return l.Request(ctx, 1, "ping", nil) })
	firstErr := within(t, 5*time.Second, "the stalled write", func() error { return <-first })
	if second == nil || firstErr == nil {
		t.Fatalf("a send to a peer that reads nothing succeeded: %v, %v", firstErr, second)
	}
	if !errors.Is(firstErr, ErrStalled) && !errors.Is(second, ErrStalled) {
		t.Fatalf("the writes ended with %v and %v; want one ErrStalled", firstErr, second)
	}
	for _, err := range []error{firstErr, second} {
		if !errors.Is(err, ErrStalled) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a write ended with %v; want ErrStalled or its context's deadline", err)
		}
	}
	<-l.Done()
	if !errors.Is(l.Err(), ErrStalled) {
		t.Fatalf("the link went down with %v; want ErrStalled", l.Err())
	}
}

// TestPeerBreakingFlowControl: a peer that sends past its credit, or
// floods a stream with control frames, has the link closed under it.
func TestPeerBreakingFlowControl(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame proto.Frame
		n     int
	}{
		{"data past the window", proto.Frame{Kind: proto.KindData, Stream: 1, Payload: append([]byte{proto.Stdout}, make([]byte, 128<<10)...)}, 2 * proto.Window / (128 << 10)},
		{"a flood of close frames", proto.Frame{Kind: proto.KindClose, Stream: 1, Payload: []byte{proto.Stdout}}, 1000},
		{"a flood of tiny data frames", proto.Frame{Kind: proto.KindData, Stream: 1, Payload: []byte{proto.Stdout, 'x'}}, proto.Window/proto.FrameCost + 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			l := New(a)
			go l.Run(nil)
			defer l.Close()
			if _, err := l.Open(1); err != nil { // opened, never read: credit is never given back
				t.Fatal(err)
			}
			go func() {
				for range tc.n {
					buf, _ := proto.AppendFrame(nil, tc.frame)
					if _, err := b.Write(buf); err != nil {
						return
					}
				}
			}()
			go func() { _, _ = io.Copy(io.Discard, b) }()
			select {
			case <-l.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the link took it all")
			}
			if !errors.Is(l.Err(), proto.ErrFrame) {
				t.Fatalf("link down with %v; want a bad frame", l.Err())
			}
		})
	}
}

// TestBulkThroughCredit: a stream far larger than the window arrives
// whole and in order when its reader reads.
func TestBulkThroughCredit(t *testing.T) {
	a, b := pair(t)
	if _, err := a.Open(7); err != nil {
		t.Fatal(err)
	}
	ch, _ := b.Open(7)
	want := make([]byte, 5*proto.Window+12345)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		_ = a.SendData(context.Background(), 7, proto.Stdout, want)
		_ = a.CloseFD(context.Background(), 7, proto.Stdout)
	}()
	got, err := io.ReadAll(b.NewReader(ch, proto.Stdout, nil))
	if err != nil || len(got) != len(want) {
		t.Fatalf("read %d of %d bytes: %v", len(got), len(want), err)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("byte %d differs", i)
		}
	}
}

// TestResetWakesEverySender: two senders wait on one stream's credit (an
// exec's stdout and stderr copiers); the peer releases the stream: both
// go on, not only the first to wake.
func TestResetWakesEverySender(t *testing.T) {
	a, b := pair(t)
	if _, err := a.Open(1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(1); err != nil { // opened, never read
		t.Fatal(err)
	}
	done := make(chan error, 2)
	for _, fd := range []byte{proto.Stdout, proto.Stderr} {
		go func() { done <- a.SendData(context.Background(), 1, fd, make([]byte, 2*proto.Window)) }()
	}
	// Both wait once the window is spent.
	for {
		a.mu.Lock()
		spent := a.streams[1].credit < 16<<10
		a.mu.Unlock()
		if spent {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.Release(1)
	for i := range 2 {
		if err := within(t, 10*time.Second, "a sender after the peer's release", func() error { return <-done }); err != nil {
			t.Fatalf("sender %d: %v", i, err)
		}
	}
}
