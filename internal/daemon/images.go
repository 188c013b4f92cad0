package daemon

import (
	"context"

	"github.com/bangerdev/banger/api"
)

// The image service's methods, adapted for the dispatch table.

func pullImage(ctx context.Context, d *Daemon, p api.ImagePullParams) (api.OperationSummary, error) {
	op, err := d.images.Pull(ctx, p)
	if err != nil {
		return api.OperationSummary{}, err
	}
	return summarize(op.Status()), nil
}

func importImage(ctx context.Context, d *Daemon, p api.ImageImportParams) (api.OperationSummary, error) {
	op, err := d.images.Import(ctx, p)
	if err != nil {
		return api.OperationSummary{}, err
	}
	return summarize(op.Status()), nil
}

func listImages(ctx context.Context, d *Daemon) (api.ImageListResult, error) {
	return d.images.List(ctx)
}

func showImage(ctx context.Context, d *Daemon, p api.ImageRefParams) (api.Image, error) {
	return d.images.Show(ctx, p)
}

func deleteImage(ctx context.Context, d *Daemon, p api.ImageDeleteParams) (api.ImageDeleteResult, error) {
	return d.images.Delete(ctx, p)
}

func pruneImageCache(ctx context.Context, d *Daemon, p api.ImageCachePruneParams) (api.ImageCachePruneResult, error) {
	return d.images.PruneCache(ctx, p)
}
