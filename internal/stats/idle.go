package stats

import (
	"context"
	"fmt"
	"time"
)

// activity is what keeps a VM from counting as idle.
type activity struct {
	last     time.Time // the latest API call naming it, or session end
	sessions int       // exec and ssh sessions open through the daemon
}

// Touch records API activity on the VM named name.
func (s *Service) Touch(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.touchLocked(name, s.cfg.Now())
}

func (s *Service) touchLocked(name string, now time.Time) {
	a := s.activity[name]
	if a == nil {
		a = &activity{}
		s.activity[name] = a
	}
	if now.After(a.last) {
		a.last = now
	}
}

// Session records a session (exec, ssh) open on the VM until end is
// called: a VM is never idle while one is.
func (s *Service) Session(name string) (end func()) {
	s.mu.Lock()
	s.touchLocked(name, s.cfg.Now())
	s.activity[name].sessions++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		a := s.activity[name]
		a.sessions--
		s.touchLocked(name, s.cfg.Now())
	}
}

// idleFor is how long t has been idle, and false while a session is open.
func (s *Service) idleFor(t Target, now time.Time) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := t.StartedAt
	if a := s.activity[t.Name]; a != nil {
		if a.sessions > 0 {
			return 0, false
		}
		if a.last.After(last) {
			last = a.last
		}
	}
	return now.Sub(last), true
}

// sweep stops VM t if it is idle past its auto-stop time. One that a
// lifecycle verb or operation holds is left for the next sweep.
func (s *Service) sweep(ctx context.Context, t Target) {
	if t.AutoStop <= 0 {
		return
	}
	idle, ok := s.idleFor(t, s.cfg.Now())
	if !ok || idle < t.AutoStop {
		return
	}
	reason := fmt.Sprintf("stopped automatically: idle for %s (auto-stop after %s)", idle.Round(time.Second), t.AutoStop)
	act, verb := s.cfg.VMs.AutoStop, "stopped"
	if t.Suspend && s.cfg.Suspends {
		reason = fmt.Sprintf("suspended automatically: idle for %s (auto-stop after %s); exec, ssh or a connection to a forwarded port resume it",
			idle.Round(time.Second), t.AutoStop)
		act, verb = s.cfg.VMs.AutoSuspend, "suspended"
	}
	stopped, err := act(ctx, t.Name, reason)
	switch {
	case err != nil:
		s.cfg.Log.Error("auto-stopping an idle VM", "vm", t.Name, "action", verb, "err", err)
	case stopped:
		s.cfg.Log.Info("vm auto-"+verb, "vm", t.Name, "idle", idle.Round(time.Second), "auto_stop", t.AutoStop)
		s.mu.Lock()
		delete(s.activity, t.Name)
		s.mu.Unlock()
	default:
		s.cfg.Log.Debug("idle VM busy with an operation; not stopping it now", "vm", t.Name)
	}
}
