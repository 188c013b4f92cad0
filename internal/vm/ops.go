package vm

import (
	"context"
	"fmt"

	"github.com/bangerdev/banger/api"
)

// track runs fn, a long verb on the VM (or image) named target, as an
// operation `banger ops list` shows with its phases. While it runs,
// another tracked verb on the same target is refused with api.ErrInUse,
// naming it: two saves, a fork and a rollback of one VM do not queue
// behind each other unseen. Untracked calls (exec resuming a VM, start)
// wait on the VM's lock as before.
func (s *Service) track(ctx context.Context, kind, target string, fn func(ctx context.Context, phase func(string)) error) error {
	key := target // a VM's name
	if kind == api.OpKindImageWarm {
		key = "image " + target
	}
	s.mu.Lock()
	if s.busy == nil {
		s.busy = map[string]string{}
	}
	if running, ok := s.busy[key]; ok {
		s.mu.Unlock()
		return fmt.Errorf("%s %s: %w: %s runs on it; wait for it (`banger ops list`)", kind, target, api.ErrInUse, running)
	}
	s.busy[key] = kind + " " + target
	s.mu.Unlock()
	setPhase, done := func(string) {}, func(error) {}
	// `banger ops cancel` of it ends the call as its caller's going would.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.cfg.Track != nil {
		var opCtx context.Context
		opCtx, setPhase, done = s.cfg.Track(kind, target)
		defer context.AfterFunc(opCtx, cancel)()
	}
	phase := func(p string) {
		s.mu.Lock()
		s.busy[key] = kind + " " + target + " (" + p + ")"
		s.mu.Unlock()
		setPhase(p)
	}
	err := fn(ctx, phase)
	s.mu.Lock()
	delete(s.busy, key)
	s.mu.Unlock()
	done(err)
	return err
}

// tracked is track for a verb on the VM named name (which must exist)
// that returns R.
func tracked[R any](ctx context.Context, s *Service, kind, name string, fn func(ctx context.Context, phase func(string)) (R, error)) (R, error) {
	var r R
	if _, err := s.find(ctx, name); err != nil {
		return r, err
	}
	err := s.track(ctx, kind, name, func(ctx context.Context, phase func(string)) error {
		var err error
		r, err = fn(ctx, phase)
		return err
	})
	return r, err
}
