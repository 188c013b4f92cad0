package daemon

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/e2b"
	"github.com/bangerdev/banger/internal/events"
	"github.com/bangerdev/banger/internal/vm"
)

// e2bVMs is what the E2B API asks of the VMs: a create runs as vm.create
// does (an operation, waited for), Guest is the awake VM's agent, and the
// rest are the VM service's own verbs.
type e2bVMs struct {
	*vm.Service
	creates  *creator
	lifetime context.Context
}

func (a e2bVMs) Create(ctx context.Context, p api.VMCreateParams) (api.VM, error) {
	op, err := a.creates.Create(ctx, p)
	if err != nil {
		return api.VM{}, err
	}
	// Waited for whatever the caller does, so that a create is never
	// left half made behind a client that gave up.
	select {
	case <-op.Done():
		return op.Result()
	case <-a.lifetime.Done():
		return api.VM{}, fmt.Errorf("creating vm %s: %w", p.Name, api.ErrCanceled)
	}
}

func (a e2bVMs) Guest(ctx context.Context, name string) (e2b.Guest, error) {
	c, err := a.Awake(ctx, name)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (a e2bVMs) Running(ctx context.Context, name string) (e2b.Guest, error) {
	c, err := a.Agent(ctx, name)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// wireE2B builds the E2B API over the VMs and their creates; it listens
// only when e2b.listen is set (serveE2B).
func (d *Daemon) wireE2B(m machines, p peers, bus *events.Bus) (*e2b.Service, error) {
	base := d.cfg.E2B.BaseImage
	if base == "" {
		base = d.cfg.DefaultImageName
	}
	svc, err := e2b.New(e2b.Options{
		Dir: filepath.Join(d.layout.StateDir, "e2b"), Listen: d.cfg.E2B.Listen, Domain: d.cfg.E2B.Domain, BaseImage: base,
		DefaultMemoryMiB: d.cfg.VMDefaults.MemoryMiB,
		VMs:              e2bVMs{Service: m.vms, creates: p.creates, lifetime: d.lifetime},
		Logger:           d.log.With("service", "e2b"),
	})
	if err != nil {
		return nil, err
	}
	// A sandbox's VM changed outside the API (banger vm delete, stop, start, suspend,
	// resume): the sandbox follows.
	for _, typ := range []string{api.EventVMDeleted, api.EventVMSuspended, api.EventVMResumed, api.EventVMStopped, api.EventVMStarted} {
		bus.On(typ, svc.VMEvent)
	}
	return svc, nil
}

// serveE2B listens on e2b.listen until the daemon stops. A listener that
// cannot be had is reported by `banger e2b status`, not fatal: the rest
// of the daemon serves on.
func (d *Daemon) serveE2B(ctx context.Context) {
	addr := d.cfg.E2B.Listen
	if addr == "" {
		return
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		d.svc.e2b.Failed(fmt.Errorf("listening on %s: %w (set e2b.listen to a free address)", addr, err))
		d.log.Error("e2b api not served", "listen", addr, "err", err)
		return
	}
	d.log.Info("e2b api listening", "addr", l.Addr().String())
	if err := d.svc.e2b.Serve(ctx, l); err != nil {
		d.log.Error("e2b api stopped", "err", err)
	}
}
