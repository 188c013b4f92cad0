// Package opstate tracks the daemon's asynchronous operations (vm.create,
// image.pull, …): a generic Registry per service, each entry with its phase,
// progress, timing, outcome and a context whose cancellation stops the work.
package opstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sort"
	"sync"
	"time"
)

// ErrFinished is returned when canceling an operation that already ended.
var ErrFinished = errors.New("operation already finished")

// Progress counts the work of the current phase.
type Progress struct {
	Done  int64
	Total int64 // 0 when unknown
	Unit  string
	// Items break the phase down (one per layer of a pull, say); Done and
	// Total are then their sums.
	Items []Item
}

// Item is one part of a phase's work.
type Item struct {
	Name        string
	Done, Total int64
}

func (p *Progress) clone() *Progress {
	if p == nil {
		return nil
	}
	c := *p
	c.Items = append([]Item(nil), p.Items...)
	return &c
}

// Status is a point-in-time copy of an operation. It shares nothing with the
// registry, so callers may keep or modify it freely.
type Status struct {
	ID       string
	Kind     string
	Target   string
	Phase    string
	Progress *Progress
	Started  time.Time
	Finished time.Time // zero while running
	Done     bool
	Err      error
	Canceled bool // Cancel was requested
	// Result names what a successful operation produced (an image's
	// name, say), when its result type is Named.
	Result string
}

// Named is implemented by results that can name themselves in listings.
type Named interface{ ResultName() string }

// Op is one operation whose result has type T.
type Op[T any] struct {
	id, kind, target string
	ctx              context.Context
	cancel           context.CancelFunc
	done             chan struct{}
	now              func() time.Time
	onFailed         func(Status)
	onPhase          func(kind, phase string)

	mu        sync.Mutex
	phase     string
	progress  *Progress
	started   time.Time
	finished  time.Time
	err       error
	result    T
	canceled  bool
	finishing bool          // Finish was called
	changed   chan struct{} // closed and replaced on every change
}

// ID returns the operation's identifier.
func (o *Op[T]) ID() string { return o.id }

// Context is canceled when the operation is canceled; the work must watch it.
func (o *Op[T]) Context() context.Context { return o.ctx }

// Done is closed once the operation finished.
func (o *Op[T]) Done() <-chan struct{} { return o.done }

// SetPhase starts a new phase and clears the progress counter; the
// registry's OnPhase hears of it first.
func (o *Op[T]) SetPhase(phase string) {
	if o.onPhase != nil {
		o.onPhase(o.kind, phase)
	}
	o.update(func() { o.phase, o.progress = phase, nil })
}

// SetProgress records progress within the current phase.
func (o *Op[T]) SetProgress(done, total int64, unit string) {
	o.update(func() { o.progress = &Progress{Done: done, Total: total, Unit: unit} })
}

// SetItems records per-item progress within the current phase; the
// operation keeps its own copy.
func (o *Op[T]) SetItems(items []Item, unit string) {
	p := &Progress{Unit: unit, Items: append([]Item(nil), items...)}
	for _, it := range items {
		p.Done += it.Done
		p.Total += it.Total
	}
	o.update(func() { o.progress = p })
}

// Finish records the outcome. Only the first call counts. A failure
// (not a cancel) is told to the registry's OnFailed before Done closes,
// so whoever waits on the operation finds it told.
func (o *Op[T]) Finish(result T, err error) {
	o.mu.Lock()
	if o.finishing {
		o.mu.Unlock()
		return
	}
	o.finishing = true
	o.result, o.err, o.finished = result, err, o.now()
	st := o.statusLocked(true)
	o.mu.Unlock()
	if err != nil && !errors.Is(err, context.Canceled) && o.onFailed != nil {
		o.onFailed(st)
	}
	o.mu.Lock()
	o.notifyLocked()
	close(o.done)
	o.mu.Unlock()
	o.cancel() // release the context's resources
}

// Cancel asks the work to stop. It returns ErrFinished when there is no work
// left to stop.
func (o *Op[T]) Cancel() error {
	o.mu.Lock()
	select {
	case <-o.done:
		o.mu.Unlock()
		return ErrFinished
	default:
	}
	o.canceled = true
	o.notifyLocked()
	o.mu.Unlock()
	o.cancel()
	return nil
}

// Result returns the outcome; it is meaningful once Done is closed.
func (o *Op[T]) Result() (T, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.result, o.err
}

// Status returns a snapshot.
func (o *Op[T]) Status() Status {
	st, _ := o.Watch()
	return st
}

// Watch returns a snapshot and a channel closed on the next change, taken
// atomically so a watcher never misses an update.
func (o *Op[T]) Watch() (Status, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	done := false
	select {
	case <-o.done:
		done = true
	default:
	}
	return o.statusLocked(done), o.changed
}

func (o *Op[T]) statusLocked(done bool) Status {
	st := Status{
		ID: o.id, Kind: o.kind, Target: o.target, Phase: o.phase,
		Started: o.started, Finished: o.finished, Err: o.err, Canceled: o.canceled,
	}
	st.Progress = o.progress.clone()
	if done {
		st.Done = true
		if n, ok := any(o.result).(Named); ok && o.err == nil {
			st.Result = n.ResultName()
		}
	}
	return st
}

func (o *Op[T]) update(f func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f()
	o.notifyLocked()
}

func (o *Op[T]) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// Tracked is the type-erased view of an operation that the daemon's
// operations.* methods use across registries of different result types.
type Tracked interface {
	ID() string
	Status() Status
	Watch() (Status, <-chan struct{})
	Done() <-chan struct{}
	Cancel() error
}

// Registry holds the operations of one service.
type Registry[T any] struct {
	retention time.Duration
	now       func() time.Time

	mu       sync.Mutex
	ops      map[string]*Op[T]
	onFailed func(Status)
	onPhase  func(kind, phase string)
}

// OnFailed has fn told of every operation that fails from now on (not
// one canceled), before the operation says it is done.
func (r *Registry[T]) OnFailed(fn func(Status)) {
	r.mu.Lock()
	r.onFailed = fn
	r.mu.Unlock()
}

// OnPhase has fn told of every phase an operation inserted from now on
// enters, as it enters it (the reliability campaign's crash points).
func (r *Registry[T]) OnPhase(fn func(kind, phase string)) {
	r.mu.Lock()
	r.onPhase = fn
	r.mu.Unlock()
}

// NewRegistry returns a registry that prunes finished operations older than
// retention. now may be nil (time.Now).
func NewRegistry[T any](retention time.Duration, now func() time.Time) *Registry[T] {
	if now == nil {
		now = time.Now
	}
	return &Registry[T]{retention: retention, now: now, ops: map[string]*Op[T]{}}
}

// Insert registers a new running operation. Its context derives from parent
// (normally the daemon's lifetime context, not a request's: operations
// outlive the call that started them).
func (r *Registry[T]) Insert(parent context.Context, kind, target string) *Op[T] {
	ctx, cancel := context.WithCancel(parent)
	op := &Op[T]{
		id: newID(), kind: kind, target: target,
		ctx: ctx, cancel: cancel, done: make(chan struct{}), now: r.now,
		started: r.now(), changed: make(chan struct{}),
	}
	r.mu.Lock()
	op.onFailed, op.onPhase = r.onFailed, r.onPhase
	r.ops[op.id] = op
	r.mu.Unlock()
	return op
}

// Get returns the operation with id.
func (r *Registry[T]) Get(id string) (*Op[T], bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	op, ok := r.ops[id]
	return op, ok
}

// Lookup is Get for callers that do not know T.
func (r *Registry[T]) Lookup(id string) (Tracked, bool) {
	op, ok := r.Get(id)
	if !ok {
		return nil, false
	}
	return op, true
}

// List returns a freshly allocated snapshot of every operation, oldest
// first. Finished operations are included until pruned.
func (r *Registry[T]) List() []Status {
	r.mu.Lock()
	ops := make([]*Op[T], 0, len(r.ops))
	for _, op := range r.ops {
		ops = append(ops, op)
	}
	r.mu.Unlock()
	out := make([]Status, 0, len(ops))
	for _, op := range ops {
		out = append(out, op.Status())
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.Before(out[j].Started)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Prune removes operations that finished more than the retention period
// ago and returns how many it removed. Running operations are never pruned.
func (r *Registry[T]) Prune() int {
	cutoff := r.now().Add(-r.retention)
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id, op := range r.ops {
		st := op.Status()
		if st.Done && st.Finished.Before(cutoff) {
			delete(r.ops, id)
			n++
		}
	}
	return n
}

// newID returns "op-" and 12 hex digits: short enough to type, random
// enough never to collide within a retention period.
func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return "op-" + hex.EncodeToString(b[:])
}

// Start inserts an operation and runs work for it in a new goroutine,
// finishing the operation with work's outcome.
func (r *Registry[T]) Start(parent context.Context, kind, target string, work func(ctx context.Context, op *Op[T]) (T, error)) *Op[T] {
	op := r.Insert(parent, kind, target)
	go func() {
		res, err := work(op.Context(), op)
		op.Finish(res, err)
	}()
	return op
}
