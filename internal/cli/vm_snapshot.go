package cli

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/units"
)

// vmSnapshotCommand is `vm snapshot`: checkpoints of a VM.
func vmSnapshotCommand(env *Env) *cobra.Command {
	create := printed(env, &cobra.Command{
		Use:   "create NAME [TAG]",
		Short: "Save a running VM's memory and work disk as a checkpoint (TAG: default the time); it runs on",
		Args:  cobra.RangeArgs(1, 2),
	}, "print JSON", func(ctx context.Context, c *client.Client, args []string) (api.Snapshot, error) {
		p := api.VMSnapshotParams{Name: args[0]}
		if len(args) == 2 {
			p.Tag = args[1]
		}
		return c.CreateSnapshot(ctx, p)
	}, func(s api.Snapshot) error {
		_, err := fmt.Fprintf(env.Stdout, "saved %s of %s (%s of memory, %s of disk)\n", s.Tag, s.VM, units.FormatSize(s.StateBytes), units.FormatSize(s.DiskUsed))
		return err
	})
	var list *cobra.Command
	list = listed(env, &cobra.Command{Use: "list NAME", Aliases: []string{"ls"}, Short: "List a VM's checkpoints", Args: cobra.ExactArgs(1)},
		func(c *client.Client, ctx context.Context) ([]api.Snapshot, error) {
			r, err := c.ListSnapshots(ctx, list.Flags().Arg(0))
			return r.Snapshots, err
		}, func(s []api.Snapshot) any { return api.SnapshotListResult{Snapshots: s} },
		[]string{"TAG", "CREATED", "MEMORY", "DISK", "SHAPE"}, func(now time.Time, s api.Snapshot) []string {
			return []string{s.Tag, ago(now, s.Created) + " ago", units.FormatSize(s.StateBytes), units.FormatSize(s.DiskUsed),
				fmt.Sprintf("%d cpus, %s", s.VCPU, units.FormatSize(int64(s.MemoryMiB)<<20))}
		})
	var tag string
	restore := printed(env, &cobra.Command{
		Use:   "restore NAME TAG",
		Short: "Roll a VM back to a checkpoint, memory and disk (what it did since is lost); it runs from there",
		Args:  cobra.ExactArgs(2),
	}, "print the VM as JSON", func(ctx context.Context, c *client.Client, args []string) (api.VM, error) {
		tag = args[1]
		return c.RestoreSnapshot(ctx, api.VMSnapshotParams{Name: args[0], Tag: tag})
	}, func(v api.VM) error {
		_, err := fmt.Fprintf(env.Stdout, "%s rolled back to snapshot %s: %s\n", v.Name, tag, v.State)
		return err
	})
	del := printed(env, &cobra.Command{
		Use:     "delete NAME TAG",
		Aliases: []string{"rm"},
		Short:   "Delete a checkpoint",
		Args:    cobra.ExactArgs(2),
	}, "print JSON", func(ctx context.Context, c *client.Client, args []string) (api.Snapshot, error) {
		return c.DeleteSnapshot(ctx, api.VMSnapshotParams{Name: args[0], Tag: args[1]})
	}, func(s api.Snapshot) error {
		_, err := fmt.Fprintf(env.Stdout, "deleted %s of %s (%s freed)\n", s.Tag, s.VM, units.FormatSize(s.StateBytes+s.DiskUsed))
		return err
	})
	return cmdio.Group("snapshot", "Checkpoint a VM, list, roll back to and delete its checkpoints", []string{"snapshots"}, create, list, restore, del)
}

// vmForkCommand is `vm fork`.
func vmForkCommand(env *Env) *cobra.Command {
	var p api.VMForkParams
	cmd := printed(env, &cobra.Command{
		Use:   "fork NAME [--count N] [--name PREFIX] [--partial] [--checkpoint TAG [--stopped]]",
		Short: "Make running copies of a running VM, each with its own name, identity, address and work disk",
		Long: "Make running copies of a running VM: its memory and work disk are saved in one short pause (it\n" +
			"runs on), and each copy starts from them as it was, processes and files, under a name,\n" +
			"hostname, SSH host key, machine-id, MAC and address of its own. All are made or none, unless\n" +
			"--partial: then the copies that started stay, and each that did not is listed with its error.\n" +
			"--checkpoint TAG starts them from that checkpoint instead, whatever NAME is doing now;\n" +
			"with --stopped the copies are not started: each keeps the checkpoint as its own, so it\n" +
			"outlives NAME (`vm snapshot restore COPY TAG` or a fork of COPY starts it).",
		Args: cobra.ExactArgs(1),
	}, "print the copies as JSON", func(ctx context.Context, c *client.Client, args []string) (api.VMForkResult, error) {
		p.Name = args[0]
		return c.ForkVM(ctx, p)
	}, func(r api.VMForkResult) error {
		rows := make([][]string, 0, len(r.VMs)+len(r.Failed))
		for _, v := range r.VMs {
			rows = append(rows, []string{v.Name, v.State, dash(v.IP)})
		}
		for _, f := range r.Failed {
			rows = append(rows, []string{f.Name, "failed: " + f.Error, "-"})
		}
		return cmdio.Table(env.Stdout, []string{"NAME", "STATE", "IP"}, rows)
	})
	cmd.Flags().StringVar(&p.Checkpoint, "checkpoint", "", "start the copies from this checkpoint of NAME (`vm snapshot list`), in any state of NAME")
	cmd.Flags().BoolVar(&p.Stopped, "stopped", false, "with --checkpoint: make the copies stopped, each holding the checkpoint under the same tag")
	cmd.Flags().BoolVar(&p.Partial, "partial", false, "keep the copies that started when others fail (each failure listed)")
	cmd.Flags().BoolVar(&p.NoShare, "no-share", false, "the copies share no memory pages, with each other or any VM (by default they share the saved state's pages until each writes them)")
	cmd.Flags().IntVarP(&p.Count, "count", "n", 1, "how many copies (1 to 16)")
	cmd.Flags().StringVar(&p.Prefix, "name", "", "name the copy PREFIX, or the copies PREFIX-1..N (default: NAME-fork-N)")
	return cmd
}

// imageWarmCommand is `image warm`.
func imageWarmCommand(env *Env) *cobra.Command {
	var p api.ImageWarmParams
	var memory, disk string
	var nat bool
	cmd := printed(env, &cobra.Command{
		Use:   "warm REF [--cpus N] [--memory SIZE] [--disk SIZE] [--network MODE]",
		Short: "Make the template new VMs of this image and shape start from (vm create makes it on first use)",
		Args:  cobra.ExactArgs(1),
	}, "print JSON", func(ctx context.Context, c *client.Client, args []string) (api.Template, error) {
		p.Image = args[0]
		var err error
		if p.MemoryMiB, p.DiskSize, err = parseSizes(memory, disk); err != nil {
			return api.Template{}, err
		}
		return c.WarmImage(ctx, p)
	}, func(t api.Template) error {
		_, err := fmt.Fprintf(env.Stdout, "template %s of %s ready (%s cpus, %s, %s disk, nic %s): %s of memory saved; made in %.1fs\n",
			t.ID, t.Image, strconv.Itoa(t.VCPU), units.FormatSize(int64(t.MemoryMiB)<<20), units.FormatSize(t.DiskSize), t.NIC,
			units.FormatSize(t.StateBytes), t.Took)
		return err
	})
	f := cmd.Flags()
	f.StringVar(&p.Kernel, "kernel", "", "kernel (default: default_kernel)")
	f.IntVar(&p.VCPU, "cpus", 0, "virtual CPUs (default: vm_defaults.vcpu)")
	f.StringVar(&memory, "memory", "", "memory (default: vm_defaults.memory_mib)")
	f.StringVar(&disk, "disk", "", "work disk size (default: vm_defaults.disk_size)")
	f.StringVar(&p.Network, "network", "", "bridge, user or none (default: network.mode)")
	f.BoolVar(&nat, "nat", false, "a user-network VM with connections out (default: network.nat)")
	cmd.PreRun = func(cmd *cobra.Command, _ []string) {
		if cmd.Flags().Changed("nat") {
			p.NAT = &nat
		}
	}
	return cmd
}

// imageTemplatesCommand is `image templates`.
func imageTemplatesCommand(env *Env) *cobra.Command {
	return listed(env, &cobra.Command{Use: "templates", Short: "List the templates new VMs start from, and what they take on disk", Args: cobra.NoArgs},
		(*client.Client).Templates, func(t []api.Template) any { return api.TemplateListResult{Templates: t} },
		[]string{"ID", "IMAGE", "KERNEL", "SHAPE", "NIC", "MEMORY SAVED", "DISK", "AGE"}, func(now time.Time, t api.Template) []string {
			return []string{t.ID, t.Image, t.Kernel, fmt.Sprintf("%d cpus, %s, %s disk", t.VCPU, units.FormatSize(int64(t.MemoryMiB)<<20), units.FormatSize(t.DiskSize)),
				t.NIC, units.FormatSize(t.StateBytes), units.FormatSize(t.DiskUsed), ago(now, t.Created)}
		})
}
