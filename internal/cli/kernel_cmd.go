package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/units"
)

func (a *App) kernelCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "kernel",
		Aliases: []string{"kernels"},
		Short:   "Import, list and delete guest kernels",
	}
	cmd.AddCommand(a.kernelImportCommand(), a.kernelPullCommand(), a.kernelPushCommand(), a.kernelListCommand(), a.kernelShowCommand(), a.kernelDeleteCommand())
	return cmd
}

func (a *App) kernelImportCommand() *cobra.Command {
	var p api.KernelImportParams
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "import (--debian | --deb FILE | --kernel FILE [--modules DIR])",
		Short: "Import a kernel bundle: a kernel, its ELF form and its modules",
		Long: "Import a kernel bundle. --debian fetches the host distribution's linux-image-amd64 package with\n" +
			"apt (how a fresh Debian machine gets a guest kernel without other network); --deb imports such a\n" +
			"package file; --kernel takes a bzImage or vmlinux file, with its /lib/modules/VERSION directory\n" +
			"unless everything the guest needs is built in.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			for _, f := range []*string{&p.Deb, &p.Kernel, &p.Modules} {
				if *f != "" {
					if *f, err = filepath.Abs(*f); err != nil {
						return err
					}
				}
			}
			start := time.Now()
			op, err := c.ImportKernel(cmd.Context(), p)
			if err != nil {
				return err
			}
			return a.finishKernelOp(cmd.Context(), c, op, "imported", start, asJSON)
		},
	}
	cmd.Flags().BoolVar(&p.Debian, "debian", false, "fetch and import the distribution's linux-image-amd64 package")
	cmd.Flags().StringVar(&p.Deb, "deb", "", "import a linux-image .deb package file")
	cmd.Flags().StringVar(&p.Kernel, "kernel", "", "import a bzImage or vmlinux file")
	cmd.Flags().StringVar(&p.Modules, "modules", "", "with --kernel: its /lib/modules/VERSION directory")
	cmd.Flags().StringVar(&p.Name, "name", "", "name of the kernel (default: its version)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the kernel as JSON")
	return cmd
}

func (a *App) kernelListCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List kernels, newest (the default) first",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ks, err := c.Kernels(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.Stdout, api.KernelListResult{Kernels: ks})
			}
			now := time.Now()
			rows := make([][]string, 0, len(ks))
			for _, k := range ks {
				name := k.Name
				if k.Default {
					name += " (default)"
				}
				rows = append(rows, []string{name, k.Version, shortID(k.ID), strconv.Itoa(k.Modules), units.FormatSize(k.Size), k.Source, ago(now, k.CreatedAt), strconv.Itoa(k.UsedBy)})
			}
			return table(a.Stdout, []string{"NAME", "VERSION", "ID", "MODULES", "SIZE", "SOURCE", "CREATED", "VMS"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *App) kernelShowCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME|ID|default",
		Short: "Show one kernel",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			k, err := c.Kernel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.Stdout, k)
			}
			return fields(a.Stdout, [][2]string{
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
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *App) kernelDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME|ID",
		Aliases: []string{"rm"},
		Short:   "Delete a kernel (refused while VMs use it)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.DeleteKernel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if res.BundleRemoved {
				fmt.Fprintf(a.Stdout, "deleted kernel %s (freed %s)\n", res.Name, units.FormatSize(res.BytesFreed))
			} else {
				fmt.Fprintf(a.Stdout, "deleted kernel %s (its bundle stays, other names use it)\n", res.Name)
			}
			return nil
		},
	}
}

func (a *App) kernelPullCommand() *cobra.Command {
	var p api.KernelPullParams
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull a kernel image (one `banger kernel push` made, or any image holding /boot/vmlinuz-V and /lib/modules/V)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			p.Ref = args[0]
			start := time.Now()
			op, err := c.PullKernel(cmd.Context(), p)
			if err != nil {
				return err
			}
			return a.finishKernelOp(cmd.Context(), c, op, "pulled", start, asJSON)
		},
	}
	cmd.Flags().StringVar(&p.Name, "name", "", "name of the kernel (default: its version)")
	cmd.Flags().BoolVar(&p.Insecure, "insecure", false, "reach the registry over plain HTTP")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the kernel as JSON")
	return cmd
}

func (a *App) kernelPushCommand() *cobra.Command {
	var p api.KernelPushParams
	cmd := &cobra.Command{
		Use:   "push NAME REF",
		Short: "Publish a kernel to a registry, for `banger kernel pull` elsewhere",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			p.Name, p.Ref = args[0], args[1]
			res, err := c.PushKernel(cmd.Context(), p)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "pushed kernel %s to %s@%s\n", p.Name, res.Ref, res.Digest)
			return nil
		},
	}
	cmd.Flags().BoolVar(&p.Insecure, "insecure", false, "reach the registry over plain HTTP")
	return cmd
}

// finishKernelOp follows an import or pull and prints the kernel it made.
func (a *App) finishKernelOp(ctx context.Context, c *client.Client, op api.OperationSummary, verb string, start time.Time, asJSON bool) error {
	final, err := a.followOp(ctx, c, op)
	if err != nil {
		return err
	}
	k, err := c.Kernel(ctx, final.Result)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(a.Stdout, k)
	}
	fmt.Fprintf(a.Stdout, "%s kernel %s (%s, %d modules, %s) in %s\n", verb, k.Name, k.Version, k.Modules,
		units.FormatSize(k.Size), time.Since(start).Round(100*time.Millisecond))
	return nil
}
