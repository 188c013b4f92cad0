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

// rpcHandlers is the single source of truth for the methods bangerd
// serves: each entry is one of the wired services' methods, adapted by
// the helpers below for its shape.
func rpcHandlers(s *services) map[string]handler {
	return map[string]handler{
		api.MethodPing:               anyParams(ping),
		api.MethodShutdown:           anyParams(s.daemon.shutdown),
		api.MethodVersion:            noParam(s.daemon.version),
		api.MethodDaemonInfo:         noParam(s.daemon.info),
		api.MethodConfigShow:         noParam(s.daemon.configShow),
		api.MethodOperationsList:     noParam(s.ops.List),
		api.MethodOperationsGet:      param(s.ops.Get),
		api.MethodOperationsCancel:   param(s.ops.Cancel),
		api.MethodOperationsWait:     stream(s.ops.Wait),
		api.MethodImagePull:          startOp(s.images.Pull),
		api.MethodImageImport:        startOp(s.images.Import),
		api.MethodImageList:          noParam(s.images.List),
		api.MethodImageShow:          param(s.images.Show),
		api.MethodImageDelete:        param(s.images.Delete),
		api.MethodImageCachePrune:    param(s.images.PruneCache),
		api.MethodImageWarm:          param(s.vms.Warm),
		api.MethodImageTemplates:     noParam(s.vms.Templates),
		api.MethodKernelImport:       startOp(s.kernels.Import),
		api.MethodKernelList:         noParam(s.kernels.List),
		api.MethodKernelShow:         param(s.kernels.Show),
		api.MethodKernelDelete:       param(s.kernels.Delete),
		api.MethodKernelPull:         startOp(s.kernels.Pull),
		api.MethodKernelPush:         param(s.kernels.Push),
		api.MethodVMBootTest:         param(s.bootCheck.Run),
		api.MethodVMCreate:           startOp(s.creates.Create),
		api.MethodVMStart:            param(s.vms.Start),
		api.MethodVMStop:             param(s.vms.Stop),
		api.MethodVMRestart:          param(s.vms.Restart),
		api.MethodVMSuspend:          param(s.vms.Suspend),
		api.MethodVMResume:           param(s.vms.Resume),
		api.MethodVMFork:             param(s.vms.Fork),
		api.MethodVMSnapshotCreate:   param(s.vms.SnapshotCreate),
		api.MethodVMSnapshotList:     param(s.vms.SnapshotList),
		api.MethodVMSnapshotRestore:  param(s.vms.SnapshotRestore),
		api.MethodVMSnapshotDelete:   param(s.vms.SnapshotDelete),
		api.MethodVMDelete:           param(s.vms.Delete),
		api.MethodVMList:             noParam(s.vms.List),
		api.MethodVMShow:             param(s.vms.Show),
		api.MethodVMExec:             stream(s.vms.Exec),
		api.MethodVMLogs:             stream(s.vms.Logs),
		api.MethodVMSet:              param(s.vms.Set),
		api.MethodVMKill:             param(s.vms.Kill),
		api.MethodVMPrune:            noParam(s.vms.Prune),
		api.MethodVMSSH:              param(s.vms.SSH),
		api.MethodVMSSHProxy:         upgrade(s.vms.DialSSH),
		api.MethodVMStats:            param(s.stats.Stats),
		api.MethodVMStatsAll:         noParam(s.stats.StatsAll),
		api.MethodVMHealth:           param(s.stats.Health),
		api.MethodVMPing:             param(s.stats.Health),
		api.MethodVMPorts:            param(s.stats.Ports),
		api.MethodVMWorkspacePrepare: progress(s.workspace.Prepare),
		api.MethodVMWorkspaceStatus:  param(s.workspace.Status),
		api.MethodVMWorkspacePull:    progress(s.workspace.Pull),
		api.MethodVMWorkspacePush:    progress(s.workspace.Push),
		api.MethodVMWorkspaceExport:  param(s.workspace.Export),
		api.MethodVMEgress:           stream(s.egress.Events),
		api.MethodVMEgressSuggest:    param(s.egress.Suggest),
		api.MethodEvents:             stream(s.events.Stream),
	}
}

// upgradable names the methods whose connection becomes a byte stream.
func upgradable(method string) bool { return method == api.MethodVMSSHProxy }

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
	h, ok := d.handlers[call.Method]
	if !ok {
		return fail(fmt.Errorf("%w %q; this daemon (bangerd %s) serves: %s",
			api.ErrUnknownMethod, call.Method, d.build.Version, strings.Join(slices.Sorted(maps.Keys(d.handlers)), ", ")))
	}
	d.logCall(ctx, call.Method, call.ID)
	defer d.activity(call.Method, call.Params)()
	return h(ctx, call)
}

// activity records a vm.* call on the VMs it names, for the idle sweep,
// and returns what ends it: a session (exec, ssh, a workspace transfer)
// keeps its VM busy until the call returns. Reads (list, stats, ports,
// health, ping, logs, egress) are left out: a dashboard polling them must not
// keep every VM awake.
func (d *Daemon) activity(method string, params json.RawMessage) (end func()) {
	end = func() {}
	if !strings.HasPrefix(method, "vm.") {
		return end
	}
	switch method {
	case api.MethodVMList, api.MethodVMShow, api.MethodVMStats, api.MethodVMStatsAll, api.MethodVMHealth,
		api.MethodVMPing, api.MethodVMPorts, api.MethodVMLogs, api.MethodVMEgress, api.MethodVMEgressSuggest:
		return end
	}
	var ref struct {
		Name  string   `json:"name"`
		Names []string `json:"names"`
	}
	if json.Unmarshal(params, &ref) != nil {
		return end
	}
	switch method {
	case api.MethodVMExec, api.MethodVMSSHProxy, api.MethodVMWorkspacePrepare, api.MethodVMWorkspacePull, api.MethodVMWorkspacePush:
		if ref.Name != "" {
			return d.svc.stats.Session(ref.Name)
		}
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
func (d *Daemon) logCall(ctx context.Context, method string, id uint64) {
	level := slog.LevelInfo
	switch method {
	case api.MethodPing, api.MethodVMStats, api.MethodVMStatsAll, api.MethodVMHealth, api.MethodVMPing, api.MethodOperationsGet:
		level = slog.LevelDebug
	}
	c, _ := peer.FromContext(ctx)
	d.log.Log(ctx, level, "call", "method", method, "id", id, "uid", c.UID, "pid", c.PID)
}
