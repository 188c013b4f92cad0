package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/diskspace"
	"github.com/bangerdev/banger/internal/opstate"
)

// waitEventInterval throttles operations.wait events: a byte counter may
// change thousands of times a second, a terminal needs a few frames.
const waitEventInterval = 100 * time.Millisecond

// opSource is what the operations.* methods need of a service's registry.
type opSource interface {
	List() []opstate.Status
	Lookup(id string) (opstate.Tracked, bool)
	Prune() int
	OnFailed(fn func(opstate.Status))
	OnPhase(fn func(kind, phase string))
}

// operations serves the operations.* methods over every service's
// registry, as one list.
type operations struct {
	sources []opSource
	log     *slog.Logger
}

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
			s.Error = api.ToWire(diskspace.Explain(st.Err))
		default:
			s.State = api.OpStateFailed
			s.Error = api.ToWire(diskspace.Explain(st.Err))
		}
	}
	return s
}

// List is every operation, oldest first.
func (o *operations) List(context.Context) (api.OperationsListResult, error) {
	res := api.OperationsListResult{Operations: []api.OperationSummary{}}
	for _, src := range o.sources {
		for _, st := range src.List() {
			res.Operations = append(res.Operations, summarize(st))
		}
	}
	sort.SliceStable(res.Operations, func(i, j int) bool {
		return res.Operations[i].StartedAt.Before(res.Operations[j].StartedAt)
	})
	return res, nil
}

func (o *operations) find(id string) (opstate.Tracked, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: an operation id is required (see `banger ops list`)", api.ErrInvalidArgument)
	}
	for _, src := range o.sources {
		if op, ok := src.Lookup(id); ok {
			return op, nil
		}
	}
	return nil, fmt.Errorf("operation %q: %w (finished operations are kept for a while, then pruned; see `banger ops list`)", id, api.ErrNotFound)
}

// Get is one operation.
func (o *operations) Get(_ context.Context, p api.OperationIDParams) (api.OperationSummary, error) {
	op, err := o.find(p.ID)
	if err != nil {
		return api.OperationSummary{}, err
	}
	return summarize(op.Status()), nil
}

// Cancel asks a running operation to stop; a finished one is
// api.ErrNotRunning.
func (o *operations) Cancel(_ context.Context, p api.OperationIDParams) (api.OperationSummary, error) {
	op, err := o.find(p.ID)
	if err != nil {
		return api.OperationSummary{}, err
	}
	if err := op.Cancel(); errors.Is(err, opstate.ErrFinished) {
		st := op.Status()
		return summarize(st), fmt.Errorf("operation %s: %w: it already %s", p.ID, api.ErrNotRunning, summarize(st).State)
	}
	o.log.Info("operation cancel requested", "id", p.ID)
	return summarize(op.Status()), nil
}

// Wait emits the operation's summary on every change (throttled) and
// returns the final summary once it is done.
func (o *operations) Wait(ctx context.Context, p api.OperationIDParams, emit func(api.OperationSummary) error) (api.OperationSummary, error) {
	op, err := o.find(p.ID)
	if err != nil {
		return api.OperationSummary{}, err
	}
	for {
		st, changed := op.Watch()
		if st.Done {
			return summarize(st), nil
		}
		if err := emit(summarize(st)); err != nil {
			return api.OperationSummary{}, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return api.OperationSummary{}, ctx.Err()
		}
		select {
		case <-op.Done(): // report the end at once
		case <-time.After(waitEventInterval):
		case <-ctx.Done():
			return api.OperationSummary{}, ctx.Err()
		}
	}
}

// prune drops finished operations past their retention.
func (o *operations) prune() {
	for _, src := range o.sources {
		if n := src.Prune(); n > 0 {
			o.log.Debug("pruned finished operations", "count", n)
		}
	}
}
