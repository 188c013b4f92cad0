package vm

// What the other services (stats, workspace) ask of the VM service, and
// the ssh verbs.

import (
	"context"
	"net"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/store"
)

// Agent is the agent link of the running VM named name: api.ErrNotFound
// or api.ErrNotRunning otherwise.
func (s *Service) Agent(ctx context.Context, name string) (*client.Client, error) {
	_, c, err := s.vmms.running(ctx, name)
	return c, err
}

// Awake is Agent for a user's call: a suspended VM is resumed first.
func (s *Service) Awake(ctx context.Context, name string) (*client.Client, error) {
	_, c, err := s.saved.awake(ctx, name)
	return c, err
}

// AutoStop stops the running VM named name gracefully, recording reason,
// unless a lifecycle verb or operation holds it: then it reports false
// and leaves it alone.
func (s *Service) AutoStop(ctx context.Context, name, reason string) (bool, error) {
	return s.recs.whenFree(ctx, name, func(rec store.VM) error { return s.vmms.stop(ctx, rec, false, 0, reason) })
}

// AutoSuspend suspends the running VM named name, recording reason,
// unless a lifecycle verb or operation holds it: then it reports false
// and leaves it alone.
func (s *Service) AutoSuspend(ctx context.Context, name, reason string) (bool, error) {
	return s.recs.whenFree(ctx, name, func(rec store.VM) error { return s.saved.suspend(ctx, rec, reason) })
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
	return s.recs.setWorkspace(ctx, name, dir)
}

// StateDirOf is the state directory of the VM named name.
func (s *Service) StateDirOf(ctx context.Context, name string) (string, error) {
	rec, err := s.recs.find(ctx, name)
	if err != nil {
		return "", err
	}
	return s.recs.state(rec.ID), nil
}

// SSH says how OpenSSH reaches a running VM, and makes sure banger's
// known_hosts holds the VM's host key.
func (s *Service) SSH(ctx context.Context, p api.VMRefParams) (api.VMSSHInfo, error) {
	rec, c, err := s.saved.awake(ctx, p.Name)
	if err != nil {
		return api.VMSSHInfo{}, err
	}
	if err := s.keys.learn(ctx, rec.Name, c); err != nil {
		return api.VMSSHInfo{}, err
	}
	return api.VMSSHInfo{Name: rec.Name, User: "root", Host: sshHost(rec.Name),
		IdentityFile: s.cfg.SSH.IdentityFile, KnownHostsFile: s.cfg.SSH.KnownHostsFile, Dir: rec.Workspace}, nil
}

// DialSSH connects to a running VM's SSH server through its agent.
func (s *Service) DialSSH(ctx context.Context, p api.VMRefParams) (net.Conn, error) {
	_, c, err := s.saved.awake(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	return c.DialSSH(ctx)
}
