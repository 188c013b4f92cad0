package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/diskspace"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/peer"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/workspace"
)

// handler is the uniform shape every method dispatches through.
type handler func(ctx context.Context, call *rpc.Call) rpc.Response

// method is one method bangerd serves: its handler, and how the daemon
// treats its calls.
type method struct {
	h handler
	// polled: a dashboard calls it over and over: logged at debug.
	polled bool
	// activity is what a call naming a VM does to the idle sweep.
	activity activity
	// upgrade: its connection becomes a byte stream (vm.ssh-proxy).
	upgrade bool
}

// activity is what a call naming a VM (by name or names) does to the
// idle sweep's clock.
type activity int

const (
	// none: reads (list, stats, ports, health, ping, logs, egress) leave
	// it alone, so a dashboard polling them keeps no VM awake.
	none activity = iota
	// touch: the call counts as use of the VMs it names.
	touch
	// session: the VM is busy until the call returns (exec, ssh, a
	// workspace transfer).
	session
)

// rpcMethods is the single source of truth for the methods bangerd
// serves: each entry is one of the wired services' methods, adapted by
// the helpers below for its shape, with its settings.
func rpcMethods(s *services) map[string]method {
	return map[string]method{
		api.MethodPing:               {h: anyParams(ping), polled: true},
		api.MethodShutdown:           {h: anyParams(s.daemon.shutdown)},
		api.MethodVersion:            {h: noParam(s.daemon.version)},
		api.MethodDaemonInfo:         {h: noParam(s.daemon.info)},
		api.MethodConfigShow:         {h: noParam(s.daemon.configShow)},
		api.MethodOperationsList:     {h: noParam(s.ops.List)},
		api.MethodOperationsGet:      {h: param(s.ops.Get), polled: true},
		api.MethodOperationsCancel:   {h: param(s.ops.Cancel)},
		api.MethodOperationsWait:     {h: stream(s.ops.Wait)},
		api.MethodImagePull:          {h: startOp(s.images.Pull)},
		api.MethodImageImport:        {h: startOp(s.images.Import)},
		api.MethodImageList:          {h: noParam(s.images.List)},
		api.MethodImageShow:          {h: param(s.images.Show)},
		api.MethodImageDelete:        {h: param(s.images.Delete)},
		api.MethodImageCachePrune:    {h: param(s.images.PruneCache)},
		api.MethodImageWarm:          {h: param(s.vms.Warm)},
		api.MethodE2BStatus:          {h: noParam(s.e2b.Status)},
		api.MethodE2BKeyCreate:       {h: param(s.e2b.CreateKey)},
		api.MethodE2BKeyList:         {h: noParam(s.e2b.ListKeys)},
		api.MethodE2BKeyRevoke:       {h: param(s.e2b.RevokeKey)},
		api.MethodE2BTemplateSet:     {h: param(s.e2b.SetTemplate)},
		api.MethodE2BTemplateList:    {h: noParam(s.e2b.Templates)},
		api.MethodE2BTemplateDelete:  {h: param(s.e2b.DeleteTemplate)},
		api.MethodImageTemplates:     {h: noParam(s.vms.Templates)},
		api.MethodKernelImport:       {h: startOp(s.kernels.Import)},
		api.MethodKernelList:         {h: noParam(s.kernels.List)},
		api.MethodKernelShow:         {h: param(s.kernels.Show)},
		api.MethodKernelDelete:       {h: param(s.kernels.Delete)},
		api.MethodKernelPull:         {h: startOp(s.kernels.Pull)},
		api.MethodKernelPush:         {h: param(s.kernels.Push)},
		api.MethodVMBootTest:         {h: param(s.bootCheck.Run), activity: touch},
		api.MethodVMCreate:           {h: startOp(s.creates.Create), activity: touch},
		api.MethodVMStart:            {h: param(s.vms.Start), activity: touch},
		api.MethodVMStop:             {h: param(s.vms.Stop), activity: touch},
		api.MethodVMRestart:          {h: param(s.vms.Restart), activity: touch},
		api.MethodVMSuspend:          {h: param(s.vms.Suspend), activity: touch},
		api.MethodVMResume:           {h: param(s.vms.Resume), activity: touch},
		api.MethodVMFork:             {h: param(s.vms.Fork), activity: touch},
		api.MethodVMSnapshotCreate:   {h: param(s.vms.SnapshotCreate), activity: touch},
		api.MethodVMSnapshotList:     {h: param(s.vms.SnapshotList), activity: touch},
		api.MethodVMSnapshotRestore:  {h: param(s.vms.SnapshotRestore), activity: touch},
		api.MethodVMSnapshotDelete:   {h: param(s.vms.SnapshotDelete), activity: touch},
		api.MethodVMDelete:           {h: param(s.vms.Delete), activity: touch},
		api.MethodVMList:             {h: noParam(s.vms.List)},
		api.MethodVMShow:             {h: param(s.vms.Show)},
		api.MethodVMExec:             {h: stream(s.vms.Exec), activity: session},
		api.MethodVMLogs:             {h: stream(s.vms.Logs)},
		api.MethodVMSet:              {h: param(s.vms.Set), activity: touch},
		api.MethodVMKill:             {h: param(s.vms.Kill), activity: touch},
		api.MethodVMPrune:            {h: noParam(s.vms.Prune), activity: touch},
		api.MethodVMSSH:              {h: param(s.vms.SSH), activity: touch},
		api.MethodVMSSHProxy:         {h: upgrade(s.vms.DialSSH), activity: session, upgrade: true},
		api.MethodVMStats:            {h: param(s.stats.Stats), polled: true},
		api.MethodVMStatsAll:         {h: noParam(s.stats.StatsAll), polled: true},
		api.MethodVMHealth:           {h: param(s.stats.Health), polled: true},
		api.MethodVMPing:             {h: param(s.stats.Health), polled: true},
		api.MethodVMPorts:            {h: param(s.stats.Ports)},
		api.MethodVMFileRead:         {h: param(s.files.Read), activity: touch},
		api.MethodVMFileWrite:        {h: param(s.files.Write), activity: touch},
		api.MethodVMFS:               {h: param(s.files.FS), activity: touch},
		api.MethodVMWorkspacePrepare: {h: progress(s.workspace.Prepare), activity: session},
		api.MethodVMWorkspaceStatus:  {h: param(s.workspace.Status), activity: touch},
		api.MethodVMWorkspacePull:    {h: progress(s.workspace.Pull), activity: session},
		api.MethodVMWorkspacePush:    {h: progress(s.workspace.Push), activity: session},
		api.MethodVMWorkspaceExport:  {h: param(s.workspace.Export), activity: touch},
		api.MethodVMWorkspaceApply:   {h: param(s.workspace.Apply), activity: touch},
		api.MethodVMEgress:           {h: stream(s.egress.Events)},
		api.MethodVMEgressSuggest:    {h: param(s.egress.Suggest)},
		api.MethodEvents:             {h: stream(s.events.Stream)},
	}
}

// param adapts a call that takes params P and returns R: decode
// strictly, call, encode. Errors keep their sentinel's wire code.
func param[P, R any](fn func(context.Context, P) (R, error)) handler {
	return func(ctx context.Context, call *rpc.Call) rpc.Response {
		var p P
		if err := decodeParams(call.Method, call.Params, &p); err != nil {
			return fail(err)
		}
		return answer(fn(ctx, p))
	}
}

// noParam adapts a call without params. Params sent anyway are refused,
// so a client built for a newer daemon learns it early.
func noParam[R any](fn func(context.Context) (R, error)) handler {
	return func(ctx context.Context, call *rpc.Call) rpc.Response {
		if len(call.Params) > 0 && !bytes.Equal(bytes.TrimSpace(call.Params), []byte("{}")) {
			return fail(fmt.Errorf("%w: %s takes no params", api.ErrInvalidRequest, call.Method))
		}
		return answer(fn(ctx))
	}
}

// anyParams adapts a call that ignores whatever params come (ping and
// shutdown answer any client).
func anyParams[R any](fn func(context.Context) (R, error)) handler {
	return func(ctx context.Context, _ *rpc.Call) rpc.Response { return answer(fn(ctx)) }
}

// startOp adapts a call that starts an operation: the answer is its
// summary, and operations.wait follows it.
func startOp[P, T any](fn func(context.Context, P) (*opstate.Op[T], error)) handler {
	return param(func(ctx context.Context, p P) (api.OperationSummary, error) {
		op, err := fn(ctx, p)
		if err != nil {
			return api.OperationSummary{}, err
		}
		return summarize(op.Status()), nil
	})
}

// stream adapts a call that emits events E before its result.
func stream[P, E, R any](fn func(context.Context, P, func(E) error) (R, error)) handler {
	return func(ctx context.Context, call *rpc.Call) rpc.Response {
		var p P
		if err := decodeParams(call.Method, call.Params, &p); err != nil {
			return fail(err)
		}
		return answer(fn(ctx, p, func(e E) error { return call.Emit(e) }))
	}
}

// progress adapts a workspace transfer: its progress becomes events, at
// most one per 64 KiB or 500 files, so a fast transfer does not flood the
// client.
func progress[P, R any](fn func(context.Context, P, workspace.Progress) (R, error)) handler {
	return stream(func(ctx context.Context, p P, emit func(api.WorkspaceProgress) error) (R, error) {
		var last api.WorkspaceProgress
		return fn(ctx, p, func(p api.WorkspaceProgress) {
			if p.Phase == last.Phase && p.Done-last.Done < 64<<10 && p.Unit == "bytes" {
				return
			}
			if p.Phase == last.Phase && p.Unit == "files" && p.Done != p.Total && p.Done-last.Done < 500 {
				return
			}
			last = p
			_ = emit(p)
		})
	})
}

// upgrade adapts a method whose connection becomes a byte stream to what
// dial opens: checks first (distinct codes), then the bytes both ways
// until either end hangs up.
func upgrade[P any](dial func(context.Context, P) (net.Conn, error)) handler {
	return func(ctx context.Context, call *rpc.Call) rpc.Response {
		var p P
		if err := decodeParams(call.Method, call.Params, &p); err != nil {
			return fail(err)
		}
		conn, err := dial(ctx, p)
		if err != nil {
			return fail(err)
		}
		defer conn.Close()
		stream, err := call.Upgrade(struct{}{})
		if err != nil {
			return fail(err)
		}
		go func() {
			_, _ = io.Copy(conn, stream) // the client's bytes, until it hangs up
			conn.Close()
		}()
		_, _ = io.Copy(stream, conn)
		// Returning closes the client's connection, which ends the copy above.
		return rpc.Response{}
	}
}

// fail is every handler's error reply: one that ran out of space names
// the file system it ran out on.
func fail(err error) rpc.Response { return rpc.Error(diskspace.Explain(err)) }

func answer[R any](r R, err error) rpc.Response {
	if err != nil {
		return fail(err)
	}
	return rpc.Result(r)
}

// dispatch checks the protocol version and routes a call to its handler.
func (d *Daemon) dispatch(ctx context.Context, call *rpc.Call) rpc.Response {
	if call.V != api.ProtocolVersion {
		client := call.Client
		if client == "" {
			client = "unknown version"
		}
		return fail(fmt.Errorf("%w: client (banger %s) speaks protocol %d, daemon (bangerd %s) speaks protocol %d; "+
			"use the banger binary that matches the daemon, or restart the daemon with the new one (`banger daemon stop && banger daemon start`)",
			api.ErrVersionMismatch, client, call.V, d.build.Version, api.ProtocolVersion))
	}
	m, ok := d.methods[call.Method]
	if !ok {
		return fail(fmt.Errorf("%w %q; this daemon (bangerd %s) serves: %s",
			api.ErrUnknownMethod, call.Method, d.build.Version, strings.Join(slices.Sorted(maps.Keys(d.methods)), ", ")))
	}
	d.logCall(ctx, m, call.Method, call.ID, call.Caller)
	defer d.activity(m.activity, call.Params)()
	return m.h(ctx, call)
}

// activity records a call on the VMs it names, for the idle sweep, as
// its method's activity says, and returns what ends it.
func (d *Daemon) activity(a activity, params json.RawMessage) (end func()) {
	end = func() {}
	if a == none {
		return end
	}
	var ref struct {
		Name  string   `json:"name"`
		Names []string `json:"names"`
	}
	if json.Unmarshal(params, &ref) != nil {
		return end
	}
	if a == session && ref.Name != "" {
		return d.svc.stats.Session(ref.Name)
	}
	for _, n := range append(ref.Names, ref.Name) {
		if n != "" {
			d.svc.stats.Touch(n)
		}
	}
	return end
}

// decodeParams decodes strictly: an unknown field is a client bug (or a
// client newer than the daemon) and is reported rather than ignored.
func decodeParams(method string, raw json.RawMessage, p any) error {
	if len(raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		return fmt.Errorf("%w: params of %s: %v", api.ErrInvalidRequest, method, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: params of %s: trailing data", api.ErrInvalidRequest, method)
	}
	return nil
}

// logCall logs a call with its caller: at info, but for the methods a
// dashboard calls over and over, at debug.
func (d *Daemon) logCall(ctx context.Context, m method, name string, id uint64, caller string) {
	level := slog.LevelInfo
	if m.polled {
		level = slog.LevelDebug
	}
	c, _ := peer.FromContext(ctx)
	attrs := []any{"method", name, "id", id, "uid", c.UID, "pid", c.PID}
	if caller != "" {
		attrs = append(attrs, "caller", caller)
	}
	d.log.Log(ctx, level, "call", attrs...)
}

// upgradable says whether method's connection becomes a byte stream.
func (d *Daemon) upgradable(method string) bool { return d.methods[method].upgrade }
