package cli

import (
	"context"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
)

func configCommand(env *Env) *cobra.Command {
	return cmdio.Group("config", "Inspect the daemon's configuration", nil, printed(env, &cobra.Command{
		Use:   "show",
		Short: "Print the daemon's effective configuration and where each value came from",
		Args:  cobra.NoArgs,
	}, "print JSON", func(ctx context.Context, c *client.Client, _ []string) (api.ConfigShowResult, error) {
		return c.ConfigShow(ctx)
	}, func(res api.ConfigShowResult) error {
		rows := make([][]string, 0, len(res.Values))
		for _, v := range res.Values {
			rows = append(rows, []string{v.Key, v.Value, v.Source})
		}
		return cmdio.Table(env.Stdout, []string{"KEY", "VALUE", "SOURCE"}, rows)
	}))
}
