// Package cli is the banger command line: cobra commands that resolve the
// socket and call the daemon through api/client. `banger daemon run` (and
// the bangerd binary) are the exception: they run the daemon in-process.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/termsafe"
	"github.com/bangerdev/banger/internal/version"
)

// ExitError carries an exit code out of a command. A nil Err exits
// silently (the command already said what it had to).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// App is the state shared by the commands of one invocation.
type App struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string

	socket string // --socket
}

// NewApp returns an App on the process's standard streams and environment.
func NewApp() *App {
	return &App{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// Main runs the banger CLI and returns the process exit code.
func Main(args []string) int {
	a := NewApp()
	return a.Execute(a.rootCommand(), args)
}

// DaemonMain runs the bangerd binary: `banger daemon run` under its own name.
func DaemonMain(args []string) int {
	a := NewApp()
	cmd := a.daemonRunCommand()
	cmd.Use = "bangerd"
	cmd.Version = version.Version
	return a.Execute(cmd, args)
}

// Execute runs cmd with args, prints any error to stderr and returns the
// exit code.
func (a *App) Execute(cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	cmd.SetIn(a.Stdin)
	cmd.SetOut(a.Stdout)
	cmd.SetErr(a.Stderr)
	cmd.SilenceErrors = true
	cmd.SilenceUsage = true
	err := cmd.ExecuteContext(context.Background())
	if err == nil {
		return 0
	}
	var exit *ExitError
	if errors.As(err, &exit) {
		if exit.Err != nil {
			fmt.Fprintf(a.Stderr, "banger: %s\n", termsafe.Text(exit.Err.Error()))
		}
		return exit.Code
	}
	// An error may quote a guest (an agent's message): escaped.
	fmt.Fprintf(a.Stderr, "banger: %s\n", termsafe.Text(err.Error()))
	return 1
}

func (a *App) rootCommand() *cobra.Command {
	var showVersion bool
	root := &cobra.Command{
		Use:   "banger",
		Short: "Fresh, isolated microVMs from any OCI image",
		Long: "banger gives you a fresh, strongly isolated Linux microVM from any OCI image in one command.\n" +
			"The banger CLI talks to the bangerd daemon, which owns all state.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if showVersion {
				return a.printVersion(cmd.Context(), false)
			}
			return cmd.Help()
		},
	}
	root.PersistentFlags().StringVar(&a.socket, "socket", "", "path of the bangerd socket (default: from BANGER_HOME, or the user or system layout)")
	root.Flags().BoolVar(&showVersion, "version", false, "print client and daemon versions")
	root.AddCommand(
		a.versionCommand(),
		a.daemonCommand(),
		a.opsCommand(),
		a.imageCommand(),
		a.kernelCommand(),
		a.vmCommand(),
		a.psCommand(),
		a.configCommand(),
		a.systemCommand(),
		a.doctorCommand(),
		a.eventsCommand(),
		a.updateCommand(),
	)
	return root
}

// layout resolves the file layout from the environment.
func (a *App) layout(system bool) (paths.Layout, error) {
	home, _ := os.UserHomeDir()
	return paths.Resolve(paths.Env{Getenv: a.Getenv, UID: os.Getuid(), HomeDir: home}, system)
}

// socketPath picks the socket: --socket, else the resolved layout's; a user
// without a daemon of their own falls back to a system daemon's socket.
func (a *App) socketPath() (string, error) {
	if a.socket != "" {
		return a.socket, nil
	}
	l, err := a.layout(false)
	if err != nil {
		return "", err
	}
	sock := l.Socket()
	if l.Mode == paths.ModeUser {
		if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
			if _, err := os.Stat(paths.System().Socket()); err == nil {
				return paths.System().Socket(), nil
			}
		}
	}
	return sock, nil
}

func (a *App) client() (*client.Client, error) {
	sock, err := a.socketPath()
	if err != nil {
		return nil, err
	}
	return client.New(sock, version.Version), nil
}

// isTTY reports whether w is a terminal (progress displays only then).
func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
