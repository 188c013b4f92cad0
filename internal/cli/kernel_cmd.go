package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/units"
)

func kernelCommand(env *Env) *cobra.Command {
	return cmdio.Group("kernel", "Import, list and delete guest kernels", []string{"kernels"},
		kernelImportCommand(env), kernelPullCommand(env), kernelPushCommand(env), kernelListCommand(env), kernelShowCommand(env), kernelDeleteCommand(env))
}

// kernelMade follows an import or pull and prints the kernel it made.
func kernelMade(env *Env, cmd *cobra.Command, verb string, start func(context.Context, *client.Client, []string) (api.OperationSummary, error)) *cobra.Command {
	return makes(env, cmd, "print the kernel as JSON", start, func(c *client.Client) func(context.Context, string) (api.Kernel, error) { return c.Kernel },
		func(k api.Kernel, took time.Duration) error {
			_, err := fmt.Fprintf(env.Stdout, "%s kernel %s (%s, %d modules, %s) in %s\n", verb, k.Name, k.Version, k.Modules,
				units.FormatSize(k.Size), took.Round(100*time.Millisecond))
			return err
		})
}

func kernelImportCommand(env *Env) *cobra.Command {
	var p api.KernelImportParams
	cmd := kernelMade(env, &cobra.Command{
		Use:   "import (--debian | --deb FILE | --kernel FILE [--modules DIR])",
		Short: "Import a kernel bundle: a kernel, its ELF form and its modules",
		Long: "Import a kernel bundle. --debian fetches the host distribution's linux-image-amd64 package with\n" +
			"apt (how a fresh Debian machine gets a guest kernel without other network); --deb imports such a\n" +
			"package file; --kernel takes a bzImage or vmlinux file, with its /lib/modules/VERSION directory\n" +
			"unless everything the guest needs is built in.",
		Args: cobra.NoArgs,
	}, "imported", func(ctx context.Context, c *client.Client, _ []string) (api.OperationSummary, error) {
		for _, f := range []*string{&p.Deb, &p.Kernel, &p.Modules} {
			if *f != "" {
				var err error
				if *f, err = filepath.Abs(*f); err != nil {
					return api.OperationSummary{}, err
				}
			}
		}
		return c.ImportKernel(ctx, p)
	})
	cmd.Flags().BoolVar(&p.Debian, "debian", false, "fetch and import the distribution's linux-image-amd64 package")
	cmd.Flags().StringVar(&p.Deb, "deb", "", "import a linux-image .deb package file")
	cmd.Flags().StringVar(&p.Kernel, "kernel", "", "import a bzImage or vmlinux file")
	cmd.Flags().StringVar(&p.Modules, "modules", "", "with --kernel: its /lib/modules/VERSION directory")
	cmd.Flags().StringVar(&p.Name, "name", "", "name of the kernel (default: its version)")
	return cmd
}

func kernelListCommand(env *Env) *cobra.Command {
	return listed(env, &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List kernels, newest (the default) first", Args: cobra.NoArgs},
		(*client.Client).Kernels, func(ks []api.Kernel) any { return api.KernelListResult{Kernels: ks} },
		[]string{"NAME", "VERSION", "ID", "MODULES", "SIZE", "SOURCE", "CREATED", "VMS"}, func(now time.Time, k api.Kernel) []string {
			name := k.Name
			if k.Default {
				name += " (default)"
			}
			return []string{name, k.Version, api.ShortID(k.ID), strconv.Itoa(k.Modules), units.FormatSize(k.Size), k.Source, ago(now, k.CreatedAt), strconv.Itoa(k.UsedBy)}
		})
}

func kernelShowCommand(env *Env) *cobra.Command {
	return printed(env, &cobra.Command{
		Use:   "show NAME|ID|default",
		Short: "Show one kernel",
		Args:  cobra.ExactArgs(1),
	}, "print JSON", func(ctx context.Context, c *client.Client, args []string) (api.Kernel, error) {
		return c.Kernel(ctx, args[0])
	}, func(k api.Kernel) error {
		return cmdio.Fields(env.Stdout, [][2]string{
			{"name", k.Name},
			{"version", k.Version},
			{"id", k.ID},
			{"default", strconv.FormatBool(k.Default)},
			{"source", k.Source + " (" + k.Origin + ")"},
			{"modules", strconv.Itoa(k.Modules)},
			{"bundle", fmt.Sprintf("%s (%s)", k.Dir, units.FormatSize(k.Size))},
			{"imported", fmt.Sprintf("%s (%s ago)", k.CreatedAt.Local().Format(time.DateTime), ago(time.Now(), k.CreatedAt))},
			{"used by", fmt.Sprintf("%d VM(s)", k.UsedBy)},
		})
	})
}

func kernelDeleteCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME|ID",
		Aliases: []string{"rm"},
		Short:   "Delete a kernel (refused while VMs use it)",
		Args:    cobra.ExactArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			res, err := c.DeleteKernel(ctx, args[0])
			if err != nil {
				return err
			}
			if res.BundleRemoved {
				fmt.Fprintf(env.Stdout, "deleted kernel %s (freed %s)\n", res.Name, units.FormatSize(res.BytesFreed))
			} else {
				fmt.Fprintf(env.Stdout, "deleted kernel %s (its bundle stays, other names use it)\n", res.Name)
			}
			return nil
		}),
	}
}

func kernelPullCommand(env *Env) *cobra.Command {
	var p api.KernelPullParams
	cmd := kernelMade(env, &cobra.Command{
		Use:   "pull REF",
		Short: "Pull a kernel image (one `banger kernel push` made, or any image holding /boot/vmlinuz-V and /lib/modules/V)",
		Args:  cobra.ExactArgs(1),
	}, "pulled", func(ctx context.Context, c *client.Client, args []string) (api.OperationSummary, error) {
		p.Ref = args[0]
		return c.PullKernel(ctx, p)
	})
	cmd.Flags().StringVar(&p.Name, "name", "", "name of the kernel (default: its version)")
	cmd.Flags().BoolVar(&p.Insecure, "insecure", false, "reach the registry over plain HTTP")
	return cmd
}

func kernelPushCommand(env *Env) *cobra.Command {
	var p api.KernelPushParams
	cmd := &cobra.Command{
		Use:   "push NAME REF",
		Short: "Publish a kernel to a registry, for `banger kernel pull` elsewhere",
		Args:  cobra.ExactArgs(2),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			p.Name, p.Ref = args[0], args[1]
			res, err := c.PushKernel(ctx, p)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "pushed kernel %s to %s@%s\n", p.Name, res.Ref, res.Digest)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&p.Insecure, "insecure", false, "reach the registry over plain HTTP")
	return cmd
}
