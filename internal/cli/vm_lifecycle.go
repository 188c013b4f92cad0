package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/termsafe"
	"github.com/bangerdev/banger/internal/units"
)

// createFlags are the flags vm create and vm run share.
type createFlags struct {
	p            api.VMCreateParams
	memory, disk string
	nat          bool
	workspace    string // a host tree to place in the VM
	ws           workspaceFlags
}

func (f *createFlags) register(cmd *cobra.Command, nameHelp string) {
	fs := cmd.Flags()
	fs.StringVar(&f.p.Name, "name", "", nameHelp)
	fs.StringVar(&f.p.Image, "image", "", "image to run (default: default_image_name)")
	fs.StringVar(&f.p.Kernel, "kernel", "", "kernel to boot (default: default_kernel)")
	fs.IntVar(&f.p.VCPU, "cpus", 0, "virtual CPUs (default: vm_defaults.vcpu)")
	fs.StringVar(&f.memory, "memory", "", "memory, e.g. 1G or 512M (default: vm_defaults.memory_mib)")
	fs.StringVar(&f.disk, "disk", "", "size of the work disk, e.g. 20G (default: vm_defaults.disk_size)")
	fs.StringVar(&f.p.Network, "network", "", "bridge (a tap on the root daemon's bridge, NAME.vm), user (QEMU user-mode, no root needed) or none; default network.mode")
	fs.BoolVar(&f.nat, "nat", false, "let the VM open connections out (default: network.nat)")
	fs.StringArrayVar(&f.p.Allow, "allow", nil, "let the VM open connections out only to RULE: a name (github.com), *.domain, an IPv4 address or CIDR, each with optional :PORT[,PORT]; or !CIDR to deny (then everything else is open, the other rules exceptions); repeat for more (bridge network; default: network.allow)")
	fs.BoolVar(&f.p.Isolate, "isolate", false, "keep the VM from the other VMs on the bridge, both ways")
	fs.BoolVar(&f.p.Cold, "cold", false, "boot the VM, even where a template of its shape would start it faster (warm_create)")
	fs.BoolVar(&f.p.NoShare, "no-share", false, "share no memory pages with other VMs (by default a VM restored from a saved state shares its pages with the VMs of the same creator until it writes them; default: vm_defaults.share)")
	fs.StringVar(&f.p.Init, "init", "", "PID 1: agent (banger's agent alone), image (the image's systemd, the agent its service) or auto (image when it has systemd); default vm_defaults.init")
	fs.StringVar(&f.workspace, "workspace", "", "place this host tree in the VM at /workspace (see `banger vm workspace prepare`)")
	f.ws.register(cmd)
}

// params are the create params the flags say; --nat only when given, so
// the config's default holds otherwise.
func (f *createFlags) params(cmd *cobra.Command) (api.VMCreateParams, error) {
	p := f.p
	var err error
	if p.MemoryMiB, p.DiskSize, err = parseSizes(f.memory, f.disk); err != nil {
		return p, err
	}
	if cmd.Flags().Changed("nat") {
		nat := f.nat
		p.NAT = &nat
	}
	if f.workspace != "" {
		spec, err := f.ws.spec(f.workspace)
		if err != nil {
			return p, err
		}
		p.Workspace = &spec
	} else if f.ws != (workspaceFlags{}) {
		return p, fmt.Errorf("%w: --include-untracked, --readonly and --dry-run go with a workspace (--workspace PATH, or vm run PATH)", api.ErrInvalidArgument)
	}
	return p, nil
}

// egressSummary says in a few words what a VM may reach.
func egressSummary(v api.VM) string {
	switch v.Egress {
	case api.EgressSandbox:
		return "sandbox (nothing beyond the host; --nat or --allow to open)"
	case api.EgressNAT:
		return "nat (anywhere but link-local and network.nat_deny)"
	case api.EgressAllowList:
		if len(v.Allow) == 1 {
			return "allow-list (1 rule)"
		}
		return fmt.Sprintf("allow-list (%d rules)", len(v.Allow))
	}
	return dash(v.Egress)
}

// parseSizes reads --memory and --disk; empty is zero.
func parseSizes(memory, disk string) (int, int64, error) {
	mib, err := parseMiB(memory)
	if err != nil {
		return 0, 0, err
	}
	var size int64
	if disk != "" {
		if size, err = units.ParseSize(disk); err != nil {
			return 0, 0, fmt.Errorf("--disk: %w", err)
		}
	}
	return mib, size, nil
}

func vmCreateCommand(env *Env) *cobra.Command {
	var f createFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create [--name N] [--image REF] [--kernel REF] [--cpus N] [--memory SIZE] [--disk SIZE] [--network bridge|user|none] [--nat | --allow RULE...] [--isolate] [--no-share] [--workspace PATH] [--no-start]",
		Short: "Create a VM and boot it",
		Long: "Create a VM from an image (pulled when missing) and a kernel, with its own sparse work disk\n" +
			"stacked on the shared read-only image, and boot it. Defaults come from config.toml.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := f.params(cmd)
			if err != nil {
				return err
			}
			return withClient(env, func(ctx context.Context, c *client.Client, _ []string) error {
				if f.ws.dryRun {
					return dryRun(ctx, env, c, *p.Workspace)
				}
				start := time.Now()
				v, err := createVM(ctx, env, c, p)
				if err != nil {
					return err
				}
				return env.Emit(v, asJSON, func() error {
					_, err := fmt.Fprintf(env.Stdout, "created vm %s (%s) in %s\n", v.Name, v.State, time.Since(start).Round(100*time.Millisecond))
					return err
				})
			})(cmd, args)
		},
	}
	f.register(cmd, "name of the VM (default: a generated one)")
	cmd.Flags().BoolVar(&f.p.NoStart, "no-start", false, "create without booting")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the VM as JSON")
	return cmd
}

// parseMiB reads a memory size; a bare number is MiB, as QEMU takes it.
func parseMiB(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		return n, nil
	}
	b, err := units.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("--memory: %w", err)
	}
	return int(b >> 20), nil
}

// createVM runs vm.create to its end, with progress on a terminal.
func createVM(ctx context.Context, env *Env, c *client.Client, p api.VMCreateParams) (api.VM, error) {
	op, err := c.CreateVM(ctx, p)
	return finished(ctx, env, c, op, err, c.VM)
}

// vmVerbCommand is a lifecycle verb taking one or more VM names.
func vmVerbCommand(env *Env, use, short, done string, showState bool, flags func(*cobra.Command), do func(ctx context.Context, c *client.Client, name string) (api.VM, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use + " NAME...",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			var errs []error
			for _, name := range args {
				v, err := do(ctx, c, name)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if showState {
					fmt.Fprintf(env.Stdout, "%s vm %s (%s)\n", done, v.Name, v.State)
				} else {
					fmt.Fprintf(env.Stdout, "%s vm %s\n", done, v.Name)
				}
			}
			return errors.Join(errs...)
		}),
	}
	if flags != nil {
		flags(cmd)
	}
	return cmd
}

func vmLifecycleCommands(env *Env) []*cobra.Command {
	var stop api.VMStopParams
	var force bool
	return []*cobra.Command{
		vmVerbCommand(env, "start", "Boot stopped VMs", "started", true, nil, func(ctx context.Context, c *client.Client, name string) (api.VM, error) {
			return c.StartVM(ctx, name)
		}),
		vmVerbCommand(env, "stop", "Power VMs off (gracefully, then by force after a timeout)", "stopped", true, func(cmd *cobra.Command) {
			cmd.Flags().BoolVarP(&stop.Force, "force", "f", false, "kill the VMM at once")
			cmd.Flags().IntVar(&stop.Timeout, "timeout", 30, "seconds to wait for the guest to power off before killing it")
		}, func(ctx context.Context, c *client.Client, name string) (api.VM, error) {
			p := stop
			p.Name = name
			return c.StopVM(ctx, p)
		}),
		vmVerbCommand(env, "restart", "Stop and start VMs", "restarted", true, nil, func(ctx context.Context, c *client.Client, name string) (api.VM, error) {
			return c.RestartVM(ctx, name)
		}),
		vmVerbCommand(env, "suspend", "Save running VMs' memory to disk and end their VMMs (resume, exec or ssh bring them back)", "suspended", true, nil, func(ctx context.Context, c *client.Client, name string) (api.VM, error) {
			return c.SuspendVM(ctx, name)
		}),
		vmVerbCommand(env, "resume", "Bring suspended VMs back as they were", "resumed", true, nil, func(ctx context.Context, c *client.Client, name string) (api.VM, error) {
			return c.ResumeVM(ctx, name)
		}),
		vmVerbCommand(env, "delete", "Delete VMs and their disks (a running one only with --force)", "deleted", false, func(cmd *cobra.Command) {
			cmd.Aliases = []string{"rm"}
			cmd.Flags().BoolVarP(&force, "force", "f", false, "stop a running VM first")
		}, func(ctx context.Context, c *client.Client, name string) (api.VM, error) {
			return c.DeleteVM(ctx, api.VMDeleteParams{Name: name, Force: force})
		}),
	}
}

func vmListCommand(env *Env, use string, aliases ...string) *cobra.Command {
	return listed(env, &cobra.Command{Use: use, Aliases: aliases, Short: "List VMs", Args: cobra.NoArgs},
		(*client.Client).VMs, func(vms []api.VM) any { return api.VMListResult{VMs: vms} },
		[]string{"NAME", "STATE", "IMAGE", "IP", "CPUS", "MEMORY", "DISK", "AGE", "CREATOR"}, func(now time.Time, v api.VM) []string {
			state := v.State
			if v.State == api.VMSuspended {
				state += " (" + units.FormatSize(v.StateBytes) + " saved)"
			}
			return []string{v.Name, state, v.Image, dash(v.IP), strconv.Itoa(v.VCPU),
				units.FormatSize(int64(v.MemoryMiB) << 20), units.FormatSize(v.DiskSize), ago(now, v.CreatedAt), dash(v.Creator)}
		})
}

func vmShowCommand(env *Env) *cobra.Command {
	return printed(env, &cobra.Command{
		Use:   "show NAME",
		Short: "Show a VM",
		Args:  cobra.ExactArgs(1),
	}, "print JSON", func(ctx context.Context, c *client.Client, args []string) (api.VM, error) {
		return c.VM(ctx, args[0])
	}, func(v api.VM) error {
		kv := [][2]string{
			{"name", v.Name}, {"id", v.ID}, {"state", v.State}, {"reason", dash(v.Reason)},
			{"image", v.Image}, {"kernel", v.Kernel}, {"vmm", dash(v.VMM)}, {"init", initSummary(v.Init)},
			{"cpus", strconv.Itoa(v.VCPU)}, {"memory", units.FormatSize(int64(v.MemoryMiB) << 20)},
			{"disk", fmt.Sprintf("%s (%s used on the host)", units.FormatSize(v.DiskSize), units.FormatSize(v.DiskUsed))},
			{"network", v.Network}, {"ip", dash(v.IP)}, {"egress", egressSummary(v)},
		}
		for _, r := range v.Allow {
			kv = append(kv, [2]string{"  allow", r})
		}
		if v.Isolate {
			kv = append(kv, [2]string{"isolated", "from the other VMs"})
		}
		if v.NoShare {
			kv = append(kv, [2]string{"shared pages", "none (--no-share)"})
		}
		kv = append(kv, [2]string{"created", v.CreatedAt.Local().Format(time.RFC3339)})
		if v.Creator != "" {
			kv = append(kv, [2]string{"creator", v.Creator})
		}
		if v.StartedAt != nil {
			kv = append(kv, [2]string{"started", v.StartedAt.Local().Format(time.RFC3339)})
		}
		if v.StoppedAt != nil {
			kv = append(kv, [2]string{"stopped", v.StoppedAt.Local().Format(time.RFC3339)})
		}
		if v.State == api.VMSuspended {
			kv = append(kv, [2]string{"saved state", units.FormatSize(v.StateBytes) + " on disk (no host memory while suspended)"})
		}
		return cmdio.Fields(env.Stdout, kv)
	})
}

// initSummary says what a VM's PID 1 is.
func initSummary(init string) string {
	if init == api.InitImage {
		return "the image's systemd (banger's agent is its service)"
	}
	return "banger's agent"
}

func vmExecCommand(env *Env) *cobra.Command {
	var p api.VMExecParams
	cmd := &cobra.Command{
		Use:   "exec NAME -- CMD [ARG...]",
		Short: "Run a command in a running VM; its exit code is banger's",
		Args:  cobra.MinimumNArgs(2),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			p.Name, p.Args = args[0], args[1:]
			code, err := execVM(ctx, env, c, p)
			if err != nil {
				return err
			}
			if code != 0 {
				return &cmdio.ExitError{Code: code}
			}
			return nil
		}),
	}
	cmd.Flags().StringArrayVarP(&p.Env, "env", "e", nil, "set an environment variable (KEY=VALUE; repeatable)")
	cmd.Flags().StringVarP(&p.Dir, "workdir", "w", "", "directory to run in (default: the user's home)")
	cmd.Flags().StringVarP(&p.User, "user", "u", "", "user to run as (default: root)")
	return cmd
}

// execVM runs a command, copying its output to ours, and returns its
// exit code.
func execVM(ctx context.Context, env *Env, c *client.Client, p api.VMExecParams) (int, error) {
	r, err := c.ExecVM(ctx, p, func(ev api.VMExecEvent) error {
		var w io.Writer = env.Stdout
		if ev.Stream == "stderr" {
			w = env.Stderr
		}
		_, err := w.Write(ev.Data)
		return err
	})
	return r.ExitCode, err
}

func vmLogsCommand(env *Env) *cobra.Command {
	var p api.VMLogsParams
	var raw bool
	cmd := &cobra.Command{
		Use:   "logs [-f] [-n N] [--raw] NAME",
		Short: "Print a VM's console: its kernel's and its agent's messages",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			p.Name = args[0]
			if p.Follow {
				var stop context.CancelFunc
				ctx, stop = signal.NotifyContext(ctx, os.Interrupt)
				defer stop()
			}
			// A console is the guest's text: on a terminal its escape
			// sequences are shown, not obeyed (--raw passes them).
			var out io.Writer = env.Stdout
			if cmdio.IsTTY(env.Stdout) && !raw {
				out = termsafe.NewWriter(env.Stdout)
			}
			r, err := c.VMLogs(ctx, p, func(chunk string) error {
				_, err := io.WriteString(out, chunk)
				return err
			})
			if p.Follow && ctx.Err() != nil {
				return nil // Ctrl-C ends following
			}
			if err != nil {
				return err
			}
			_, err = io.WriteString(out, r.Console)
			return err
		}),
	}
	cmd.Flags().BoolVar(&raw, "raw", false, "on a terminal too, print the console's bytes as they are (escape sequences included)")
	cmd.Flags().IntVarP(&p.Tail, "tail", "n", 0, "only the last N lines")
	cmd.Flags().BoolVarP(&p.Follow, "follow", "f", false, "keep printing what the console receives")
	return cmd
}

func vmSetCommand(env *Env) *cobra.Command {
	var p api.VMSetParams
	var memory, disk string
	var nat, isolate bool
	cmd := &cobra.Command{
		Use:   "set NAME [--cpus N] [--memory SIZE] [--disk SIZE] [--nat=true|false] [--allow RULE]... [--isolate=true|false] [--auto-stop DURATION|0|default] [--idle-action stop|suspend|default]",
		Short: "Change a VM's sizes and settings (cpus, memory and disk while it is stopped; a bridge VM's way out at once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if p.MemoryMiB, p.DiskSize, err = parseSizes(memory, disk); err != nil {
				return err
			}
			if cmd.Flags().Changed("nat") {
				p.NAT = &nat
			}
			if cmd.Flags().Changed("isolate") {
				p.Isolate = &isolate
			}
			return withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
				p.Name = args[0]
				v, err := c.SetVM(ctx, p)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "vm %s: %d cpus, %s memory, %s disk, egress %s, auto-stop %s, idle action %s\n", v.Name, v.VCPU,
					units.FormatSize(int64(v.MemoryMiB)<<20), units.FormatSize(v.DiskSize), egressSummary(v), dash(v.AutoStop), cmp.Or(v.IdleAction, "default"))
				return nil
			})(cmd, args)
		},
	}
	f := cmd.Flags()
	f.IntVar(&p.VCPU, "cpus", 0, "virtual CPUs")
	f.StringVar(&memory, "memory", "", "memory, e.g. 2G")
	f.StringVar(&disk, "disk", "", "work disk size; it only grows")
	f.BoolVar(&nat, "nat", false, "open (true) or close (false) the VM's way out, replacing an allow-list")
	f.StringArrayVar(&p.Allow, "allow", nil, "let it open connections out only to RULE (replaces its list; repeat for more; see vm create)")
	f.BoolVar(&isolate, "isolate", false, "keep it from the other VMs on the bridge")
	f.StringVar(&p.AutoStop, "auto-stop", "", "stop the VM after this long idle (30m), 0 for never, default for the config's")
	f.StringVar(&p.IdleAction, "idle-action", "", "what auto-stop does once it is idle: stop, suspend (resumed on use), or default (auto_idle_action)")
	return cmd
}

func vmKillCommand(env *Env) *cobra.Command {
	var sig string
	return vmVerbCommand(env, "kill", "Signal VMs' VMMs (SIGKILL by default): no power-off through the guest", "killed", true, func(cmd *cobra.Command) {
		cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal for the VMM: KILL, TERM, INT, HUP or QUIT")
	}, func(ctx context.Context, c *client.Client, name string) (api.VM, error) {
		return c.KillVM(ctx, api.VMKillParams{Name: name, Signal: sig})
	})
}

func vmPruneCommand(env *Env) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "prune [-f]",
		Short: "Delete every stopped and failed VM",
		Args:  cobra.NoArgs,
		RunE: withClient(env, func(ctx context.Context, c *client.Client, _ []string) error {
			if !force {
				vms, err := c.VMs(ctx)
				if err != nil {
					return err
				}
				var names []string
				for _, v := range vms {
					if v.State == api.VMStopped || v.State == api.VMFailed {
						names = append(names, v.Name)
					}
				}
				if len(names) == 0 {
					fmt.Fprintln(env.Stdout, "no stopped or failed VMs")
					return nil
				}
				if !cmdio.IsTTY(env.Stdout) {
					return fmt.Errorf("%w: would delete %s; pass -f to delete without asking", api.ErrInvalidArgument, strings.Join(names, ", "))
				}
				fmt.Fprintf(env.Stdout, "delete %s and their disks? [y/N] ", strings.Join(names, ", "))
				var answer string
				_, _ = fmt.Fscanln(env.Stdin, &answer)
				if answer != "y" && answer != "Y" && answer != "yes" {
					return nil
				}
			}
			r, err := c.PruneVMs(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "deleted %d VM(s)", len(r.Deleted))
			if len(r.Deleted) > 0 {
				fmt.Fprintf(env.Stdout, ": %s", strings.Join(r.Deleted, ", "))
			}
			fmt.Fprintln(env.Stdout)
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask")
	return cmd
}

// psCommand is `banger ps`, the short form of `banger vm list`.
func psCommand(env *Env) *cobra.Command {
	cmd := vmListCommand(env, "ps")
	cmd.Short = "List VMs (short for `banger vm list`)"
	return cmd
}
