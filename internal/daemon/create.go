package daemon

import (
	"context"
	"fmt"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/vm"
	"github.com/bangerdev/banger/internal/workspace"
)

// creatorVMs is what a create asks of the VM service: record the VM,
// run its phases, read it again once its workspace is placed.
type creatorVMs interface {
	Create(ctx context.Context, p api.VMCreateParams) (vm.Creation, error)
	Build(ctx context.Context, phase func(string), c vm.Creation) (api.VM, error)
	Show(ctx context.Context, p api.VMRefParams) (api.VM, error)
}

// creator runs vm.create as one operation: the VM service's create, then,
// for a create with a workspace, the workspace service's placement.
// Orchestrated here so that neither service calls the other: the
// workspace service sits on the VM service, and placing a workspace is a
// step after the VM is up, outside the VM's lock.
type creator struct {
	vms     creatorVMs
	place   func(context.Context, api.WorkspacePrepareParams, workspace.Progress) (api.WorkspacePrepareResult, error)
	session func(name string) (end func()) // keeps the VM from counting as idle
	// hostTree refuses a workspace the caller may not have the daemon
	// read (checked here, with the request's caller: the placement runs
	// in the operation, after the request).
	hostTree func(ctx context.Context, path, what string) error
	ops      *opstate.Registry[api.VM]
	// lifetime is the parent of every create: it ends with the daemon.
	lifetime context.Context
}

// Create checks p, records the VM (errors come back at once, before any
// work) and starts the operation.
func (c *creator) Create(ctx context.Context, p api.VMCreateParams) (*opstate.Op[api.VM], error) {
	if p.Workspace != nil {
		if p.NoStart {
			return nil, fmt.Errorf("%w: a workspace is placed in a running VM; drop --no-start, or prepare it after `banger vm start` (`banger vm workspace prepare`)", api.ErrInvalidArgument)
		}
		if c.hostTree != nil {
			if err := c.hostTree(ctx, p.Workspace.Path, "a workspace"); err != nil {
				return nil, err
			}
		}
		if err := workspace.Check(*p.Workspace); err != nil {
			return nil, err
		}
	}
	cr, err := c.vms.Create(ctx, p)
	if err != nil {
		return nil, err
	}
	return c.ops.Start(c.lifetime, api.OpKindVMCreate, cr.Name(), func(ctx context.Context, op *opstate.Op[api.VM]) (api.VM, error) {
		v, err := c.vms.Build(ctx, op.SetPhase, cr)
		if err != nil || p.Workspace == nil {
			return v, err
		}
		op.SetPhase("placing workspace")
		defer c.session(v.Name)()
		ws := *p.Workspace
		if _, err := c.place(ctx, api.WorkspacePrepareParams{Name: v.Name, WorkspaceSpec: ws}, func(api.WorkspaceProgress) {}); err != nil {
			return api.VM{}, fmt.Errorf("vm %s is up, but its workspace was not placed: %w; try again with `banger vm workspace prepare %s %s`", v.Name, err, v.Name, ws.Path)
		}
		return c.vms.Show(ctx, api.VMRefParams{Name: v.Name})
	}), nil
}
