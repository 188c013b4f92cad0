// Package cli is the banger command line: cobra commands that resolve the
// socket and call the daemon through api/client. It links client code
// alone (boundary_test.go): what runs the daemon, the root helper, install
// and update is bangerd's (internal/bangerd), and the commands for those
// hand over to it (handover.go).
package cli

import (
	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/cmdio"
	"github.com/bangerdev/banger/internal/version"
)

// Env is what every command of one invocation runs with: the streams
// and environment, and the --socket flag. Commands are functions of it.
type Env struct {
	cmdio.Streams
	socket string // --socket
}

// Main runs the banger CLI and returns the process exit code.
func Main(args []string) int {
	env := &Env{Streams: cmdio.OS()}
	return env.Execute(rootCommand(env), args)
}

func rootCommand(env *Env) *cobra.Command {
	var showVersion bool
	root := &cobra.Command{
		Use:   "banger",
		Short: "Fresh, isolated microVMs from any OCI image",
		Long: "banger gives you a fresh, strongly isolated Linux microVM from any OCI image in one command.\n" +
			"The banger CLI talks to the bangerd daemon, which owns all state.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if showVersion {
				return printVersion(cmd.Context(), env, false)
			}
			return cmd.Help()
		},
	}
	root.PersistentFlags().StringVar(&env.socket, "socket", "", "path of the bangerd socket (default: from BANGER_HOME, or the user or system layout)")
	root.Flags().BoolVar(&showVersion, "version", false, "print client and daemon versions")
	root.AddCommand(
		versionCommand(env),
		daemonCommand(env),
		opsCommand(env),
		imageCommand(env),
		kernelCommand(env),
		vmCommand(env),
		psCommand(env),
		configCommand(env),
		handOver(env, &cobra.Command{Use: "system", Short: "Run banger installed for daily use: the owner's daemon and its root helper"}),
		doctorCommand(env),
		eventsCommand(env),
		mcpCommand(env),
		e2bCommand(env),
		handOver(env, &cobra.Command{Use: "update", Short: "Update banger to a signed release (or --rollback to the previous one)"}),
	)
	return root
}

// socketPath picks the socket: --socket, else the one client.DefaultSocket
// finds.
func (env *Env) socketPath() (string, error) {
	if env.socket != "" {
		return env.socket, nil
	}
	return client.DefaultSocket()
}

func (env *Env) client() (*client.Client, error) {
	sock, err := env.socketPath()
	if err != nil {
		return nil, err
	}
	return client.New(sock, version.Version), nil
}
