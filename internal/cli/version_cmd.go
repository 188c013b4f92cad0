package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/version"
)

func versionCommand(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print client and daemon versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return printVersion(cmd.Context(), env, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printVersion prints the client's build and, when a daemon answers, its
// build. A daemon that is not running is reported, not an error.
func printVersion(ctx context.Context, env *Env, asJSON bool) error {
	clientInfo := version.Info()
	var daemon *api.BuildInfo
	var daemonErr error
	if c, err := env.client(); err != nil {
		daemonErr = err
	} else {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		v, err := c.Version(ctx)
		if err == nil {
			daemon = &v.Daemon
		}
		daemonErr = err
	}
	if asJSON {
		out := struct {
			Client api.BuildInfo  `json:"client"`
			Daemon *api.BuildInfo `json:"daemon"`
			Error  string         `json:"daemon_error,omitempty"`
		}{Client: clientInfo, Daemon: daemon}
		if daemonErr != nil {
			out.Error = daemonErr.Error()
		}
		return cmdio.JSON(env.Stdout, out)
	}
	fmt.Fprintf(env.Stdout, "client: %s\n", formatBuild("banger", clientInfo))
	switch {
	case daemon != nil:
		fmt.Fprintf(env.Stdout, "daemon: %s\n", formatBuild("bangerd", *daemon))
	case errors.Is(daemonErr, client.ErrDaemonNotRunning):
		fmt.Fprintln(env.Stdout, "daemon: not running (start it with `banger daemon start`)")
	default:
		fmt.Fprintf(env.Stdout, "daemon: unavailable: %v\n", daemonErr)
	}
	return nil
}
