package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// handler is the uniform shape every method dispatches through.
type handler func(ctx context.Context, d *Daemon, call *rpc.Call) rpc.Response

// paramHandler adapts a service call that takes params P and returns R:
// decode, call, encode. Errors keep their sentinel's wire code.
func paramHandler[P, R any](fn func(ctx context.Context, d *Daemon, p P) (R, error)) handler {
	return func(ctx context.Context, d *Daemon, call *rpc.Call) rpc.Response {
		var p P
		if err := decodeParams(call.Method, call.Params, &p); err != nil {
			return rpc.Error(err)
		}
		r, err := fn(ctx, d, p)
		if err != nil {
			return rpc.Error(err)
		}
		return rpc.Result(r)
	}
}

// noParamHandler adapts a service call without params. Params sent anyway
// are refused, so a client built for a newer daemon learns it early.
func noParamHandler[R any](fn func(ctx context.Context, d *Daemon) (R, error)) handler {
	return func(ctx context.Context, d *Daemon, call *rpc.Call) rpc.Response {
		if len(call.Params) > 0 && !bytes.Equal(bytes.TrimSpace(call.Params), []byte("{}")) {
			return rpc.Error(fmt.Errorf("%w: %s takes no params", api.ErrInvalidRequest, call.Method))
		}
		r, err := fn(ctx, d)
		if err != nil {
			return rpc.Error(err)
		}
		return rpc.Result(r)
	}
}

// rpcHandlers is the single source of truth for the methods bangerd serves.
// A fresh map per call keeps it free of shared mutable state.
func rpcHandlers() map[string]handler {
	return map[string]handler{
		api.MethodPing:               handlePing,
		api.MethodShutdown:           handleShutdown,
		api.MethodVersion:            noParamHandler(version),
		api.MethodDaemonInfo:         noParamHandler(daemonInfo),
		api.MethodConfigShow:         noParamHandler(configShow),
		api.MethodOperationsList:     noParamHandler(listOperations),
		api.MethodOperationsGet:      paramHandler(getOperation),
		api.MethodOperationsCancel:   paramHandler(cancelOperation),
		api.MethodOperationsWait:     handleOperationsWait,
		api.MethodImagePull:          paramHandler(pullImage),
		api.MethodImageImport:        paramHandler(importImage),
		api.MethodImageList:          noParamHandler(listImages),
		api.MethodImageShow:          paramHandler(showImage),
		api.MethodImageDelete:        paramHandler(deleteImage),
		api.MethodImageCachePrune:    paramHandler(pruneImageCache),
		api.MethodKernelImport:       paramHandler(importKernel),
		api.MethodKernelList:         noParamHandler(listKernels),
		api.MethodKernelShow:         paramHandler(showKernel),
		api.MethodKernelDelete:       paramHandler(deleteKernel),
		api.MethodKernelPull:         paramHandler(pullKernel),
		api.MethodKernelPush:         paramHandler(pushKernel),
		api.MethodVMBootTest:         paramHandler(bootTest),
		api.MethodVMCreate:           paramHandler(createVM),
		api.MethodVMStart:            paramHandler(startVM),
		api.MethodVMStop:             paramHandler(stopVM),
		api.MethodVMRestart:          paramHandler(restartVM),
		api.MethodVMDelete:           paramHandler(deleteVM),
		api.MethodVMList:             noParamHandler(listVMs),
		api.MethodVMShow:             paramHandler(showVM),
		api.MethodVMExec:             handleVMExec,
		api.MethodVMLogs:             handleVMLogs,
		api.MethodVMSet:              paramHandler(setVM),
		api.MethodVMKill:             paramHandler(killVM),
		api.MethodVMPrune:            noParamHandler(pruneVMs),
		api.MethodVMSSH:              paramHandler(vmSSH),
		api.MethodVMSSHProxy:         handleVMSSHProxy,
		api.MethodVMStats:            paramHandler(vmStats),
		api.MethodVMStatsAll:         noParamHandler(vmStatsAll),
		api.MethodVMHealth:           paramHandler(vmHealth),
		api.MethodVMPing:             paramHandler(vmHealth),
		api.MethodVMPorts:            paramHandler(vmPorts),
		api.MethodVMWorkspacePrepare: handleWorkspacePrepare,
		api.MethodVMWorkspaceStatus:  paramHandler(workspaceStatus),
		api.MethodVMWorkspacePull:    handleWorkspacePull,
		api.MethodVMWorkspacePush:    handleWorkspacePush,
		api.MethodVMWorkspaceExport:  paramHandler(workspaceExport),
	}
}

// dispatch checks the protocol version and routes a call to its handler.
func (d *Daemon) dispatch(ctx context.Context, call *rpc.Call) rpc.Response {
	if call.V != api.ProtocolVersion {
		client := call.Client
		if client == "" {
			client = "unknown version"
		}
		return rpc.Error(fmt.Errorf("%w: client (banger %s) speaks protocol %d, daemon (bangerd %s) speaks protocol %d; "+
			"use the banger binary that matches the daemon, or restart the daemon with the new one (`banger daemon stop && banger daemon start`)",
			api.ErrVersionMismatch, client, call.V, d.build.Version, api.ProtocolVersion))
	}
	h, ok := d.handlers[call.Method]
	if !ok {
		return rpc.Error(fmt.Errorf("%w %q; this daemon (bangerd %s) serves: %s",
			api.ErrUnknownMethod, call.Method, d.build.Version, strings.Join(slices.Sorted(maps.Keys(d.handlers)), ", ")))
	}
	d.log.Debug("call", "method", call.Method, "id", call.ID)
	d.touchVMs(call.Method, call.Params)
	return h(ctx, d, call)
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
