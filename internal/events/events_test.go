package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/store/storetest"
)

var epoch = time.Unix(1, 0)

func collect(t *testing.T, b *Bus, p api.EventsParams) []api.Event {
	t.Helper()
	var got []api.Event
	if _, err := b.Stream(context.Background(), p, func(e api.Event) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestKeptAcrossRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "banger.db")
	st, err := store.Open(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	b := New(Config{Store: st, Log: slog.Default()})
	b.Publish(api.Event{Type: api.EventVMCreated, VM: "a"})
	b.Publish(api.Event{Type: api.EventVMStopped, VM: "a", Reason: "stopped automatically: idle for 1m"})
	b.Publish(api.Event{Type: api.EventVMCreated, VM: "b"})
	st.Close()

	st, err = store.Open(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b = New(Config{Store: st, Log: slog.Default()})
	got := collect(t, b, api.EventsParams{Since: epoch, VM: "a"})
	if len(got) != 2 || got[0].Type != api.EventVMCreated || got[1].Reason != "stopped automatically: idle for 1m" || got[0].ID >= got[1].ID {
		t.Fatalf("after a restart: %+v", got)
	}
	b.Publish(api.Event{Type: api.EventVMDeleted, VM: "a"})
	all := collect(t, b, api.EventsParams{Since: epoch})
	if len(all) != 4 || all[3].ID <= all[2].ID {
		t.Fatalf("IDs after a restart: %+v", all)
	}
	if got := collect(t, b, api.EventsParams{Since: epoch, Types: []string{api.EventVMCreated}}); len(got) != 2 {
		t.Fatalf("by type: %+v", got)
	}
	if got := collect(t, b, api.EventsParams{Since: time.Now().Add(time.Hour)}); len(got) != 0 {
		t.Fatalf("since the future: %+v", got)
	}
}

func TestRefused(t *testing.T) {
	b := New(Config{Store: storetest.Open(t), Log: slog.Default()})
	for _, p := range []api.EventsParams{
		{Since: epoch, Types: []string{"vm.exploded"}},
		{}, // neither a past nor a future
	} {
		_, err := b.Stream(context.Background(), p, func(api.Event) error { return nil })
		if !errors.Is(err, api.ErrInvalidArgument) {
			t.Errorf("%+v: %v", p, err)
		}
	}
}

// A follower gets the kept past, then what comes, each event once and
// in order, even when one is published while it reads the past.
func TestFollow(t *testing.T) {
	b := New(Config{Store: storetest.Open(t), Log: slog.Default()})
	for i := range 5 {
		b.Publish(api.Event{Type: api.EventVMCreated, VM: fmt.Sprint("past", i)})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan api.Event, 100)
	done := make(chan error, 1)
	go func() {
		_, err := b.Stream(ctx, api.EventsParams{Since: epoch, Follow: true}, func(e api.Event) error {
			got <- e
			return nil
		})
		done <- err
	}()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 20 {
			b.Publish(api.Event{Type: api.EventVMStarted, VM: fmt.Sprint("live", i)})
		}
	})
	wg.Wait()
	var last int64
	for range 25 {
		select {
		case e := <-got:
			if e.ID <= last {
				t.Fatalf("event %+v after ID %d", e, last)
			}
			last = e.ID
		case <-time.After(10 * time.Second):
			t.Fatal("the follower did not get 25 events")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("an extra event: %+v", <-got)
	}
}

// A follower that stops reading is dropped with an error that says so;
// publishers never wait for it.
func TestSlowReader(t *testing.T) {
	b := New(Config{Store: storetest.Open(t), Log: slog.Default()})
	stuck := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := b.Stream(context.Background(), api.EventsParams{Follow: true}, func(api.Event) error {
			<-stuck
			return nil
		})
		done <- err
	}()
	for b.followers() == 0 {
		time.Sleep(time.Millisecond)
	}
	published := make(chan struct{})
	go func() {
		for range subBuffer + 10 {
			b.Publish(api.Event{Type: api.EventVMStarted, VM: "x"})
		}
		close(published)
	}()
	select {
	case <-published:
	case <-time.After(time.Minute):
		t.Fatal("a stalled follower blocked publishing")
	}
	close(stuck)
	if err := <-done; !errors.Is(err, api.ErrLimitExceeded) {
		t.Fatalf("a dropped follower: %v", err)
	}
}

func TestBounded(t *testing.T) {
	b := New(Config{Store: storetest.Open(t), Log: slog.Default(), Keep: 5})
	for i := range 20 {
		b.Publish(api.Event{Type: api.EventVMCreated, VM: fmt.Sprint("vm", i)})
	}
	got := collect(t, b, api.EventsParams{Since: epoch})
	if len(got) != 5 || got[0].VM != "vm15" || got[4].VM != "vm19" {
		t.Fatalf("kept: %+v", got)
	}
}

// A guest that tries many destinations gets a bounded number of denied
// events; the rest of the history stays.
func TestEgressFlood(t *testing.T) {
	now := time.Unix(1000, 0)
	b := New(Config{Store: storetest.Open(t), Log: slog.Default(), Keep: 100, Now: func() time.Time { return now }})
	b.Publish(api.Event{Type: api.EventVMCreated, VM: "victim"})
	for i := range 1000 {
		b.Publish(api.Event{Type: api.EventEgressDenied, VM: "attacker", Detail: fmt.Sprintf("tcp 10.0.%d.%d:80", i/256, i%256)})
	}
	b.Publish(api.Event{Type: api.EventEgressDenied, VM: "other", Detail: "tcp 1.1.1.1:443"})
	got := collect(t, b, api.EventsParams{Since: epoch})
	if len(got) != 1+floodLimit+1+1 || got[0].VM != "victim" {
		t.Fatalf("%d events kept, first %+v", len(got), got[0])
	}
	if cut := got[floodLimit+1]; cut.Reason != "too many" || !strings.Contains(cut.Detail, "banger vm egress attacker") {
		t.Fatalf("the cut: %+v", cut)
	}
	now = now.Add(floodWindow)
	b.Publish(api.Event{Type: api.EventEgressDenied, VM: "attacker", Detail: "tcp 10.9.9.9:80"})
	if got := collect(t, b, api.EventsParams{Since: epoch, VM: "attacker"}); got[len(got)-1].Detail != "tcp 10.9.9.9:80" {
		t.Fatalf("the next window: %+v", got[len(got)-1])
	}
}

// followers counts the live followers (tests wait on it).
func (b *Bus) followers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// TestOn: a subscriber is told the events of its type alone, kept (an
// ID), before Publish returns; it may publish in turn.
func TestOn(t *testing.T) {
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := New(Config{Store: st, Log: slog.Default()})
	var told []api.Event
	b.On(api.EventImageDeleted, func(e api.Event) {
		told = append(told, e)
		b.Publish(api.Event{Type: api.EventVMDeleted, VM: "x"})
	})
	b.Publish(api.Event{Type: api.EventVMCreated, VM: "a"})
	b.Publish(api.Event{Type: api.EventImageDeleted, Image: "img"})
	if len(told) != 1 || told[0].Image != "img" || told[0].ID == 0 || told[0].Time.IsZero() {
		t.Fatalf("told %+v", told)
	}
	if got := collect(t, b, api.EventsParams{Since: epoch}); len(got) != 3 || got[2].Type != api.EventVMDeleted {
		t.Fatalf("kept %+v", got)
	}
}
