// Package client is the typed Go client of bangerd's API over its unix
// socket. The banger CLI uses nothing else to talk to the daemon.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// ErrDaemonNotRunning means nothing answers on the socket.
var ErrDaemonNotRunning = errors.New("bangerd is not running")

// ErrPermission means the socket exists but this user may not use it.
var ErrPermission = errors.New("permission denied on the bangerd socket")

// Client calls one daemon. Each call uses its own connection, so a Client is
// safe for concurrent use.
type Client struct {
	socket  string
	version string
}

// New returns a client of the daemon listening on socket. clientVersion is
// sent with every request so the daemon can name it in version errors.
func New(socket, clientVersion string) *Client {
	return &Client{socket: socket, version: clientVersion}
}

// Socket returns the socket path.
func (c *Client) Socket() string { return c.socket }

func (c *Client) dial(ctx context.Context) (*rpc.Conn, error) {
	conn, err := rpc.Dial(ctx, c.socket, c.version)
	switch {
	case err == nil:
		return conn, nil
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("%w (no daemon answers on %s); start it with `banger daemon start`", ErrDaemonNotRunning, c.socket)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return nil, fmt.Errorf("%w %s: add your user to the banger group (`sudo usermod -aG banger $USER`, then log in again)", ErrPermission, c.socket)
	default:
		return nil, fmt.Errorf("connecting to bangerd at %s: %w", c.socket, err)
	}
}

// Call performs one request. Daemon errors come back as *api.Error, which
// matches the api sentinels with errors.Is.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	return c.Stream(ctx, method, params, nil, result)
}

// Stream performs one request of a streaming method, passing each event to
// onEvent before the final result.
func (c *Client) Stream(ctx context.Context, method string, params any, onEvent func(json.RawMessage) error, result any) error {
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Call(ctx, method, params, onEvent, result)
}

// Ping checks that the daemon answers.
func (c *Client) Ping(ctx context.Context) error {
	var r api.PingResult
	return c.Call(ctx, api.MethodPing, nil, &r)
}

// Version returns the daemon's build.
func (c *Client) Version(ctx context.Context) (api.VersionResult, error) {
	var r api.VersionResult
	err := c.Call(ctx, api.MethodVersion, nil, &r)
	return r, err
}

// Shutdown asks the daemon to stop; it returns once the daemon accepted.
func (c *Client) Shutdown(ctx context.Context) (api.ShutdownResult, error) {
	var r api.ShutdownResult
	err := c.Call(ctx, api.MethodShutdown, nil, &r)
	return r, err
}

// DaemonInfo describes the daemon.
func (c *Client) DaemonInfo(ctx context.Context) (api.DaemonInfo, error) {
	var r api.DaemonInfo
	err := c.Call(ctx, api.MethodDaemonInfo, nil, &r)
	return r, err
}

// ConfigShow returns the daemon's effective configuration.
func (c *Client) ConfigShow(ctx context.Context) (api.ConfigShowResult, error) {
	var r api.ConfigShowResult
	err := c.Call(ctx, api.MethodConfigShow, nil, &r)
	return r, err
}

// Operations lists every operation the daemon tracks.
func (c *Client) Operations(ctx context.Context) ([]api.OperationSummary, error) {
	var r api.OperationsListResult
	err := c.Call(ctx, api.MethodOperationsList, nil, &r)
	return r.Operations, err
}

// Operation returns one operation.
func (c *Client) Operation(ctx context.Context, id string) (api.OperationSummary, error) {
	var r api.OperationSummary
	err := c.Call(ctx, api.MethodOperationsGet, api.OperationIDParams{ID: id}, &r)
	return r, err
}

// CancelOperation asks an operation to stop.
func (c *Client) CancelOperation(ctx context.Context, id string) (api.OperationSummary, error) {
	var r api.OperationSummary
	err := c.Call(ctx, api.MethodOperationsCancel, api.OperationIDParams{ID: id}, &r)
	return r, err
}

// WaitOperation blocks until the operation ends, calling onUpdate (when
// non-nil) as it progresses, and returns its final summary. An operation
// that failed is not an error of WaitOperation: check the summary's State.
func (c *Client) WaitOperation(ctx context.Context, id string, onUpdate func(api.OperationSummary)) (api.OperationSummary, error) {
	var r api.OperationSummary
	err := c.Stream(ctx, api.MethodOperationsWait, api.OperationIDParams{ID: id}, func(ev json.RawMessage) error {
		if onUpdate == nil {
			return nil
		}
		var s api.OperationSummary
		if err := json.Unmarshal(ev, &s); err != nil {
			return fmt.Errorf("decoding operation update: %w", err)
		}
		onUpdate(s)
		return nil
	}, &r)
	return r, err
}

// PullImage starts (or joins) a pull and returns its operation.
func (c *Client) PullImage(ctx context.Context, p api.ImagePullParams) (api.OperationSummary, error) {
	var r api.OperationSummary
	err := c.Call(ctx, api.MethodImagePull, p, &r)
	return r, err
}

// ImportImage starts an import and returns its operation.
func (c *Client) ImportImage(ctx context.Context, p api.ImageImportParams) (api.OperationSummary, error) {
	var r api.OperationSummary
	err := c.Call(ctx, api.MethodImageImport, p, &r)
	return r, err
}

// Images lists images.
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	var r api.ImageListResult
	err := c.Call(ctx, api.MethodImageList, nil, &r)
	return r.Images, err
}

// Image returns one image by name or ID prefix.
func (c *Client) Image(ctx context.Context, name string) (api.Image, error) {
	var r api.Image
	err := c.Call(ctx, api.MethodImageShow, api.ImageRefParams{Name: name}, &r)
	return r, err
}

// DeleteImage deletes an image.
func (c *Client) DeleteImage(ctx context.Context, p api.ImageDeleteParams) (api.ImageDeleteResult, error) {
	var r api.ImageDeleteResult
	err := c.Call(ctx, api.MethodImageDelete, p, &r)
	return r, err
}

// PruneImageCache empties the blob cache, or says what that would free.
func (c *Client) PruneImageCache(ctx context.Context, dryRun bool) (api.ImageCachePruneResult, error) {
	var r api.ImageCachePruneResult
	err := c.Call(ctx, api.MethodImageCachePrune, api.ImageCachePruneParams{DryRun: dryRun}, &r)
	return r, err
}

// ImportKernel starts a kernel import and returns its operation.
func (c *Client) ImportKernel(ctx context.Context, p api.KernelImportParams) (api.OperationSummary, error) {
	var r api.OperationSummary
	err := c.Call(ctx, api.MethodKernelImport, p, &r)
	return r, err
}

// Kernels lists kernels, newest first.
func (c *Client) Kernels(ctx context.Context) ([]api.Kernel, error) {
	var r api.KernelListResult
	err := c.Call(ctx, api.MethodKernelList, nil, &r)
	return r.Kernels, err
}

// Kernel returns one kernel by name, ID prefix or "default".
func (c *Client) Kernel(ctx context.Context, name string) (api.Kernel, error) {
	var r api.Kernel
	err := c.Call(ctx, api.MethodKernelShow, api.KernelRefParams{Name: name}, &r)
	return r, err
}

// DeleteKernel deletes a kernel.
func (c *Client) DeleteKernel(ctx context.Context, name string) (api.KernelDeleteResult, error) {
	var r api.KernelDeleteResult
	err := c.Call(ctx, api.MethodKernelDelete, api.KernelRefParams{Name: name}, &r)
	return r, err
}

// BootTest boots a throwaway VM and reports its timings.
func (c *Client) BootTest(ctx context.Context, p api.BootTestParams) (api.BootTestResult, error) {
	var r api.BootTestResult
	err := c.Call(ctx, api.MethodVMBootTest, p, &r)
	return r, err
}

// PullKernel starts a kernel pull and returns its operation.
func (c *Client) PullKernel(ctx context.Context, p api.KernelPullParams) (api.OperationSummary, error) {
	var r api.OperationSummary
	err := c.Call(ctx, api.MethodKernelPull, p, &r)
	return r, err
}

// PushKernel publishes a kernel to a registry.
func (c *Client) PushKernel(ctx context.Context, p api.KernelPushParams) (api.KernelPushResult, error) {
	var r api.KernelPushResult
	err := c.Call(ctx, api.MethodKernelPush, p, &r)
	return r, err
}

// CreateVM starts the vm.create operation.
func (c *Client) CreateVM(ctx context.Context, p api.VMCreateParams) (api.OperationSummary, error) {
	var r api.OperationSummary
	err := c.Call(ctx, api.MethodVMCreate, p, &r)
	return r, err
}

// StartVM boots a stopped VM.
func (c *Client) StartVM(ctx context.Context, name string) (api.VM, error) {
	var r api.VM
	err := c.Call(ctx, api.MethodVMStart, api.VMRefParams{Name: name}, &r)
	return r, err
}

// StopVM powers a VM off.
func (c *Client) StopVM(ctx context.Context, p api.VMStopParams) (api.VM, error) {
	var r api.VM
	err := c.Call(ctx, api.MethodVMStop, p, &r)
	return r, err
}

// RestartVM stops and starts a VM.
func (c *Client) RestartVM(ctx context.Context, name string) (api.VM, error) {
	var r api.VM
	err := c.Call(ctx, api.MethodVMRestart, api.VMRefParams{Name: name}, &r)
	return r, err
}

// DeleteVM removes a VM.
func (c *Client) DeleteVM(ctx context.Context, p api.VMDeleteParams) (api.VM, error) {
	var r api.VM
	err := c.Call(ctx, api.MethodVMDelete, p, &r)
	return r, err
}

// VMs lists every VM.
func (c *Client) VMs(ctx context.Context) ([]api.VM, error) {
	var r api.VMListResult
	err := c.Call(ctx, api.MethodVMList, nil, &r)
	return r.VMs, err
}

// VM shows one VM.
func (c *Client) VM(ctx context.Context, name string) (api.VM, error) {
	var r api.VM
	err := c.Call(ctx, api.MethodVMShow, api.VMRefParams{Name: name}, &r)
	return r, err
}

// ExecVM runs a command in a VM, handing its output to onOutput as it
// comes.
func (c *Client) ExecVM(ctx context.Context, p api.VMExecParams, onOutput func(api.VMExecEvent) error) (api.VMExecResult, error) {
	var r api.VMExecResult
	err := c.Stream(ctx, api.MethodVMExec, p, func(raw json.RawMessage) error {
		var ev api.VMExecEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			return fmt.Errorf("decoding exec output: %w", err)
		}
		return onOutput(ev)
	}, &r)
	return r, err
}

// VMLogs reads a VM's console; with p.Follow, onChunk receives it and
// what follows until ctx ends.
func (c *Client) VMLogs(ctx context.Context, p api.VMLogsParams, onChunk func(string) error) (api.VMLogsResult, error) {
	var r api.VMLogsResult
	err := c.Stream(ctx, api.MethodVMLogs, p, func(raw json.RawMessage) error {
		var ev api.VMLogsResult
		if err := json.Unmarshal(raw, &ev); err != nil {
			return fmt.Errorf("decoding the console: %w", err)
		}
		return onChunk(ev.Console)
	}, &r)
	return r, err
}

// SetVM changes a VM's sizes and settings.
func (c *Client) SetVM(ctx context.Context, p api.VMSetParams) (api.VM, error) {
	var r api.VM
	err := c.Call(ctx, api.MethodVMSet, p, &r)
	return r, err
}

// KillVM signals a VM's VMM.
func (c *Client) KillVM(ctx context.Context, p api.VMKillParams) (api.VM, error) {
	var r api.VM
	err := c.Call(ctx, api.MethodVMKill, p, &r)
	return r, err
}

// PruneVMs deletes stopped and failed VMs.
func (c *Client) PruneVMs(ctx context.Context) (api.VMPruneResult, error) {
	var r api.VMPruneResult
	err := c.Call(ctx, api.MethodVMPrune, nil, &r)
	return r, err
}

// VMSSH checks that a VM can be reached by ssh and says how.
func (c *Client) VMSSH(ctx context.Context, name string) (api.VMSSHInfo, error) {
	var r api.VMSSHInfo
	err := c.Call(ctx, api.MethodVMSSH, api.VMRefParams{Name: name}, &r)
	return r, err
}

// SSHProxy opens a byte stream to a VM's SSH server, through the daemon
// and the VM's agent.
func (c *Client) SSHProxy(ctx context.Context, name string) (io.ReadWriteCloser, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	stream, err := conn.Upgrade(ctx, api.MethodVMSSHProxy, api.VMRefParams{Name: name}, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return stream, nil
}

// VMStats is the stats poller's latest sample of a VM.
func (c *Client) VMStats(ctx context.Context, name string) (api.VMStats, error) {
	var r api.VMStats
	err := c.Call(ctx, api.MethodVMStats, api.VMRefParams{Name: name}, &r)
	return r, err
}

// VMStatsAll is the latest sample of every running VM.
func (c *Client) VMStatsAll(ctx context.Context) (api.VMStatsList, error) {
	var r api.VMStatsList
	err := c.Call(ctx, api.MethodVMStatsAll, nil, &r)
	return r, err
}

// VMHealth pings a VM's agent and says how it answered.
func (c *Client) VMHealth(ctx context.Context, name string) (api.VMHealth, error) {
	var r api.VMHealth
	err := c.Call(ctx, api.MethodVMHealth, api.VMRefParams{Name: name}, &r)
	return r, err
}

// VMPing pings a VM's agent.
func (c *Client) VMPing(ctx context.Context, name string) (api.VMHealth, error) {
	var r api.VMHealth
	err := c.Call(ctx, api.MethodVMPing, api.VMRefParams{Name: name}, &r)
	return r, err
}

// VMPorts lists a VM's listening ports, probed, optionally forwarded.
func (c *Client) VMPorts(ctx context.Context, p api.VMPortsParams) (api.VMPortsResult, error) {
	var r api.VMPortsResult
	err := c.Call(ctx, api.MethodVMPorts, p, &r)
	return r, err
}

// workspaceCall runs a streaming workspace method, passing each progress
// event to onProgress.
func (c *Client) workspaceCall(ctx context.Context, method string, params any, onProgress func(api.WorkspaceProgress), result any) error {
	return c.Stream(ctx, method, params, func(raw json.RawMessage) error {
		var p api.WorkspaceProgress
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		if onProgress != nil {
			onProgress(p)
		}
		return nil
	}, result)
}

// PrepareWorkspace places a host tree in a running VM.
func (c *Client) PrepareWorkspace(ctx context.Context, p api.WorkspacePrepareParams, onProgress func(api.WorkspaceProgress)) (api.WorkspacePrepareResult, error) {
	var r api.WorkspacePrepareResult
	err := c.workspaceCall(ctx, api.MethodVMWorkspacePrepare, p, onProgress, &r)
	return r, err
}

// WorkspaceStatus says what changed on each side since the last sync.
func (c *Client) WorkspaceStatus(ctx context.Context, p api.WorkspaceRefParams) (api.WorkspaceStatus, error) {
	var r api.WorkspaceStatus
	err := c.Call(ctx, api.MethodVMWorkspaceStatus, p, &r)
	return r, err
}

// PullWorkspace brings the guest's changes to the host.
func (c *Client) PullWorkspace(ctx context.Context, p api.WorkspaceRefParams, onProgress func(api.WorkspaceProgress)) (api.WorkspaceSyncResult, error) {
	var r api.WorkspaceSyncResult
	err := c.workspaceCall(ctx, api.MethodVMWorkspacePull, p, onProgress, &r)
	return r, err
}

// PushWorkspace sends the host's changes to the guest.
func (c *Client) PushWorkspace(ctx context.Context, p api.WorkspaceRefParams, onProgress func(api.WorkspaceProgress)) (api.WorkspaceSyncResult, error) {
	var r api.WorkspaceSyncResult
	err := c.workspaceCall(ctx, api.MethodVMWorkspacePush, p, onProgress, &r)
	return r, err
}

// ExportWorkspace is a git patch of the guest's changes.
func (c *Client) ExportWorkspace(ctx context.Context, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error) {
	var r api.WorkspaceExportResult
	err := c.Call(ctx, api.MethodVMWorkspaceExport, p, &r)
	return r, err
}
