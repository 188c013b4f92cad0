package daemon

import (
	"context"

	"github.com/bangerdev/banger/api"
)

// The kernel service's methods, adapted for the dispatch table.

func importKernel(ctx context.Context, d *Daemon, p api.KernelImportParams) (api.OperationSummary, error) {
	op, err := d.kernels.Import(ctx, p)
	if err != nil {
		return api.OperationSummary{}, err
	}
	return summarize(op.Status()), nil
}

func listKernels(ctx context.Context, d *Daemon) (api.KernelListResult, error) {
	return d.kernels.List(ctx)
}

func showKernel(ctx context.Context, d *Daemon, p api.KernelRefParams) (api.Kernel, error) {
	return d.kernels.Show(ctx, p)
}

func deleteKernel(ctx context.Context, d *Daemon, p api.KernelRefParams) (api.KernelDeleteResult, error) {
	return d.kernels.Delete(ctx, p)
}

func bootTest(ctx context.Context, d *Daemon, p api.BootTestParams) (api.BootTestResult, error) {
	return d.bootTest.Run(ctx, p)
}

func pullKernel(ctx context.Context, d *Daemon, p api.KernelPullParams) (api.OperationSummary, error) {
	op, err := d.kernels.Pull(ctx, p)
	if err != nil {
		return api.OperationSummary{}, err
	}
	return summarize(op.Status()), nil
}

func pushKernel(ctx context.Context, d *Daemon, p api.KernelPushParams) (api.KernelPushResult, error) {
	return d.kernels.Push(ctx, p)
}
