package daemon

// Adapters: each service declares what it needs of the VM and image
// services as a small interface; these give it that, converting types
// where the two speak differently (an agent link as the interface the
// consumer declares, a pull followed to its image).

import (
	"context"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/image"
	"github.com/bangerdev/banger/internal/stats"
	"github.com/bangerdev/banger/internal/vm"
	"github.com/bangerdev/banger/internal/workspace"
)

// vmImages is the image service as the VM service asks of it.
type vmImages struct{ images *image.Service }

func (v vmImages) Resolve(ctx context.Context, nameOrID string) (api.Image, error) {
	return v.images.Resolve(ctx, nameOrID)
}

// Pull pulls an image and waits for it, for a create whose image is not
// here yet.
func (v vmImages) Pull(ctx context.Context, ref string) (api.Image, error) {
	op, err := v.images.Pull(ctx, api.ImagePullParams{Ref: ref})
	if err != nil {
		return api.Image{}, err
	}
	select {
	case <-op.Done():
		return op.Result()
	case <-ctx.Done():
		return api.Image{}, ctx.Err()
	}
}

// linkAs gives a consumer an agent link as the interface I it declares;
// a failed lookup stays a nil interface (never a nil *client.Client in
// one).
func linkAs[I any](c *client.Client, err error, as func(*client.Client) I) (I, error) {
	if err != nil {
		var none I
		return none, err
	}
	return as(c), nil
}

// workspaceVMs is the VM service as the workspace service asks of it.
type workspaceVMs struct{ vms *vm.Service }

// Agent resumes a suspended VM first: a workspace call is a user's.
func (w workspaceVMs) Agent(ctx context.Context, name string) (workspace.Agent, error) {
	c, err := w.vms.Awake(ctx, name)
	return linkAs(c, err, func(c *client.Client) workspace.Agent { return c })
}

func (w workspaceVMs) StateDir(ctx context.Context, name string) (string, error) {
	return w.vms.StateDirOf(ctx, name)
}

func (w workspaceVMs) Placed(ctx context.Context, name, dir string) error {
	return w.vms.SetWorkspace(ctx, name, dir)
}

// Agent is a running VM's agent, for the stats service's polls.
func (t statsVMs) Agent(ctx context.Context, name string) (stats.Agent, error) {
	c, err := t.vms.Agent(ctx, name)
	return linkAs(c, err, func(c *client.Client) stats.Agent { return c })
}

// Wake is Agent for a connection to a forwarded port: a suspended VM is
// resumed first.
func (t statsVMs) Wake(ctx context.Context, name string) (stats.Agent, error) {
	c, err := t.vms.Awake(ctx, name)
	return linkAs(c, err, func(c *client.Client) stats.Agent { return c })
}

func (t statsVMs) AutoStop(ctx context.Context, name, reason string) (bool, error) {
	return t.vms.AutoStop(ctx, name, reason)
}

func (t statsVMs) AutoSuspend(ctx context.Context, name, reason string) (bool, error) {
	return t.vms.AutoSuspend(ctx, name, reason)
}
