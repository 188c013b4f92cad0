package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/units"
)

func (a *App) imageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images"},
		Short:   "Pull, import, list and delete images",
	}
	cache := &cobra.Command{Use: "cache", Short: "Manage the OCI blob cache"}
	cache.AddCommand(a.imageCachePruneCommand())
	cmd.AddCommand(a.imagePullCommand(), a.imageImportCommand(), a.imageListCommand(), a.imageShowCommand(), a.imageDeleteCommand(), cache)
	return cmd
}

// finishImageOp follows a pull or import and prints the image it made.
func (a *App) finishImageOp(ctx context.Context, c *client.Client, op api.OperationSummary, verb string, start time.Time, asJSON bool) error {
	final, err := a.followOp(ctx, c, op)
	if err != nil {
		return err
	}
	img, err := c.Image(ctx, final.Result)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(a.Stdout, img)
	}
	fmt.Fprintf(a.Stdout, "%s %s (%s, %s rootfs, %d layer(s)) in %s\n", verb, img.Name, shortID(img.ID),
		units.FormatSize(img.Size), img.Layers, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func shortID(id string) string {
	h := strings.TrimPrefix(id, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

func (a *App) imagePullCommand() *cobra.Command {
	var p api.ImagePullParams
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from a registry and build its root file system",
		Long: "Pull an image from a registry (credentials from the docker config) and build its root file\n" +
			"system. Pulling an image that is already here only checks its digest.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			p.Ref = args[0]
			start := time.Now()
			op, err := c.PullImage(cmd.Context(), p)
			if err != nil {
				return err
			}
			return a.finishImageOp(cmd.Context(), c, op, "pulled", start, asJSON)
		},
	}
	cmd.Flags().StringVar(&p.Platform, "platform", "", "os/arch[/variant] to pull from a multi-platform image (default: the host's)")
	cmd.Flags().BoolVar(&p.Insecure, "insecure", false, "reach the registry over plain HTTP")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the image as JSON")
	return cmd
}

func (a *App) imageImportCommand() *cobra.Command {
	var p api.ImageImportParams
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "import FILE|DIR",
		Short: "Import a `docker save` tarball or an OCI image layout directory",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if p.Path, err = filepath.Abs(args[0]); err != nil {
				return err
			}
			start := time.Now()
			op, err := c.ImportImage(cmd.Context(), p)
			if err != nil {
				return err
			}
			return a.finishImageOp(cmd.Context(), c, op, "imported", start, asJSON)
		},
	}
	cmd.Flags().StringVar(&p.Name, "name", "", "name of the imported image (default: its tag in the archive)")
	cmd.Flags().StringVar(&p.Platform, "platform", "", "os/arch to pick from a multi-platform layout (default: the host's)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the image as JSON")
	return cmd
}

func (a *App) imageListCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			imgs, err := c.Images(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.Stdout, api.ImageListResult{Images: imgs})
			}
			now := time.Now()
			rows := make([][]string, 0, len(imgs))
			for _, img := range imgs {
				rows = append(rows, []string{img.Name, shortID(img.ID), units.FormatSize(img.Size), strconv.Itoa(img.Layers), ago(now, img.CreatedAt), strconv.Itoa(img.UsedBy)})
			}
			return table(a.Stdout, []string{"NAME", "ID", "SIZE", "LAYERS", "CREATED", "VMS"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *App) imageShowCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME|ID",
		Short: "Show one image",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			img, err := c.Image(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.Stdout, img)
			}
			created := "-"
			if img.Config.Created != nil {
				created = img.Config.Created.Local().Format(time.DateTime)
			}
			return fields(a.Stdout, [][2]string{
				{"name", img.Name},
				{"id", img.ID},
				{"digest", dash(img.Digest)},
				{"index digest", dash(img.RepoDigest)},
				{"platform", img.Platform},
				{"source", img.Source},
				{"layers", strconv.Itoa(img.Layers)},
				{"rootfs", fmt.Sprintf("%s (%s)", img.Rootfs, units.FormatSize(img.Size))},
				{"added", fmt.Sprintf("%s (%s ago)", img.CreatedAt.Local().Format(time.DateTime), ago(time.Now(), img.CreatedAt))},
				{"image created", created},
				{"entrypoint", dash(strings.Join(img.Config.Entrypoint, " "))},
				{"cmd", dash(strings.Join(img.Config.Cmd, " "))},
				{"workdir", dash(img.Config.WorkingDir)},
				{"user", dash(img.Config.User)},
				{"env", dash(strings.Join(img.Config.Env, " "))},
				{"used by", fmt.Sprintf("%d VM(s)", img.UsedBy)},
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *App) imageDeleteCommand() *cobra.Command {
	var p api.ImageDeleteParams
	cmd := &cobra.Command{
		Use:     "delete NAME|ID",
		Aliases: []string{"rm"},
		Short:   "Delete an image (refused while VMs use it)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			p.Name = args[0]
			res, err := c.DeleteImage(cmd.Context(), p)
			if err != nil {
				return err
			}
			if res.RootfsRemoved {
				fmt.Fprintf(a.Stdout, "deleted %s (%s, freed %s)\n", res.Name, shortID(res.ID), units.FormatSize(res.BytesFreed))
			} else {
				fmt.Fprintf(a.Stdout, "deleted %s (%s; its rootfs stays, other names use it)\n", res.Name, shortID(res.ID))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&p.Force, "force", false, "delete even though stopped VMs use it (they will not start again)")
	return cmd
}

func (a *App) imageCachePruneCommand() *cobra.Command {
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Empty the OCI blob cache (images already built are not affected)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.PruneImageCache(cmd.Context(), dryRun)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.Stdout, res)
			}
			verb := "freed"
			if res.DryRun {
				verb = "would free"
			}
			fmt.Fprintf(a.Stdout, "%s %s across %d blob(s) in %s\n", verb, units.FormatSize(res.BytesFreed), res.BlobsFreed, res.CacheDir)
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would be freed")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
