package kernel

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/objdir"
	"github.com/bangerdev/banger/internal/store"
)

func (s *Service) toAPI(ctx context.Context, tx *store.Tx, rec store.Kernel, defaultName string) api.Kernel {
	k := api.Kernel{
		Name: rec.Name, ID: rec.ID, Version: rec.Version, Source: rec.Source, Origin: rec.Origin,
		Size: rec.Size, Modules: rec.Modules, CreatedAt: rec.CreatedAt, Dir: s.bundleDir(rec.ID),
		Default: rec.Name == defaultName,
	}
	if s.cfg.UsedBy != nil {
		if n, err := s.cfg.UsedBy(ctx, tx, rec.ID); err == nil {
			k.UsedBy = n
		}
	}
	return k
}

// find looks a kernel up by name, "default" (the newest), or a unique ID
// prefix of at least 6 hex digits.
func (s *Service) find(ctx context.Context, tx *store.Tx, q string) (store.Kernel, error) {
	k, found, err := store.Lookup[store.Kernel]{
		What:   "kernel",
		ByName: func(n string) (store.Kernel, error) { return tx.Kernel(ctx, n) },
		All:    func() ([]store.Kernel, error) { return tx.Kernels(ctx) },
		ID:     func(k store.Kernel) string { return k.ID },
	}.Find(q)
	if found || err != nil {
		return k, err
	}
	if q == "default" || q == "auto" {
		all, err := tx.Kernels(ctx)
		if err != nil {
			return store.Kernel{}, err
		}
		if len(all) == 0 {
			return store.Kernel{}, fmt.Errorf("no kernel: %w; import one with `banger kernel import --debian`", api.ErrNotFound)
		}
		return all[0], nil
	}
	return store.Kernel{}, fmt.Errorf("kernel %q: %w (see `banger kernel list`)", q, api.ErrNotFound)
}

func (s *Service) defaultName(ctx context.Context, tx *store.Tx) string {
	all, err := tx.Kernels(ctx)
	if err != nil || len(all) == 0 {
		return ""
	}
	return all[0].Name
}

// List returns every kernel, newest first.
func (s *Service) List(ctx context.Context) (api.KernelListResult, error) {
	res := api.KernelListResult{Kernels: []api.Kernel{}}
	err := s.cfg.Store.View(ctx, func(tx *store.Tx) error {
		all, err := tx.Kernels(ctx)
		if err != nil {
			return err
		}
		def := s.defaultName(ctx, tx)
		for _, k := range all {
			res.Kernels = append(res.Kernels, s.toAPI(ctx, tx, k, def))
		}
		return nil
	})
	return res, err
}

// Show returns one kernel.
func (s *Service) Show(ctx context.Context, p api.KernelRefParams) (api.Kernel, error) {
	var k api.Kernel
	err := s.cfg.Store.View(ctx, func(tx *store.Tx) error {
		rec, err := s.find(ctx, tx, p.Name)
		if err != nil {
			return err
		}
		k = s.toAPI(ctx, tx, rec, s.defaultName(ctx, tx))
		return nil
	})
	return k, err
}

// Delete removes a kernel's name, and its bundle with the last name. It
// refuses while VMs use the bundle.
func (s *Service) Delete(ctx context.Context, p api.KernelRefParams) (api.KernelDeleteResult, error) {
	s.installMu.Lock()
	defer s.installMu.Unlock()
	var res api.KernelDeleteResult
	err := objdir.Delete(s.cfg.Dir, "kernel.delete", "bundle", s.cfg.Log, func(setAside func(string) error) error {
		return s.cfg.Store.Update(ctx, func(tx *store.Tx) error {
			rec, err := s.find(ctx, tx, p.Name)
			if err != nil {
				return err
			}
			res.Name, res.ID = rec.Name, rec.ID
			if s.cfg.UsedBy != nil {
				n, err := s.cfg.UsedBy(ctx, tx, rec.ID)
				if err != nil {
					return fmt.Errorf("checking the VMs of kernel %s: %w", rec.Name, err)
				}
				if n > 0 {
					return fmt.Errorf("kernel %s: %w by %d VM(s); delete them first", rec.Name, api.ErrInUse, n)
				}
			}
			remaining, err := tx.DeleteKernel(ctx, rec.Name)
			if err != nil || remaining > 0 {
				return err
			}
			// Set aside inside the transaction: if the commit fails, or the
			// daemon dies before it, the bundle comes back (sweep).
			if err := setAside(filepath.Base(s.bundleDir(rec.ID))); err != nil {
				return fmt.Errorf("removing kernel %s: %w", rec.Name, err)
			}
			res.BundleRemoved, res.BytesFreed = true, rec.Size
			return nil
		})
	})
	if err != nil {
		return api.KernelDeleteResult{}, err
	}
	s.cfg.Log.Info("kernel deleted", "name", res.Name, "bundle_removed", res.BundleRemoved)
	return res, nil
}
