package daemon

import (
	"context"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/workspace"
)

// newWorkspace wires the workspace service to the VM service; it needs
// d.vms set.
func (d *Daemon) newWorkspace() *workspace.Service {
	return workspace.New(workspace.Config{
		Agent: func(ctx context.Context, name string) (workspace.Agent, error) {
			c, err := d.vms.Agent(ctx, name)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		StateDir: d.vms.StateDirOf,
		Placed:   d.vms.SetWorkspace,
		Log:      d.log.With("service", "workspace"),
	})
}

// placeWorkspace is the create operation's last phase.
func (d *Daemon) placeWorkspace(ctx context.Context, name string, spec api.WorkspaceSpec) error {
	_, err := d.workspace.Prepare(ctx, api.WorkspacePrepareParams{Name: name, WorkspaceSpec: spec}, func(api.WorkspaceProgress) {})
	return err
}

// progressEmitter turns a transfer's progress into events, at most one
// per 64 KiB or file step, so a fast transfer does not flood the client.
func progressEmitter(call *rpc.Call) workspace.Progress {
	var last api.WorkspaceProgress
	return func(p api.WorkspaceProgress) {
		if p.Phase == last.Phase && p.Done-last.Done < 64<<10 && p.Unit == "bytes" {
			return
		}
		if p.Phase == last.Phase && p.Unit == "files" && p.Done != p.Total && p.Done-last.Done < 500 {
			return
		}
		last = p
		_ = call.Emit(p)
	}
}

func handleWorkspacePrepare(ctx context.Context, d *Daemon, call *rpc.Call) rpc.Response {
	var p api.WorkspacePrepareParams
	if err := decodeParams(call.Method, call.Params, &p); err != nil {
		return rpc.Error(err)
	}
	defer d.stats.Session(p.Name)()
	r, err := d.workspace.Prepare(ctx, p, progressEmitter(call))
	if err != nil {
		return rpc.Error(err)
	}
	return rpc.Result(r)
}

func workspaceStatus(ctx context.Context, d *Daemon, p api.WorkspaceRefParams) (api.WorkspaceStatus, error) {
	return d.workspace.Status(ctx, p)
}

func handleWorkspacePull(ctx context.Context, d *Daemon, call *rpc.Call) rpc.Response {
	return workspaceSync(ctx, d, call, d.workspace.Pull)
}

func handleWorkspacePush(ctx context.Context, d *Daemon, call *rpc.Call) rpc.Response {
	return workspaceSync(ctx, d, call, d.workspace.Push)
}

func workspaceSync(ctx context.Context, d *Daemon, call *rpc.Call,
	sync func(context.Context, api.WorkspaceRefParams, workspace.Progress) (api.WorkspaceSyncResult, error)) rpc.Response {
	var p api.WorkspaceRefParams
	if err := decodeParams(call.Method, call.Params, &p); err != nil {
		return rpc.Error(err)
	}
	defer d.stats.Session(p.Name)()
	r, err := sync(ctx, p, progressEmitter(call))
	if err != nil {
		return rpc.Error(err)
	}
	return rpc.Result(r)
}

func workspaceExport(ctx context.Context, d *Daemon, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error) {
	return d.workspace.Export(ctx, p)
}
