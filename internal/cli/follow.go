package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
)

// followOp waits for an operation, with live progress on a terminal and
// nothing in a pipe, and returns its final summary; an operation that did
// not succeed is an error carrying its message. Ctrl-C stops the waiting,
// not the operation, and says how to stop that.
func followOp(ctx context.Context, env *Env, c *client.Client, op api.OperationSummary) (api.OperationSummary, error) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	var onUpdate func(api.OperationSummary)
	live := cmdio.IsTTY(env.Stderr)
	progress := &liveProgress{w: env.Stderr}
	if live {
		onUpdate = progress.draw
	}
	final, err := c.WaitOperation(ctx, op.ID, onUpdate)
	if live {
		progress.clear()
	}
	if ctx.Err() != nil {
		return final, fmt.Errorf("stopped waiting; %s goes on in the background as operation %s (`banger ops wait %s` follows it, `banger ops cancel %s` stops it)", op.Kind, op.ID, op.ID, op.ID)
	}
	if err != nil {
		return final, err
	}
	if final.State != api.OpStateSucceeded {
		msg := final.State
		if final.Error != nil {
			msg = final.Error.Message
		}
		return final, &cmdio.ExitError{Code: 1, Err: fmt.Errorf("%s %s %s: %s", final.Kind, final.Target, final.State, msg)}
	}
	return final, nil
}
