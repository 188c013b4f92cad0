// Package client is the supported Go client of bangerd, banger's daemon:
// every method of its API (docs/RPC.md) over the daemon's unix socket,
// with the request and result types of package api. The banger CLI uses
// nothing else to talk to the daemon.
//
// A Client is cheap and safe for concurrent use: each call opens its own
// connection. DefaultSocket finds the socket the CLI would use. Long work
// (CreateVM, PullImage, ImportKernel) starts an operation and returns its
// summary at once; WaitOperation follows it to its end, whose Result names
// what it made. Errors from the daemon are *api.Error values that match
// the sentinels of package api with errors.Is (api.ErrNotFound,
// api.ErrInUse, …); ErrDaemonNotRunning and ErrPermission say why a socket
// could not be reached.
//
// Versions: every request carries api.ProtocolVersion, and a daemon that
// speaks another answers api.ErrVersionMismatch naming both. The types and
// methods of this package change with the protocol: what would break a
// caller comes with a new protocol version, and within one version methods
// and fields are only added.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/paths"
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
	caller  string
}

// New returns a client of the daemon listening on socket. clientVersion is
// sent with every request so the daemon can name it in version errors.
func New(socket, clientVersion string) *Client {
	return &Client{socket: socket, version: clientVersion}
}

// WithCaller is a client whose calls say they are made for caller (an
// MCP server: "mcp:NAME"); the daemon logs it with each call's uid. It
// grants nothing: the daemon trusts the socket's peer, not this name.
func (c *Client) WithCaller(caller string) *Client {
	cc := *c
	cc.caller = caller
	return &cc
}

// DefaultSocket is the socket the banger CLI uses without --socket: the
// daemon of BANGER_HOME when it is set, else this user's daemon, else (when
// this user runs none) an installed system daemon's.
func DefaultSocket() (string, error) {
	home, _ := os.UserHomeDir()
	l, err := paths.Resolve(paths.Env{Getenv: os.Getenv, UID: os.Getuid(), HomeDir: home}, false)
	if err != nil {
		return "", err
	}
	sock := l.Socket()
	if l.Mode == paths.ModeUser {
		if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
			if _, err := os.Stat(paths.System().Socket()); err == nil {
				return paths.System().Socket(), nil
			}
		}
	}
	return sock, nil
}

// Socket returns the socket path.
func (c *Client) Socket() string { return c.socket }

func (c *Client) dial(ctx context.Context) (*rpc.Conn, error) {
	conn, err := rpc.Dial(ctx, c.socket, c.version)
	switch {
	case err == nil:
		conn.SetCaller(c.caller)
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

// call performs method and decodes its result as an R.
func call[R any](ctx context.Context, c *Client, method string, params any) (R, error) {
	var r R
	err := c.Call(ctx, method, params, &r)
	return r, err
}

// stream performs a streaming method, decoding each event as an E for
// onEvent and the result as an R.
func stream[E, R any](ctx context.Context, c *Client, method string, params any, onEvent func(E) error) (R, error) {
	var r R
	err := c.Stream(ctx, method, params, func(raw json.RawMessage) error {
		var ev E
		if err := json.Unmarshal(raw, &ev); err != nil {
			return fmt.Errorf("decoding an event of %s: %w", method, err)
		}
		return onEvent(ev)
	}, &r)
	return r, err
}

// Ping checks that the daemon answers.
func (c *Client) Ping(ctx context.Context) error {
	_, err := call[api.PingResult](ctx, c, api.MethodPing, nil)
	return err
}

// Version returns the daemon's build.
func (c *Client) Version(ctx context.Context) (api.VersionResult, error) {
	return call[api.VersionResult](ctx, c, api.MethodVersion, nil)
}

// Shutdown asks the daemon to stop; it returns once the daemon accepted.
func (c *Client) Shutdown(ctx context.Context) (api.ShutdownResult, error) {
	return call[api.ShutdownResult](ctx, c, api.MethodShutdown, nil)
}

// DaemonInfo describes the daemon.
func (c *Client) DaemonInfo(ctx context.Context) (api.DaemonInfo, error) {
	return call[api.DaemonInfo](ctx, c, api.MethodDaemonInfo, nil)
}

// ConfigShow returns the daemon's effective configuration.
func (c *Client) ConfigShow(ctx context.Context) (api.ConfigShowResult, error) {
	return call[api.ConfigShowResult](ctx, c, api.MethodConfigShow, nil)
}

// Operations lists every operation the daemon tracks.
func (c *Client) Operations(ctx context.Context) ([]api.OperationSummary, error) {
	r, err := call[api.OperationsListResult](ctx, c, api.MethodOperationsList, nil)
	return r.Operations, err
}

// Operation returns one operation.
func (c *Client) Operation(ctx context.Context, id string) (api.OperationSummary, error) {
	return call[api.OperationSummary](ctx, c, api.MethodOperationsGet, api.OperationIDParams{ID: id})
}

// CancelOperation asks an operation to stop.
func (c *Client) CancelOperation(ctx context.Context, id string) (api.OperationSummary, error) {
	return call[api.OperationSummary](ctx, c, api.MethodOperationsCancel, api.OperationIDParams{ID: id})
}

// WaitOperation blocks until the operation ends, calling onUpdate (when
// non-nil) as it progresses, and returns its final summary. An operation
// that failed is not an error of WaitOperation: check the summary's State.
func (c *Client) WaitOperation(ctx context.Context, id string, onUpdate func(api.OperationSummary)) (api.OperationSummary, error) {
	return stream[api.OperationSummary, api.OperationSummary](ctx, c, api.MethodOperationsWait, api.OperationIDParams{ID: id}, func(s api.OperationSummary) error {
		if onUpdate != nil {
			onUpdate(s)
		}
		return nil
	})
}

// PullImage starts (or joins) a pull and returns its operation.
func (c *Client) PullImage(ctx context.Context, p api.ImagePullParams) (api.OperationSummary, error) {
	return call[api.OperationSummary](ctx, c, api.MethodImagePull, p)
}

// ImportImage starts an import and returns its operation.
func (c *Client) ImportImage(ctx context.Context, p api.ImageImportParams) (api.OperationSummary, error) {
	return call[api.OperationSummary](ctx, c, api.MethodImageImport, p)
}

// Images lists images.
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	r, err := call[api.ImageListResult](ctx, c, api.MethodImageList, nil)
	return r.Images, err
}

// Image returns one image by name or ID prefix.
func (c *Client) Image(ctx context.Context, name string) (api.Image, error) {
	return call[api.Image](ctx, c, api.MethodImageShow, api.ImageRefParams{Name: name})
}

// DeleteImage deletes an image.
func (c *Client) DeleteImage(ctx context.Context, p api.ImageDeleteParams) (api.ImageDeleteResult, error) {
	return call[api.ImageDeleteResult](ctx, c, api.MethodImageDelete, p)
}

// PruneImageCache empties the blob cache, or says what that would free.
func (c *Client) PruneImageCache(ctx context.Context, dryRun bool) (api.ImageCachePruneResult, error) {
	return call[api.ImageCachePruneResult](ctx, c, api.MethodImageCachePrune, api.ImageCachePruneParams{DryRun: dryRun})
}

// ImportKernel starts a kernel import and returns its operation.
func (c *Client) ImportKernel(ctx context.Context, p api.KernelImportParams) (api.OperationSummary, error) {
	return call[api.OperationSummary](ctx, c, api.MethodKernelImport, p)
}

// Kernels lists kernels, newest first.
func (c *Client) Kernels(ctx context.Context) ([]api.Kernel, error) {
	r, err := call[api.KernelListResult](ctx, c, api.MethodKernelList, nil)
	return r.Kernels, err
}

// Kernel returns one kernel by name, ID prefix or "default".
func (c *Client) Kernel(ctx context.Context, name string) (api.Kernel, error) {
	return call[api.Kernel](ctx, c, api.MethodKernelShow, api.KernelRefParams{Name: name})
}

// DeleteKernel deletes a kernel.
func (c *Client) DeleteKernel(ctx context.Context, name string) (api.KernelDeleteResult, error) {
	return call[api.KernelDeleteResult](ctx, c, api.MethodKernelDelete, api.KernelRefParams{Name: name})
}

// BootTest boots a throwaway VM and reports its timings.
func (c *Client) BootTest(ctx context.Context, p api.BootTestParams) (api.BootTestResult, error) {
	return call[api.BootTestResult](ctx, c, api.MethodVMBootTest, p)
}

// PullKernel starts a kernel pull and returns its operation.
func (c *Client) PullKernel(ctx context.Context, p api.KernelPullParams) (api.OperationSummary, error) {
	return call[api.OperationSummary](ctx, c, api.MethodKernelPull, p)
}

// PushKernel publishes a kernel to a registry.
func (c *Client) PushKernel(ctx context.Context, p api.KernelPushParams) (api.KernelPushResult, error) {
	return call[api.KernelPushResult](ctx, c, api.MethodKernelPush, p)
}

// CreateVM starts the vm.create operation.
func (c *Client) CreateVM(ctx context.Context, p api.VMCreateParams) (api.OperationSummary, error) {
	return call[api.OperationSummary](ctx, c, api.MethodVMCreate, p)
}

// StartVM boots a stopped VM.
func (c *Client) StartVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMStart, api.VMRefParams{Name: name})
}

// StopVM powers a VM off.
func (c *Client) StopVM(ctx context.Context, p api.VMStopParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMStop, p)
}

// RestartVM stops and starts a VM.
func (c *Client) RestartVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMRestart, api.VMRefParams{Name: name})
}

// SuspendVM saves a running VM's memory and ends its VMM.
func (c *Client) SuspendVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMSuspend, api.VMRefParams{Name: name})
}

// ResumeVM brings a suspended VM back.
func (c *Client) ResumeVM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMResume, api.VMRefParams{Name: name})
}

// ForkVM makes running copies of a running VM.
func (c *Client) ForkVM(ctx context.Context, p api.VMForkParams) (api.VMForkResult, error) {
	return call[api.VMForkResult](ctx, c, api.MethodVMFork, p)
}

// CreateSnapshot checkpoints a running VM.
func (c *Client) CreateSnapshot(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
	return call[api.Snapshot](ctx, c, api.MethodVMSnapshotCreate, p)
}

// ListSnapshots lists a VM's checkpoints.
func (c *Client) ListSnapshots(ctx context.Context, name string) (api.SnapshotListResult, error) {
	return call[api.SnapshotListResult](ctx, c, api.MethodVMSnapshotList, api.VMRefParams{Name: name})
}

// RestoreSnapshot rolls a VM back to a checkpoint.
func (c *Client) RestoreSnapshot(ctx context.Context, p api.VMSnapshotParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMSnapshotRestore, p)
}

// DeleteSnapshot removes a checkpoint.
func (c *Client) DeleteSnapshot(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
	return call[api.Snapshot](ctx, c, api.MethodVMSnapshotDelete, p)
}

// Templates lists the templates creates start from.
func (c *Client) Templates(ctx context.Context) ([]api.Template, error) {
	r, err := call[api.TemplateListResult](ctx, c, api.MethodImageTemplates, nil)
	return r.Templates, err
}

// WarmImage makes the template of a VM shape.
func (c *Client) WarmImage(ctx context.Context, p api.ImageWarmParams) (api.Template, error) {
	return call[api.Template](ctx, c, api.MethodImageWarm, p)
}

// DeleteVM removes a VM.
func (c *Client) DeleteVM(ctx context.Context, p api.VMDeleteParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMDelete, p)
}

// VMs lists every VM.
func (c *Client) VMs(ctx context.Context) ([]api.VM, error) {
	r, err := call[api.VMListResult](ctx, c, api.MethodVMList, nil)
	return r.VMs, err
}

// VM shows one VM.
func (c *Client) VM(ctx context.Context, name string) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMShow, api.VMRefParams{Name: name})
}

// ExecVM runs a command in a VM, handing its output to onOutput as it
// comes.
func (c *Client) ExecVM(ctx context.Context, p api.VMExecParams, onOutput func(api.VMExecEvent) error) (api.VMExecResult, error) {
	return stream[api.VMExecEvent, api.VMExecResult](ctx, c, api.MethodVMExec, p, onOutput)
}

// VMLogs reads a VM's console; with p.Follow, onChunk receives it and
// what follows until ctx ends.
func (c *Client) VMLogs(ctx context.Context, p api.VMLogsParams, onChunk func(string) error) (api.VMLogsResult, error) {
	return stream[api.VMLogsResult, api.VMLogsResult](ctx, c, api.MethodVMLogs, p, func(ev api.VMLogsResult) error { return onChunk(ev.Console) })
}

// ApplyWorkspace applies an exported patch, as reviewed (its sha256), to
// the workspace's host tree.
func (c *Client) ApplyWorkspace(ctx context.Context, p api.WorkspaceApplyParams) (api.WorkspaceApplyResult, error) {
	return call[api.WorkspaceApplyResult](ctx, c, api.MethodVMWorkspaceApply, p)
}

// ReadFile reads a part of a file in a running VM (api.MaxFileRead bytes
// at most).
func (c *Client) ReadFile(ctx context.Context, p api.VMFileReadParams) (api.VMFileReadResult, error) {
	return call[api.VMFileReadResult](ctx, c, api.MethodVMFileRead, p)
}

// WriteFile replaces a file in a running VM whole.
func (c *Client) WriteFile(ctx context.Context, p api.VMFileWriteParams) (api.VMFileWriteResult, error) {
	return call[api.VMFileWriteResult](ctx, c, api.MethodVMFileWrite, p)
}

// FS does one file-system operation in a running VM: stat, list, mkdir,
// move, remove, glob or search.
func (c *Client) FS(ctx context.Context, p api.VMFSParams) (api.VMFSResult, error) {
	return call[api.VMFSResult](ctx, c, api.MethodVMFS, p)
}

// VMEgress sends a VM's outbound attempts to onEvent, oldest first;
// with p.Follow, what follows too until ctx ends.
func (c *Client) VMEgress(ctx context.Context, p api.VMEgressParams, onEvent func(api.EgressEvent) error) error {
	_, err := stream[api.EgressEvent, struct{}](ctx, c, api.MethodVMEgress, p, onEvent)
	return err
}

// Events streams the daemon's lifecycle events to onEvent; with
// p.Follow it ends only when ctx does or the daemon goes.
func (c *Client) Events(ctx context.Context, p api.EventsParams, onEvent func(api.Event) error) (api.EventsResult, error) {
	return stream[api.Event, api.EventsResult](ctx, c, api.MethodEvents, p, onEvent)
}

// VMEgressSuggest is the allow-list that would have allowed what a VM
// tried.
func (c *Client) VMEgressSuggest(ctx context.Context, name string) (api.VMEgressSuggestResult, error) {
	return call[api.VMEgressSuggestResult](ctx, c, api.MethodVMEgressSuggest, api.VMRefParams{Name: name})
}

// SetVM changes a VM's sizes and settings.
func (c *Client) SetVM(ctx context.Context, p api.VMSetParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMSet, p)
}

// KillVM signals a VM's VMM.
func (c *Client) KillVM(ctx context.Context, p api.VMKillParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMKill, p)
}

// PruneVMs deletes stopped and failed VMs.
func (c *Client) PruneVMs(ctx context.Context) (api.VMPruneResult, error) {
	return call[api.VMPruneResult](ctx, c, api.MethodVMPrune, nil)
}

// VMSSH checks that a VM can be reached by ssh and says how.
func (c *Client) VMSSH(ctx context.Context, name string) (api.VMSSHInfo, error) {
	return call[api.VMSSHInfo](ctx, c, api.MethodVMSSH, api.VMRefParams{Name: name})
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
	return call[api.VMStats](ctx, c, api.MethodVMStats, api.VMRefParams{Name: name})
}

// VMStatsAll is the latest sample of every running VM.
func (c *Client) VMStatsAll(ctx context.Context) (api.VMStatsList, error) {
	return call[api.VMStatsList](ctx, c, api.MethodVMStatsAll, nil)
}

// VMHealth pings a VM's agent and says how it answered.
func (c *Client) VMHealth(ctx context.Context, name string) (api.VMHealth, error) {
	return call[api.VMHealth](ctx, c, api.MethodVMHealth, api.VMRefParams{Name: name})
}

// VMPing pings a VM's agent.
func (c *Client) VMPing(ctx context.Context, name string) (api.VMHealth, error) {
	return call[api.VMHealth](ctx, c, api.MethodVMPing, api.VMRefParams{Name: name})
}

// VMPorts lists a VM's listening ports, probed, optionally forwarded.
func (c *Client) VMPorts(ctx context.Context, p api.VMPortsParams) (api.VMPortsResult, error) {
	return call[api.VMPortsResult](ctx, c, api.MethodVMPorts, p)
}

// workspaceCall runs a streaming workspace method, passing each progress
// event to onProgress.
func workspaceCall[R any](ctx context.Context, c *Client, method string, params any, onProgress func(api.WorkspaceProgress)) (R, error) {
	return stream[api.WorkspaceProgress, R](ctx, c, method, params, func(p api.WorkspaceProgress) error {
		if onProgress != nil {
			onProgress(p)
		}
		return nil
	})
}

// PrepareWorkspace places a host tree in a running VM.
func (c *Client) PrepareWorkspace(ctx context.Context, p api.WorkspacePrepareParams, onProgress func(api.WorkspaceProgress)) (api.WorkspacePrepareResult, error) {
	return workspaceCall[api.WorkspacePrepareResult](ctx, c, api.MethodVMWorkspacePrepare, p, onProgress)
}

// WorkspaceStatus says what changed on each side since the last sync.
func (c *Client) WorkspaceStatus(ctx context.Context, p api.WorkspaceRefParams) (api.WorkspaceStatus, error) {
	return call[api.WorkspaceStatus](ctx, c, api.MethodVMWorkspaceStatus, p)
}

// PullWorkspace brings the guest's changes to the host.
func (c *Client) PullWorkspace(ctx context.Context, p api.WorkspaceRefParams, onProgress func(api.WorkspaceProgress)) (api.WorkspaceSyncResult, error) {
	return workspaceCall[api.WorkspaceSyncResult](ctx, c, api.MethodVMWorkspacePull, p, onProgress)
}

// PushWorkspace sends the host's changes to the guest.
func (c *Client) PushWorkspace(ctx context.Context, p api.WorkspaceRefParams, onProgress func(api.WorkspaceProgress)) (api.WorkspaceSyncResult, error) {
	return workspaceCall[api.WorkspaceSyncResult](ctx, c, api.MethodVMWorkspacePush, p, onProgress)
}

// ExportWorkspace is a git patch of the guest's changes.
func (c *Client) ExportWorkspace(ctx context.Context, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error) {
	return call[api.WorkspaceExportResult](ctx, c, api.MethodVMWorkspaceExport, p)
}

// E2BStatus says whether the E2B API is served, and where.
func (c *Client) E2BStatus(ctx context.Context) (api.E2BStatus, error) {
	return call[api.E2BStatus](ctx, c, api.MethodE2BStatus, nil)
}

// CreateE2BKey makes an E2B API key; its secret is in the answer only.
func (c *Client) CreateE2BKey(ctx context.Context, p api.E2BKeyCreateParams) (api.E2BKeyCreateResult, error) {
	return call[api.E2BKeyCreateResult](ctx, c, api.MethodE2BKeyCreate, p)
}

// E2BKeys lists the E2B API keys.
func (c *Client) E2BKeys(ctx context.Context) ([]api.E2BKey, error) {
	r, err := call[api.E2BKeyListResult](ctx, c, api.MethodE2BKeyList, nil)
	return r.Keys, err
}

// RevokeE2BKey removes an E2B API key.
func (c *Client) RevokeE2BKey(ctx context.Context, id string) (api.E2BKey, error) {
	return call[api.E2BKey](ctx, c, api.MethodE2BKeyRevoke, api.E2BKeyRevokeParams{ID: id})
}

// SetE2BTemplate maps an E2B template name to an image and shape.
func (c *Client) SetE2BTemplate(ctx context.Context, t api.E2BTemplate) (api.E2BTemplate, error) {
	return call[api.E2BTemplate](ctx, c, api.MethodE2BTemplateSet, t)
}

// E2BTemplates lists the E2B template names and what they run.
func (c *Client) E2BTemplates(ctx context.Context) ([]api.E2BTemplate, error) {
	r, err := call[api.E2BTemplateListResult](ctx, c, api.MethodE2BTemplateList, nil)
	return r.Templates, err
}

// DeleteE2BTemplate removes an E2B template name.
func (c *Client) DeleteE2BTemplate(ctx context.Context, name string) (api.E2BTemplate, error) {
	return call[api.E2BTemplate](ctx, c, api.MethodE2BTemplateDelete, api.E2BTemplateDeleteParams{Name: name})
}
