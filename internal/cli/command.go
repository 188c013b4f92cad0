package cli

import (
	"context"
	"encoding/json"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
)

// The shapes most commands share: reach the daemon, then do one thing.

// run is a command's body once it has the daemon's client.
type run func(ctx context.Context, c *client.Client, args []string) error

// withClient makes cmd's RunE: resolve the daemon's client, then run.
func withClient(env *Env, body run) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := env.client()
		if err != nil {
			return err
		}
		return body(cmd.Context(), c, args)
	}
}

// printed makes cmd fetch one result and print it: as JSON with --json
// (a flag it adds, described by jsonHelp), else as human says.
func printed[R any](env *Env, cmd *cobra.Command, jsonHelp string, fetch func(context.Context, *client.Client, []string) (R, error), human func(R) error) *cobra.Command {
	var asJSON bool
	cmd.RunE = withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
		r, err := fetch(ctx, c, args)
		if err != nil {
			return err
		}
		return env.Emit(r, asJSON, func() error { return human(r) })
	})
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonHelp)
	return cmd
}

// finished follows the operation a call started (progress on a terminal,
// quiet in a pipe) and fetches what it made, named by its result.
func finished[R any](ctx context.Context, env *Env, c *client.Client, op api.OperationSummary, err error, made func(context.Context, string) (R, error)) (R, error) {
	var zero R
	if err != nil {
		return zero, err
	}
	final, err := followOp(ctx, env, c, op)
	if err != nil {
		return zero, err
	}
	return made(ctx, final.Result)
}

// makes makes cmd start an operation (start), follow it and print what
// it made (fetched by get, from the operation's result) with the time it
// all took; --json prints what it made alone.
func makes[R any](env *Env, cmd *cobra.Command, jsonHelp string,
	start func(context.Context, *client.Client, []string) (api.OperationSummary, error),
	get func(*client.Client) func(context.Context, string) (R, error),
	human func(made R, took time.Duration) error) *cobra.Command {
	return printed(env, cmd, jsonHelp, func(ctx context.Context, c *client.Client, args []string) (timed[R], error) {
		began := time.Now()
		op, err := start(ctx, c, args)
		v, err := finished(ctx, env, c, op, err, get(c))
		return timed[R]{v, time.Since(began)}, err
	}, func(t timed[R]) error { return human(t.v, t.took) })
}

// timed is a result and how long it took to come; as JSON, the result.
type timed[R any] struct {
	v    R
	took time.Duration
}

func (t timed[R]) MarshalJSON() ([]byte, error) { return json.Marshal(t.v) }

// listed makes cmd a listing: a table of one row per item under header,
// or with --json the items as wrap makes them. fetch is a client's
// method, as (*client.Client).Images.
func listed[T any](env *Env, cmd *cobra.Command, fetch func(*client.Client, context.Context) ([]T, error),
	wrap func([]T) any, header []string, row func(now time.Time, item T) []string) *cobra.Command {
	return printed(env, cmd, "print JSON", func(ctx context.Context, c *client.Client, _ []string) (listing[T], error) {
		items, err := fetch(c, ctx)
		return listing[T]{items, wrap}, err
	}, func(l listing[T]) error {
		now := time.Now()
		rows := make([][]string, 0, len(l.items))
		for _, it := range l.items {
			rows = append(rows, row(now, it))
		}
		return cmdio.Table(env.Stdout, header, rows)
	})
}

// listing is a listing's items; as JSON, what wrap makes of them.
type listing[T any] struct {
	items []T
	wrap  func([]T) any
}

func (l listing[T]) MarshalJSON() ([]byte, error) { return json.Marshal(l.wrap(l.items)) }
