package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/termsafe"
)

func (a *App) vmCommand() *cobra.Command {
	cmd := group("vm", "Run and manage VMs", nil, a.vmCreateCommand(), a.vmListCommand("list", "ls"), a.vmShowCommand(), a.vmExecCommand(), a.vmLogsCommand(), a.vmBootTestCommand(),
		a.vmSSHCommand(), a.vmSSHProxyCommand(), a.vmSSHConfigCommand(), a.vmRunCommand(),
		a.vmSetCommand(), a.vmKillCommand(), a.vmPruneCommand(), a.vmEgressCommand(), a.vmForkCommand(), a.vmSnapshotCommand())
	cmd.AddCommand(a.vmLifecycleCommands()...)
	cmd.AddCommand(a.vmStatsCommands()...)
	cmd.AddCommand(a.vmWorkspaceCommand())
	return cmd
}

func (a *App) vmBootTestCommand() *cobra.Command {
	var p api.BootTestParams
	cmd := printed(a, &cobra.Command{
		Use:   "boot-test --image REF [--kernel REF]",
		Short: "Boot a throwaway VM, run uname -a through its agent, power it off, and time each phase",
		Args:  cobra.NoArgs,
	}, "print JSON", func(ctx context.Context, c *client.Client, _ []string) (api.BootTestResult, error) {
		return c.BootTest(ctx, p)
	}, func(res api.BootTestResult) error {
		// uname -a is the guest's text.
		fmt.Fprintf(a.Stdout, "%s\n(image %s, kernel %s, %s)\n\n", termsafe.Text(res.Uname), res.Image, res.Kernel, res.VMM)
		rows := make([][]string, 0, len(res.Phases))
		for _, ph := range res.Phases {
			rows = append(rows, []string{ph.Name, fmt.Sprintf("%.3fs", ph.Seconds), ph.Clock})
		}
		return table(a.Stdout, []string{"PHASE", "TIME", "CLOCK"}, rows)
	})
	cmd.Flags().StringVar(&p.Image, "image", "", "image to boot (name or ID prefix)")
	cmd.Flags().StringVar(&p.Kernel, "kernel", "", "kernel to boot (default: the default kernel)")
	return cmd
}
