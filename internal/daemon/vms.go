package daemon

import (
	"context"
	"io"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// The VM service's methods, adapted for the dispatch table.

func createVM(ctx context.Context, d *Daemon, p api.VMCreateParams) (api.OperationSummary, error) {
	op, err := d.vms.Create(ctx, p)
	if err != nil {
		return api.OperationSummary{}, err
	}
	return summarize(op.Status()), nil
}

func startVM(ctx context.Context, d *Daemon, p api.VMRefParams) (api.VM, error) {
	return d.vms.Start(ctx, p)
}

func stopVM(ctx context.Context, d *Daemon, p api.VMStopParams) (api.VM, error) {
	return d.vms.Stop(ctx, p)
}

func restartVM(ctx context.Context, d *Daemon, p api.VMRefParams) (api.VM, error) {
	return d.vms.Restart(ctx, p)
}

func deleteVM(ctx context.Context, d *Daemon, p api.VMDeleteParams) (api.VM, error) {
	return d.vms.Delete(ctx, p)
}

func listVMs(ctx context.Context, d *Daemon) (api.VMListResult, error) {
	return d.vms.List(ctx)
}

func showVM(ctx context.Context, d *Daemon, p api.VMRefParams) (api.VM, error) {
	return d.vms.Show(ctx, p)
}

// handleVMLogs answers with the console, or with follow streams it as
// events until the client hangs up.
func handleVMLogs(ctx context.Context, d *Daemon, call *rpc.Call) rpc.Response {
	var p api.VMLogsParams
	if err := decodeParams(call.Method, call.Params, &p); err != nil {
		return rpc.Error(err)
	}
	if !p.Follow {
		r, err := d.vms.Logs(ctx, p)
		if err != nil {
			return rpc.Error(err)
		}
		return rpc.Result(r)
	}
	err := d.vms.FollowLogs(ctx, p, func(chunk string) error { return call.Emit(api.VMLogsResult{Console: chunk}) })
	if err != nil {
		return rpc.Error(err)
	}
	return rpc.Result(api.VMLogsResult{})
}

func setVM(ctx context.Context, d *Daemon, p api.VMSetParams) (api.VM, error) {
	return d.vms.Set(ctx, p)
}

func killVM(ctx context.Context, d *Daemon, p api.VMKillParams) (api.VM, error) {
	return d.vms.Kill(ctx, p)
}

func pruneVMs(ctx context.Context, d *Daemon) (api.VMPruneResult, error) {
	return d.vms.Prune(ctx)
}

// handleVMExec streams the command's output as events, then its exit
// status.
func handleVMExec(ctx context.Context, d *Daemon, call *rpc.Call) rpc.Response {
	var p api.VMExecParams
	if err := decodeParams(call.Method, call.Params, &p); err != nil {
		return rpc.Error(err)
	}
	defer d.stats.Session(p.Name)()
	r, err := d.vms.Exec(ctx, p, func(ev api.VMExecEvent) error { return call.Emit(ev) })
	if err != nil {
		return rpc.Error(err)
	}
	return rpc.Result(r)
}

func vmSSH(ctx context.Context, d *Daemon, p api.VMRefParams) (api.VMSSHInfo, error) {
	return d.vms.SSH(ctx, p)
}

// handleVMSSHProxy joins the client's connection to the VM agent's SSH
// server: checks first (distinct codes), then the byte stream.
func handleVMSSHProxy(ctx context.Context, d *Daemon, call *rpc.Call) rpc.Response {
	var p api.VMRefParams
	if err := decodeParams(call.Method, call.Params, &p); err != nil {
		return rpc.Error(err)
	}
	conn, err := d.vms.DialSSH(ctx, p)
	if err != nil {
		return rpc.Error(err)
	}
	defer conn.Close()
	stream, err := call.Upgrade(struct{}{})
	if err != nil {
		return rpc.Error(err)
	}
	defer d.stats.Session(p.Name)() // an ssh session lasts as long as its proxy
	go func() {
		_, _ = io.Copy(conn, stream) // the client's bytes, until it hangs up
		conn.Close()
	}()
	_, _ = io.Copy(stream, conn)
	// Returning closes the client's connection, which ends the copy above.
	return rpc.Response{}
}

// upgradable names the methods whose connection becomes a byte stream.
func upgradable(method string) bool { return method == api.MethodVMSSHProxy }
