package cli

import (
	"context"
	"fmt"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/termsafe"
)

func vmCommand(env *Env) *cobra.Command {
	cmd := cmdio.Group("vm", "Run and manage VMs", nil, vmCreateCommand(env), vmListCommand(env, "list", "ls"), vmShowCommand(env), vmExecCommand(env), vmLogsCommand(env), vmBootTestCommand(env),
		vmSSHCommand(env), vmSSHProxyCommand(env), vmSSHConfigCommand(env), vmRunCommand(env),
		vmSetCommand(env), vmKillCommand(env), vmPruneCommand(env), vmEgressCommand(env), vmForkCommand(env), vmSnapshotCommand(env))
	cmd.AddCommand(vmLifecycleCommands(env)...)
	cmd.AddCommand(vmStatsCommands(env)...)
	cmd.AddCommand(vmWorkspaceCommand(env))
	return cmd
}

func vmBootTestCommand(env *Env) *cobra.Command {
	var p api.BootTestParams
	cmd := printed(env, &cobra.Command{
		Use:   "boot-test --image REF [--kernel REF]",
		Short: "Boot a throwaway VM, run uname -a through its agent, power it off, and time each phase",
		Args:  cobra.NoArgs,
	}, "print JSON", func(ctx context.Context, c *client.Client, _ []string) (api.BootTestResult, error) {
		return c.BootTest(ctx, p)
	}, func(res api.BootTestResult) error {
		// uname -a is the guest's text.
		fmt.Fprintf(env.Stdout, "%s\n(image %s, kernel %s, %s)\n\n", termsafe.Text(res.Uname), res.Image, res.Kernel, res.VMM)
		rows := make([][]string, 0, len(res.Phases))
		for _, ph := range res.Phases {
			rows = append(rows, []string{ph.Name, fmt.Sprintf("%.3fs", ph.Seconds), ph.Clock})
		}
		return cmdio.Table(env.Stdout, []string{"PHASE", "TIME", "CLOCK"}, rows)
	})
	cmd.Flags().StringVar(&p.Image, "image", "", "image to boot (name or ID prefix)")
	cmd.Flags().StringVar(&p.Kernel, "kernel", "", "kernel to boot (default: the default kernel)")
	return cmd
}
