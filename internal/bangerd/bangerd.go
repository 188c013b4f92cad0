// Package bangerd is the bangerd program: the daemon (internal/daemon),
// and what else must run on the host with the daemon's code or as root:
// the root network helper, install and uninstall, and update. The banger
// CLI links none of it; its `daemon run`, `system` and `update` commands
// hand over to this program (exec, argv[0] "banger"), which then speaks
// as the CLI.
package bangerd

import (
	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/cmdio"
	"github.com/bangerdev/banger/internal/version"
)

// Env is what every command of one invocation runs with: the streams and
// environment, and the CLI's --socket flag. Commands are functions of it.
type Env struct {
	cmdio.Streams
	socket string // --socket
}

// Main runs bangerd as name (argv[0]'s base) with args and returns the
// exit code. As "banger" it is the CLI's hand-over (internal/cli): the
// commands the CLI gave it, under the CLI's names; as anything else it is
// the daemon, `bangerd [--system]`.
func Main(name string, args []string) int {
	env := &Env{Streams: cmdio.OS()}
	if name == "banger" {
		return env.Execute(handedOver(env), args)
	}
	return env.Execute(daemonCommand(env), args)
}

// daemonCommand is bangerd itself: `banger daemon run` under its own name.
func daemonCommand(env *Env) *cobra.Command {
	cmd := daemonRunCommand(env)
	cmd.Use = "bangerd"
	cmd.Version = version.Version
	return cmd
}

// handedOver is the tree of the commands the CLI hands over, as the CLI
// names them.
func handedOver(env *Env) *cobra.Command {
	root := &cobra.Command{Use: "banger", Short: "Fresh, isolated microVMs from any OCI image"}
	root.PersistentFlags().StringVar(&env.socket, "socket", "", "path of the bangerd socket (default: from BANGER_HOME, or the user or system layout)")
	root.AddCommand(
		cmdio.Group("daemon", "Run, start, stop and inspect bangerd", nil, daemonRunCommand(env)),
		systemCommand(env),
		updateCommand(env),
	)
	return root
}
