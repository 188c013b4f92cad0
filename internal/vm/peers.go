package vm

// What the other services (stats, workspace) ask of the VM service.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/store"
)

// Agent is the agent link of the running VM named name: api.ErrNotFound
// or api.ErrNotRunning otherwise.
func (s *Service) Agent(ctx context.Context, name string) (*client.Client, error) {
	_, c, err := s.running(ctx, name)
	return c, err
}

// AutoStop stops the running VM named name gracefully, recording reason,
// unless a lifecycle verb or operation holds it: then it reports false
// and leaves it alone.
func (s *Service) AutoStop(ctx context.Context, name, reason string) (bool, error) {
	return s.whenFree(ctx, name, func(rec store.VM) error { return s.stopWith(ctx, rec, false, 0, reason) })
}

// whenFree runs act on the running VM named name under its lock, unless
// a lifecycle verb or operation holds it (false, nothing done).
func (s *Service) whenFree(ctx context.Context, name string, act func(store.VM) error) (bool, error) {
	unlock, ok := s.tryLock(name)
	if !ok {
		return false, nil
	}
	defer unlock()
	rec, err := s.find(ctx, name)
	if err != nil || rec.State != api.VMRunning {
		return false, err
	}
	if err := act(rec); err != nil {
		return false, err
	}
	return true, nil
}

// AutoStopAfter is how long a VM with the auto-stop setting setting may
// stay idle: "" takes def (the config's), "0" never stops it.
func AutoStopAfter(setting string, def time.Duration) time.Duration {
	switch setting {
	case "":
		return def
	case "0":
		return 0
	}
	d, err := time.ParseDuration(setting)
	if err != nil {
		return 0 // validated on the way in; a broken record never stops
	}
	return d
}

// SetWorkspace records dir as the VM's workspace: exec and ssh start
// there.
func (s *Service) SetWorkspace(ctx context.Context, name, dir string) error {
	err := s.cfg.Store.Update(ctx, func(tx *store.Tx) error { return tx.SetVMWorkspace(ctx, name, dir) })
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("vm %q: %w", name, api.ErrNotFound)
	}
	return err
}

// StateDirOf is the state directory of the VM named name.
func (s *Service) StateDirOf(ctx context.Context, name string) (string, error) {
	rec, err := s.find(ctx, name)
	if err != nil {
		return "", err
	}
	return s.stateDir(rec.ID), nil
}
