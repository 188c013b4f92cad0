// Package events is the daemon's event bus: services publish lifecycle
// events (a VM created, stopped and why, an image pulled, an operation
// failed, an egress denied), the bus keeps the recent past in the store,
// bounded, and streams to `banger events` what was kept and what comes.
package events

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/store"
)

const (
	// Keep is how many events the store keeps by default.
	Keep = 10000
	// subBuffer is how far a follower may fall behind before it is
	// dropped (with an error saying so), so a stalled client never
	// blocks a publisher.
	subBuffer = 1024
	// A VM's denied egress is cut to floodLimit events per floodWindow:
	// a guest that tries a thousand addresses must not push the VMs'
	// lifecycle out of the kept past. Its egress log has them all.
	floodLimit  = 30
	floodWindow = time.Minute
)

// Config wires a Bus.
type Config struct {
	Store store.Access
	Keep  int // default Keep
	Log   *slog.Logger
	Now   func() time.Time // default time.Now
}

// Bus records and fans out events.
type Bus struct {
	cfg Config

	mu       sync.Mutex // orders IDs and their delivery
	subs     map[*sub]struct{}
	floods   map[string]*flood
	handlers map[string][]func(api.Event) // in-process subscribers, by type
}

type sub struct {
	ch chan api.Event
}

type flood struct {
	start time.Time
	n     int
}

// New returns a Bus.
func New(cfg Config) *Bus {
	if cfg.Keep <= 0 {
		cfg.Keep = Keep
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Bus{cfg: cfg, subs: map[*sub]struct{}{}, floods: map[string]*flood{}}
}

// On has fn told every event of type typ, in the publisher's goroutine
// once the event is kept and sent to the followers: a service that acts
// on another's events (the VM service's templates go with a deleted
// image) subscribes here rather than being called by it. Publish returns
// once fn has.
func (b *Bus) On(typ string, fn func(api.Event)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.handlers == nil {
		b.handlers = map[string][]func(api.Event){}
	}
	b.handlers[typ] = append(b.handlers[typ], fn)
}

// Publish records e, sends it to every follower and tells the
// subscribers of its type (On). It never blocks on a follower; a store
// that fails loses the event from the kept past (logged), not from the
// live stream.
func (b *Bus) Publish(e api.Event) {
	kept, handlers := b.publish(e)
	for _, fn := range handlers {
		fn(kept)
	}
}

func (b *Bus) publish(e api.Event) (api.Event, []func(api.Event)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e.Time.IsZero() {
		e.Time = b.cfg.Now()
	}
	if !b.admit(&e) {
		return e, nil
	}
	batch := []api.Event{e}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := b.cfg.Store.Update(ctx, func(tx *store.Tx) error { return tx.AddEvents(ctx, batch, b.cfg.Keep) })
	cancel()
	if err != nil {
		b.cfg.Log.Warn("keeping an event", "type", e.Type, "vm", e.VM, "err", err)
		batch[0].ID = 0
	}
	for s := range b.subs {
		select {
		case s.ch <- batch[0]:
		default:
			close(s.ch)
			delete(b.subs, s)
		}
	}
	return batch[0], slices.Clone(b.handlers[e.Type])
}

// admit applies the flood limit to a VM's denied egress: past it, one
// event says the rest are only in the VM's egress log.
func (b *Bus) admit(e *api.Event) bool {
	if e.Type != api.EventEgressDenied {
		return true
	}
	f := b.floods[e.VM]
	if f == nil || e.Time.Sub(f.start) >= floodWindow || e.Time.Before(f.start) {
		if len(b.floods) >= 4096 {
			clear(b.floods)
		}
		f = &flood{start: e.Time}
		b.floods[e.VM] = f
	}
	f.n++
	switch {
	case f.n <= floodLimit:
		return true
	case f.n == floodLimit+1:
		e.Reason = "too many"
		e.Detail = fmt.Sprintf("more than %d denied attempts within %s: the rest are in `banger vm egress %s`", floodLimit, floodWindow, e.VM)
		return true
	}
	return false
}

func (b *Bus) subscribe() *sub {
	s := &sub{ch: make(chan api.Event, subBuffer)}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

func (b *Bus) unsubscribe(s *sub) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.ch)
	}
}

// Stream sends the kept events since p.Since (none for a zero Since),
// then with p.Follow each new one, until ctx ends; each once, in order.
func (b *Bus) Stream(ctx context.Context, p api.EventsParams, emit func(api.Event) error) (api.EventsResult, error) {
	var res api.EventsResult
	for _, t := range p.Types {
		if !slices.Contains(api.EventTypes, t) {
			return res, fmt.Errorf("%w: no event type %q; the types are %s", api.ErrInvalidArgument, t, strings.Join(api.EventTypes, ", "))
		}
	}
	if !p.Follow && p.Since.IsZero() {
		return res, fmt.Errorf("%w: nothing to send: give a time to start from (--since) or follow", api.ErrInvalidArgument)
	}
	match := func(e api.Event) bool {
		return (p.VM == "" || e.VM == p.VM) && (len(p.Types) == 0 || slices.Contains(p.Types, e.Type))
	}
	var s *sub
	if p.Follow {
		s = b.subscribe() // before reading the past: nothing falls between
		defer b.unsubscribe(s)
	}
	var seen int64
	if !p.Since.IsZero() {
		var past []api.Event
		if err := b.cfg.Store.View(ctx, func(tx *store.Tx) error {
			var err error
			past, err = tx.Events(ctx, p.Since)
			return err
		}); err != nil {
			return res, err
		}
		for _, e := range past {
			seen = e.ID
			if !match(e) {
				continue
			}
			if err := emit(e); err != nil {
				return res, err
			}
			res.Count++
		}
	}
	if s == nil {
		return res, nil
	}
	for {
		select {
		case <-ctx.Done():
			return res, nil
		case e, ok := <-s.ch:
			if !ok {
				return res, fmt.Errorf("%w: this client read events more slowly than they came and fell %d behind; follow again with --since", api.ErrLimitExceeded, subBuffer)
			}
			if (e.ID != 0 && e.ID <= seen) || !match(e) {
				continue
			}
			if err := emit(e); err != nil {
				return res, err
			}
			res.Count++
		}
	}
}
