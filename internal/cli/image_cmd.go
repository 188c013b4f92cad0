package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/units"
)

func imageCommand(env *Env) *cobra.Command {
	return cmdio.Group("image", "Pull, import, list and delete images", []string{"images"},
		imagePullCommand(env), imageImportCommand(env), imageListCommand(env), imageShowCommand(env), imageDeleteCommand(env), imageWarmCommand(env), imageTemplatesCommand(env),
		cmdio.Group("cache", "Manage the OCI blob cache", nil, imageCachePruneCommand(env)))
}

// imageMade follows a pull or import and prints the image it made.
func imageMade(env *Env, cmd *cobra.Command, verb string, start func(context.Context, *client.Client, []string) (api.OperationSummary, error)) *cobra.Command {
	return makes(env, cmd, "print the image as JSON", start, func(c *client.Client) func(context.Context, string) (api.Image, error) { return c.Image },
		func(img api.Image, took time.Duration) error {
			_, err := fmt.Fprintf(env.Stdout, "%s %s (%s, %s rootfs, %d layer(s)) in %s\n", verb, img.Name, api.ShortID(img.ID),
				units.FormatSize(img.Size), img.Layers, took.Round(100*time.Millisecond))
			return err
		})
}

func imagePullCommand(env *Env) *cobra.Command {
	var p api.ImagePullParams
	cmd := imageMade(env, &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from a registry and build its root file system",
		Long: "Pull an image from a registry (credentials from the docker config) and build its root file\n" +
			"system. Pulling an image that is already here only checks its digest.",
		Args: cobra.ExactArgs(1),
	}, "pulled", func(ctx context.Context, c *client.Client, args []string) (api.OperationSummary, error) {
		p.Ref = args[0]
		return c.PullImage(ctx, p)
	})
	cmd.Flags().StringVar(&p.Platform, "platform", "", "os/arch[/variant] to pull from a multi-platform image (default: the host's)")
	cmd.Flags().BoolVar(&p.Insecure, "insecure", false, "reach the registry over plain HTTP")
	return cmd
}

func imageImportCommand(env *Env) *cobra.Command {
	var p api.ImageImportParams
	cmd := imageMade(env, &cobra.Command{
		Use:   "import FILE|DIR",
		Short: "Import a `docker save` tarball or an OCI image layout directory",
		Args:  cobra.ExactArgs(1),
	}, "imported", func(ctx context.Context, c *client.Client, args []string) (api.OperationSummary, error) {
		var err error
		if p.Path, err = filepath.Abs(args[0]); err != nil {
			return api.OperationSummary{}, err
		}
		return c.ImportImage(ctx, p)
	})
	cmd.Flags().StringVar(&p.Name, "name", "", "name of the imported image (default: its tag in the archive)")
	cmd.Flags().StringVar(&p.Platform, "platform", "", "os/arch to pick from a multi-platform layout (default: the host's)")
	return cmd
}

func imageListCommand(env *Env) *cobra.Command {
	return listed(env, &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List images", Args: cobra.NoArgs},
		(*client.Client).Images, func(imgs []api.Image) any { return api.ImageListResult{Images: imgs} },
		[]string{"NAME", "ID", "SIZE", "LAYERS", "CREATED", "VMS"}, func(now time.Time, img api.Image) []string {
			return []string{img.Name, api.ShortID(img.ID), units.FormatSize(img.Size), strconv.Itoa(img.Layers), ago(now, img.CreatedAt), strconv.Itoa(img.UsedBy)}
		})
}

func imageShowCommand(env *Env) *cobra.Command {
	return printed(env, &cobra.Command{
		Use:   "show NAME|ID",
		Short: "Show one image",
		Args:  cobra.ExactArgs(1),
	}, "print JSON", func(ctx context.Context, c *client.Client, args []string) (api.Image, error) {
		return c.Image(ctx, args[0])
	}, func(img api.Image) error {
		created := "-"
		if img.Config.Created != nil {
			created = img.Config.Created.Local().Format(time.DateTime)
		}
		return cmdio.Fields(env.Stdout, [][2]string{
			{"name", img.Name},
			{"id", img.ID},
			{"digest", dash(img.Digest)},
			{"index digest", dash(img.RepoDigest)},
			{"platform", img.Platform},
			{"source", img.Source},
			{"layers", strconv.Itoa(img.Layers)},
			{"rootfs", fmt.Sprintf("%s (%s)", img.Rootfs, units.FormatSize(img.Size))},
			{"systemd", dash(img.Init)},
			{"added", fmt.Sprintf("%s (%s ago)", img.CreatedAt.Local().Format(time.DateTime), ago(time.Now(), img.CreatedAt))},
			{"image created", created},
			{"entrypoint", dash(strings.Join(img.Config.Entrypoint, " "))},
			{"cmd", dash(strings.Join(img.Config.Cmd, " "))},
			{"workdir", dash(img.Config.WorkingDir)},
			{"user", dash(img.Config.User)},
			{"env", dash(strings.Join(img.Config.Env, " "))},
			{"used by", fmt.Sprintf("%d VM(s)", img.UsedBy)},
		})
	})
}

func imageDeleteCommand(env *Env) *cobra.Command {
	var p api.ImageDeleteParams
	cmd := &cobra.Command{
		Use:     "delete NAME|ID",
		Aliases: []string{"rm"},
		Short:   "Delete an image (refused while VMs use it)",
		Args:    cobra.ExactArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			p.Name = args[0]
			res, err := c.DeleteImage(ctx, p)
			if err != nil {
				return err
			}
			if res.RootfsRemoved {
				fmt.Fprintf(env.Stdout, "deleted %s (%s, freed %s)\n", res.Name, api.ShortID(res.ID), units.FormatSize(res.BytesFreed))
			} else {
				fmt.Fprintf(env.Stdout, "deleted %s (%s; its rootfs stays, other names use it)\n", res.Name, api.ShortID(res.ID))
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&p.Force, "force", false, "delete even though stopped VMs use it (they will not start again)")
	return cmd
}

func imageCachePruneCommand(env *Env) *cobra.Command {
	var dryRun bool
	cmd := printed(env, &cobra.Command{
		Use:   "prune",
		Short: "Empty the OCI blob cache (images already built are not affected)",
		Args:  cobra.NoArgs,
	}, "print JSON", func(ctx context.Context, c *client.Client, _ []string) (api.ImageCachePruneResult, error) {
		return c.PruneImageCache(ctx, dryRun)
	}, func(res api.ImageCachePruneResult) error {
		verb := "freed"
		if res.DryRun {
			verb = "would free"
		}
		_, err := fmt.Fprintf(env.Stdout, "%s %s across %d blob(s) in %s\n", verb, units.FormatSize(res.BytesFreed), res.BlobsFreed, res.CacheDir)
		return err
	})
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would be freed")
	return cmd
}
