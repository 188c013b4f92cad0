package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
)

func vmRunCommand(env *Env) *cobra.Command {
	var f createFlags
	var rm, detach bool
	cmd := &cobra.Command{
		Use:   "run [PATH] [--name N] [--image REF] [--rm] [-d|--detach] [create flags] [-- CMD [ARG...]]",
		Short: "Create (or start) a VM and open a shell in it, or run a command",
		Long: "Create the VM (or start it, when --name names one that exists), then ssh into it: an interactive\n" +
			"shell, or CMD, whose exit code is banger's. --rm deletes the VM afterwards, unless it failed to\n" +
			"come up (`banger vm logs` says why); -d leaves it running and prints its name. PATH is a host\n" +
			"project placed in the VM at /workspace (as `banger vm workspace prepare` does), where CMD and the\n" +
			"shell start.",
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var command []string
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				args, command = args[:dash], args[dash:]
			}
			if len(args) > 1 {
				return fmt.Errorf("%w: one workspace PATH at most, got %q; put the command after --", api.ErrInvalidArgument, args)
			}
			if len(args) == 1 {
				if f.workspace != "" {
					return fmt.Errorf("%w: the workspace is PATH or --workspace, not both", api.ErrInvalidArgument)
				}
				f.workspace = args[0]
			}
			if detach && (rm || len(command) > 0) {
				return fmt.Errorf("%w: -d runs nothing in the VM; it goes without --rm and a command", api.ErrInvalidArgument)
			}
			p, err := f.params(cmd)
			if err != nil {
				return err
			}
			c, err := env.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if f.ws.dryRun {
				return dryRun(ctx, env, c, *p.Workspace)
			}
			v, err := upVM(ctx, env, c, p)
			if err != nil {
				return err
			}
			if detach {
				fmt.Fprintln(env.Stdout, v.Name)
				return nil
			}
			code, err := sshChild(ctx, env, c, v.Name, command)
			if rm {
				if _, derr := c.DeleteVM(context.WithoutCancel(ctx), api.VMDeleteParams{Name: v.Name, Force: true}); derr != nil {
					err = errors.Join(err, derr)
				}
			}
			if err != nil {
				return err
			}
			if code != 0 {
				return &cmdio.ExitError{Code: code}
			}
			return nil
		},
	}
	f.register(cmd, "name of the VM; an existing one is started and used (default: a new, generated name)")
	cmd.Flags().BoolVar(&rm, "rm", false, "delete the VM when the shell or command ends")
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "leave the VM running and print its name")
	return cmd
}

// upVM returns a running VM: the one --name names, started if need be,
// or a new one.
func upVM(ctx context.Context, env *Env, c *client.Client, p api.VMCreateParams) (api.VM, error) {
	if p.Name != "" {
		v, err := c.VM(ctx, p.Name)
		if err == nil && v.State != api.VMRunning {
			v, err = c.StartVM(ctx, p.Name)
		}
		switch {
		case err == nil && p.Workspace != nil && v.Workspace == "":
			// An existing VM gets the workspace it lacks.
			if _, err := c.PrepareWorkspace(ctx, api.WorkspacePrepareParams{Name: v.Name, WorkspaceSpec: *p.Workspace}, nil); err != nil {
				return api.VM{}, err
			}
			return c.VM(ctx, v.Name)
		case err == nil:
			return v, nil
		case !errors.Is(err, api.ErrNotFound):
			return api.VM{}, err
		}
	}
	v, err := createVM(ctx, env, c, p)
	if err != nil {
		return api.VM{}, fmt.Errorf("%w (the VM, if it was made, is kept: `banger vm logs NAME` says why it failed)", err)
	}
	return v, nil
}

// sshChild runs ssh into a VM as a child, for callers with work left
// after it (--rm), and returns its exit code. Interrupts go to ssh, not
// to banger, which must outlive it.
func sshChild(ctx context.Context, env *Env, c *client.Client, name string, command []string) (int, error) {
	sshBin, argv, err := sshCommand(ctx, env, c, name, command)
	if err != nil {
		return 0, err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	child := exec.Command(sshBin, argv[1:]...)
	child.Stdin, child.Stdout, child.Stderr = env.Stdin, env.Stdout, env.Stderr
	err = child.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil // as a shell reports it
		}
		return exit.ExitCode(), nil
	}
	return 0, err
}
