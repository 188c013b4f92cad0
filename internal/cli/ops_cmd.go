package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
)

func opsCommand(env *Env) *cobra.Command {
	return cmdio.Group("ops", "List, inspect, wait for and cancel daemon operations", []string{"operations"},
		opsListCommand(env), opsShowCommand(env), opsWaitCommand(env), opsCancelCommand(env))
}

func opsListCommand(env *Env) *cobra.Command {
	return listed(env, &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List operations (running, and finished ones until they are pruned)", Args: cobra.NoArgs},
		(*client.Client).Operations, func(ops []api.OperationSummary) any { return api.OperationsListResult{Operations: ops} },
		[]string{"ID", "KIND", "TARGET", "STATE", "PHASE", "PROGRESS", "AGE"}, func(now time.Time, op api.OperationSummary) []string {
			return []string{op.ID, op.Kind, dash(op.Target), op.State, dash(op.Phase), dash(formatProgress(op.Progress)), ago(now, op.StartedAt)}
		})
}

func opsShowCommand(env *Env) *cobra.Command {
	return printed(env, &cobra.Command{
		Use:   "show ID",
		Short: "Show one operation",
		Args:  cobra.ExactArgs(1),
	}, "print JSON", func(ctx context.Context, c *client.Client, args []string) (api.OperationSummary, error) {
		return c.Operation(ctx, args[0])
	}, func(op api.OperationSummary) error { return printOperation(env, op) })
}

func printOperation(env *Env, op api.OperationSummary) error {
	now := time.Now()
	finished := "-"
	if op.FinishedAt != nil {
		finished = fmt.Sprintf("%s (took %s)", op.FinishedAt.Local().Format(time.DateTime), op.FinishedAt.Sub(op.StartedAt).Round(time.Millisecond))
	}
	errText := "-"
	if op.Error != nil {
		errText = fmt.Sprintf("%s (%s)", op.Error.Message, op.Error.Code)
	}
	return cmdio.Fields(env.Stdout, [][2]string{
		{"id", op.ID},
		{"kind", op.Kind},
		{"target", dash(op.Target)},
		{"state", op.State},
		{"phase", dash(op.Phase)},
		{"progress", dash(formatProgress(op.Progress))},
		{"started", fmt.Sprintf("%s (%s ago)", op.StartedAt.Local().Format(time.DateTime), ago(now, op.StartedAt))},
		{"finished", finished},
		{"error", errText},
	})
}

// opFailure turns a finished operation that did not succeed into an exit
// error carrying its message.
func opFailure(op api.OperationSummary) error {
	if op.State == api.OpStateSucceeded {
		return nil
	}
	msg := op.State
	if op.Error != nil {
		msg = op.Error.Message
	}
	return &cmdio.ExitError{Code: 1, Err: fmt.Errorf("operation %s (%s %s) %s: %s", op.ID, op.Kind, op.Target, op.State, msg)}
}

func opsWaitCommand(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for an operation to finish, showing its progress on a terminal (exit 1 if it failed)",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			live := !asJSON && cmdio.IsTTY(env.Stdout)
			var onUpdate func(api.OperationSummary)
			if live {
				onUpdate = func(op api.OperationSummary) {
					fmt.Fprintf(env.Stdout, "\r\033[K%s %s %s: %s %s", op.ID, op.Kind, op.Target, dash(op.Phase), formatProgress(op.Progress))
				}
			}
			op, err := c.WaitOperation(ctx, args[0], onUpdate)
			if live {
				fmt.Fprint(env.Stdout, "\r\033[K")
			}
			if err != nil {
				return err
			}
			if asJSON {
				if err := cmdio.JSON(env.Stdout, op); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(env.Stdout, "%s %s %s %s\n", op.ID, op.Kind, dash(op.Target), op.State)
			}
			return opFailure(op)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the final operation as JSON")
	return cmd
}

func opsCancelCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Ask a running operation to stop",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			op, err := c.CancelOperation(ctx, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "cancel requested for %s (%s %s); `banger ops wait %s` waits for it to stop\n", op.ID, op.Kind, dash(op.Target), op.ID)
			return nil
		}),
	}
	return cmd
}
