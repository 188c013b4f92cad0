// Package mcp is banger's MCP server: the tools a coding agent uses to
// make sandboxes (banger VMs), run commands in them and throw them away,
// over the official Go SDK (github.com/modelcontextprotocol/go-sdk). It is
// a client of bangerd like the CLI: every call goes to the daemon of the
// user who runs it, named for the server ("mcp:NAME") in the daemon's log.
//
// A server sees only the VMs it created (their creator is "mcp:NAME"),
// unless it was started with All; it refuses by name what would pass its
// limits (how many sandboxes, how much memory).
package mcp

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/api"
)

// Daemon is what the server needs of bangerd; *client.Client is one.
type Daemon interface {
	CreateVM(ctx context.Context, p api.VMCreateParams) (api.OperationSummary, error)
	WaitOperation(ctx context.Context, id string, onUpdate func(api.OperationSummary)) (api.OperationSummary, error)
	VMs(ctx context.Context) ([]api.VM, error)
	VM(ctx context.Context, name string) (api.VM, error)
	DeleteVM(ctx context.Context, p api.VMDeleteParams) (api.VM, error)
	ExecVM(ctx context.Context, p api.VMExecParams, onOutput func(api.VMExecEvent) error) (api.VMExecResult, error)
	ConfigShow(ctx context.Context) (api.ConfigShowResult, error)
	VMPorts(ctx context.Context, p api.VMPortsParams) (api.VMPortsResult, error)
	VMEgress(ctx context.Context, p api.VMEgressParams, onEvent func(api.EgressEvent) error) error
	VMEgressSuggest(ctx context.Context, name string) (api.VMEgressSuggestResult, error)
	SetVM(ctx context.Context, p api.VMSetParams) (api.VM, error)
	CreateSnapshot(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error)
	ListSnapshots(ctx context.Context, name string) (api.SnapshotListResult, error)
	RestoreSnapshot(ctx context.Context, p api.VMSnapshotParams) (api.VM, error)
	ForkVM(ctx context.Context, p api.VMForkParams) (api.VMForkResult, error)
	VMLogs(ctx context.Context, p api.VMLogsParams, onChunk func(string) error) (api.VMLogsResult, error)
	ReadFile(ctx context.Context, p api.VMFileReadParams) (api.VMFileReadResult, error)
	WriteFile(ctx context.Context, p api.VMFileWriteParams) (api.VMFileWriteResult, error)
	FS(ctx context.Context, p api.VMFSParams) (api.VMFSResult, error)
	PrepareWorkspace(ctx context.Context, p api.WorkspacePrepareParams, onProgress func(api.WorkspaceProgress)) (api.WorkspacePrepareResult, error)
	PushWorkspace(ctx context.Context, p api.WorkspaceRefParams, onProgress func(api.WorkspaceProgress)) (api.WorkspaceSyncResult, error)
	WorkspaceStatus(ctx context.Context, p api.WorkspaceRefParams) (api.WorkspaceStatus, error)
	ExportWorkspace(ctx context.Context, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error)
	ApplyWorkspace(ctx context.Context, p api.WorkspaceApplyParams) (api.WorkspaceApplyResult, error)
}

// Options shape a server.
type Options struct {
	// Name is the server's identity: the VMs it creates record
	// "mcp:NAME" as their creator, and it sees only those. Lowercase
	// letters, digits, '.', '_' and '-'.
	Name string
	// All lets it see and touch every VM of the daemon.
	All bool
	// MaxSandboxes and MaxMemoryMiB bound what its VMs may add up to
	// (0: no bound).
	MaxSandboxes int
	MaxMemoryMiB int
	// Roots are the host directories workspace tools may take projects
	// from and write reviewed changes into (none: no host path at all).
	Roots []string
	// AllowEgressChanges lets egress_allow change an allow-list without
	// asking a person (a client that cannot ask, run by one who said yes
	// ahead).
	AllowEgressChanges bool
	// Version is banger's, told to clients.
	Version string
	Log     *slog.Logger
}

// Server serves banger's tools to MCP clients.
type Server struct {
	d     Daemon
	o     Options
	log   *slog.Logger
	srv   *sdk.Server
	procs processes
	roots []string // Roots, resolved
	diffs diffs
}

// New is a server over d.
func New(d Daemon, o Options) (*Server, error) {
	if err := validName(o.Name); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{d: d, o: o, log: o.Log.With("mcp", o.Name)}
	for _, r := range o.Roots {
		real, err := filepath.EvalSymlinks(r)
		if err == nil {
			real, err = filepath.Abs(real)
		}
		if err != nil {
			return nil, fmt.Errorf("--root %s: %w", r, err)
		}
		s.roots = append(s.roots, real)
	}
	s.srv = sdk.NewServer(&sdk.Implementation{Name: "banger", Title: "banger sandboxes", Version: o.Version}, &sdk.ServerOptions{
		Instructions: "Sandboxes are banger microVMs: a fresh Linux VM from an OCI image, root inside, isolated from the host. " +
			"Create one (sandbox_create), run commands in it (sandbox_exec), and delete it when done (sandbox_delete with confirm).",
		Logger: o.Log,
	})
	s.addSandboxTools()
	s.addExecTools()
	s.addProcessTools()
	s.addStateTools()
	s.addFileTools()
	s.addWorkspaceTools()
	s.addResources()
	return s, nil
}

// MCP is the SDK's server, for a transport to run.
func (s *Server) MCP() *sdk.Server { return s.srv }

// Creator is what the VMs this server creates record as their creator.
func (s *Server) Creator() string { return "mcp:" + s.o.Name }

// validName checks a server's name, which ends up in VM records and logs.
func validName(n string) error {
	if !api.ValidName(n) {
		return fmt.Errorf("%w: server name %q: use 1 to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit", api.ErrInvalidArgument, n)
	}
	return nil
}

// mine is the VM name names, if this server may touch it.
func (s *Server) mine(ctx context.Context, name string) (api.VM, error) {
	if name == "" {
		return api.VM{}, fmt.Errorf("%w: a sandbox name is required (sandbox_list names them)", api.ErrInvalidArgument)
	}
	v, err := s.d.VM(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	if !s.sees(v) {
		// Said, not hidden as "not found": the agent's user should learn why.
		return api.VM{}, fmt.Errorf("sandbox %s: %w: it was made by %s, and this server (%s) touches only its own; start `banger mcp --all` to reach every VM",
			name, api.ErrPermissionDenied, creatorOf(v), s.Creator())
	}
	return v, nil
}

func (s *Server) sees(v api.VM) bool { return s.o.All || v.Creator == s.Creator() }

func creatorOf(v api.VM) string {
	if v.Creator == "" {
		return "a person (banger vm create)"
	}
	return v.Creator
}

// visible lists the VMs this server may see.
func (s *Server) visible(ctx context.Context) ([]api.VM, error) {
	all, err := s.d.VMs(ctx)
	if err != nil {
		return nil, err
	}
	var vms []api.VM
	for _, v := range all {
		if s.sees(v) {
			vms = append(vms, v)
		}
	}
	return vms, nil
}

// progress sends a progress notification, when the client asked for
// them (a progress token on its call).
func progress(ctx context.Context, req *sdk.CallToolRequest, step float64, total float64, msg string) {
	if req == nil || req.Session == nil {
		return
	}
	token := req.Params.GetProgressToken()
	if token == nil {
		return
	}
	_ = req.Session.NotifyProgress(ctx, &sdk.ProgressNotificationParams{ProgressToken: token, Progress: step, Total: total, Message: msg})
}

// text is a result's short text beside its structured content.
func text(format string, args ...any) *sdk.CallToolResult {
	return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: fmt.Sprintf(format, args...)}}}
}
