package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
)

func vmSSHCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh NAME [-- CMD [ARG...]]",
		Short: "Open a shell in a VM, or run a command, with OpenSSH through the VM's agent",
		Long: "Run the system's ssh against the VM through `banger vm ssh-proxy`, so it needs no network: with\n" +
			"--network none too. The command's exit code is banger's. Host keys are checked against banger's own\n" +
			"known_hosts, filled from what each VM's agent reports. A command of several words keeps them as\n" +
			"words (`-- sh -c 'echo hi'`, as vm exec); a single word is given to the guest's shell as it is\n" +
			"(`-- 'ls | wc -l'`).",
		Args: cobra.MinimumNArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			sshBin, argv, err := sshCommand(ctx, env, c, args[0], args[1:])
			if err != nil {
				return err
			}
			// ssh takes over this process: its exit code is ours, its
			// terminal handling is the real thing.
			return syscall.Exec(sshBin, argv, os.Environ())
		}),
	}
}

// sshCommand checks that a VM can be reached and returns the ssh binary
// and the command line that reaches it, running cmd when not empty.
func sshCommand(ctx context.Context, env *Env, c *client.Client, name string, cmd []string) (string, []string, error) {
	info, err := c.VMSSH(ctx, name)
	if err != nil {
		return "", nil, err
	}
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		return "", nil, fmt.Errorf("%w (apt install openssh-client)", err)
	}
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	argv := append([]string{"ssh"}, sshOptions(info, self)...)
	argv = append(argv, info.User+"@"+info.Host)
	switch {
	case len(cmd) > 0 && info.Dir != "":
		argv = append(argv, "--", "cd "+shellQuote(info.Dir)+" && "+remoteCommand(cmd))
	case len(cmd) > 0:
		argv = append(argv, "--", remoteCommand(cmd))
	case info.Dir != "":
		// An interactive login shell, started in the workspace.
		argv = append(argv, "-t", "--", "cd "+shellQuote(info.Dir)+" && exec \"${SHELL:-/bin/sh}\" -l")
	}
	return sshBin, argv, nil
}

// sshOptions make OpenSSH use banger's key, known_hosts and proxy.
func sshOptions(info api.VMSSHInfo, self string) []string {
	var out []string
	for _, kv := range sshConfig(info, self) {
		out = append(out, "-o", kv[0]+"="+kv[1])
	}
	return out
}

func sshConfig(info api.VMSSHInfo, self string) [][2]string {
	return [][2]string{
		{"User", info.User},
		{"IdentityFile", info.IdentityFile},
		{"IdentitiesOnly", "yes"},
		{"UserKnownHostsFile", info.KnownHostsFile},
		{"StrictHostKeyChecking", "yes"},
		{"HostKeyAlias", info.Host},
		{"ProxyCommand", shellQuote(self) + " vm ssh-proxy " + info.Name},
		{"LogLevel", "ERROR"},
	}
}

// remoteCommand is what ssh sends: one argument goes to the remote
// shell as written; several are quoted, so each stays one word.
func remoteCommand(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func vmSSHProxyCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh-proxy NAME",
		Short: "Join stdin and stdout to a VM's SSH server (an OpenSSH ProxyCommand)",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			stream, err := c.SSHProxy(ctx, args[0])
			if err != nil {
				return err
			}
			defer stream.Close()
			go func() {
				_, _ = io.Copy(stream, env.Stdin)
				if cw, ok := stream.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				}
			}()
			_, err = io.Copy(env.Stdout, stream)
			return err
		}),
	}
}

func vmSSHConfigCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh-config [NAME...]",
		Short: "Print OpenSSH Host entries for running VMs (all of them by default)",
		Long: "Print Host entries that let ssh, scp, rsync, git and IDE remotes reach VMs as NAME.vm, e.g.\n" +
			"`banger vm ssh-config >> ~/.ssh/config`, or `scp -F <(banger vm ssh-config) f box.vm:`.",
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			if len(args) == 0 {
				vms, err := c.VMs(ctx)
				if err != nil {
					return err
				}
				for _, v := range vms {
					if v.State == api.VMRunning {
						args = append(args, v.Name)
					}
				}
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			for _, name := range args {
				info, err := c.VMSSH(ctx, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "Host %s\n", info.Host)
				for _, kv := range sshConfig(info, self) {
					fmt.Fprintf(env.Stdout, "  %s %s\n", kv[0], kv[1])
				}
			}
			return nil
		}),
	}
}
