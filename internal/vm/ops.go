package vm

import (
	"context"
	"fmt"
	"sync"

	"github.com/bangerdev/banger/api"
)

// tracker runs long verbs as operations, one at a time on a target.
type tracker struct {
	start func(kind, target string) (ctx context.Context, phase func(string), done func(error)) // Config.Track

	mu   sync.Mutex
	busy map[string]string // tracked verbs running, by target
}

// track runs fn, a long verb on the VM (or image) named target, as an
// operation `banger ops list` shows with its phases. While it runs,
// another tracked verb on the same target is refused with api.ErrInUse,
// naming it: two saves, a fork and a rollback of one VM do not queue
// behind each other unseen. Untracked calls (exec resuming a VM, start)
// wait on the VM's lock as before.
func (t *tracker) track(ctx context.Context, kind, target string, fn func(ctx context.Context, phase func(string)) error) error {
	key := target // a VM's name
	if kind == api.OpKindImageWarm {
		key = "image " + target
	}
	t.mu.Lock()
	if t.busy == nil {
		t.busy = map[string]string{}
	}
	if running, ok := t.busy[key]; ok {
		t.mu.Unlock()
		return fmt.Errorf("%s %s: %w: %s runs on it; wait for it (`banger ops list`)", kind, target, api.ErrInUse, running)
	}
	t.busy[key] = kind + " " + target
	t.mu.Unlock()
	setPhase, done := func(string) {}, func(error) {}
	// `banger ops cancel` of it ends the call as its caller's going would.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if t.start != nil {
		var opCtx context.Context
		opCtx, setPhase, done = t.start(kind, target)
		defer context.AfterFunc(opCtx, cancel)()
	}
	phase := func(p string) {
		t.mu.Lock()
		t.busy[key] = kind + " " + target + " (" + p + ")"
		t.mu.Unlock()
		setPhase(p)
	}
	err := fn(ctx, phase)
	t.mu.Lock()
	delete(t.busy, key)
	t.mu.Unlock()
	done(err)
	return err
}

// tracked is track for a verb on the VM named name (which must exist)
// that returns R.
func tracked[R any](ctx context.Context, s *Service, kind, name string, fn func(ctx context.Context, phase func(string)) (R, error)) (R, error) {
	var r R
	if _, err := s.recs.find(ctx, name); err != nil {
		return r, err
	}
	err := s.ops.track(ctx, kind, name, func(ctx context.Context, phase func(string)) error {
		var err error
		r, err = fn(ctx, phase)
		return err
	})
	return r, err
}
