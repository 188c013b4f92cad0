package daemon

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/rpc"
)

// waitEventInterval throttles operations.wait events: a byte counter may
// change thousands of times a second, a terminal needs a few frames.
const waitEventInterval = 100 * time.Millisecond

func summarize(st opstate.Status) api.OperationSummary {
	s := api.OperationSummary{
		ID: st.ID, Kind: st.Kind, Target: st.Target, Phase: st.Phase, Result: st.Result,
		Done: st.Done, StartedAt: st.Started, State: api.OpStateRunning,
	}
	if st.Progress != nil {
		s.Progress = &api.OperationProgress{Done: st.Progress.Done, Total: st.Progress.Total, Unit: st.Progress.Unit}
		for _, it := range st.Progress.Items {
			s.Progress.Items = append(s.Progress.Items, api.ProgressItem{Name: it.Name, Done: it.Done, Total: it.Total})
		}
	}
	if st.Done {
		f := st.Finished
		s.FinishedAt = &f
		switch {
		case st.Err == nil:
			s.State = api.OpStateSucceeded
		case errors.Is(st.Err, context.Canceled):
			s.State = api.OpStateCanceled
			s.Error = api.ToWire(st.Err)
		default:
			s.State = api.OpStateFailed
			s.Error = api.ToWire(st.Err)
		}
	}
	return s
}

func listOperations(_ context.Context, d *Daemon) (api.OperationsListResult, error) {
	res := api.OperationsListResult{Operations: []api.OperationSummary{}}
	for _, src := range d.ops {
		for _, st := range src.List() {
			res.Operations = append(res.Operations, summarize(st))
		}
	}
	sort.SliceStable(res.Operations, func(i, j int) bool {
		return res.Operations[i].StartedAt.Before(res.Operations[j].StartedAt)
	})
	return res, nil
}

func (d *Daemon) findOperation(id string) (opstate.Tracked, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: an operation id is required (see `banger ops list`)", api.ErrInvalidArgument)
	}
	for _, src := range d.ops {
		if op, ok := src.Lookup(id); ok {
			return op, nil
		}
	}
	return nil, fmt.Errorf("operation %q: %w (finished operations are kept for a while, then pruned; see `banger ops list`)", id, api.ErrNotFound)
}

func getOperation(_ context.Context, d *Daemon, p api.OperationIDParams) (api.OperationSummary, error) {
	op, err := d.findOperation(p.ID)
	if err != nil {
		return api.OperationSummary{}, err
	}
	return summarize(op.Status()), nil
}

func cancelOperation(_ context.Context, d *Daemon, p api.OperationIDParams) (api.OperationSummary, error) {
	op, err := d.findOperation(p.ID)
	if err != nil {
		return api.OperationSummary{}, err
	}
	if err := op.Cancel(); errors.Is(err, opstate.ErrFinished) {
		st := op.Status()
		return summarize(st), fmt.Errorf("operation %s: %w: it already %s", p.ID, api.ErrNotRunning, summarize(st).State)
	}
	d.log.Info("operation cancel requested", "id", p.ID)
	return summarize(op.Status()), nil
}

// handleOperationsWait streams the operation's summary on every change
// (throttled) and ends with the final summary once it is done.
func handleOperationsWait(ctx context.Context, d *Daemon, call *rpc.Call) rpc.Response {
	var p api.OperationIDParams
	if err := decodeParams(call.Method, call.Params, &p); err != nil {
		return rpc.Error(err)
	}
	op, err := d.findOperation(p.ID)
	if err != nil {
		return rpc.Error(err)
	}
	for {
		st, changed := op.Watch()
		if st.Done {
			return rpc.Result(summarize(st))
		}
		if err := call.Emit(summarize(st)); err != nil {
			return rpc.Error(err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return rpc.Error(ctx.Err())
		}
		select {
		case <-op.Done(): // report the end at once
		case <-time.After(waitEventInterval):
		case <-ctx.Done():
			return rpc.Error(ctx.Err())
		}
	}
}
