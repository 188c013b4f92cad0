package bangerd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/daemon"
	"github.com/bangerdev/banger/internal/install/record"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/update"
	"github.com/bangerdev/banger/internal/version"
)

func daemonRunCommand(env *Env) *cobra.Command {
	var system, checkMigrations, background, asJSON bool
	var backupStore, restoreStore string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run bangerd in the foreground (logs to stderr and the log file)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := env.Layout(system)
			if err != nil {
				return err
			}
			switch {
			case checkMigrations:
				return reportMigrations(cmd.Context(), env, l, asJSON)
			case backupStore != "":
				return storeCopy(l, backupStore, func(db string) error {
					if err := os.Remove(backupStore); err != nil && !errors.Is(err, fs.ErrNotExist) {
						return err
					}
					return store.Backup(cmd.Context(), db, backupStore)
				})
			case restoreStore != "":
				return storeCopy(l, restoreStore, func(db string) error { return store.Restore(restoreStore, db) })
			}
			cfg, err := config.Load(l.ConfigFile(), hostInfo())
			if err != nil {
				return err
			}
			// Everything the daemon creates is private unless it says
			// otherwise (SQLite's -wal and -shm files, VM disks, logs).
			syscall.Umask(0o077)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			opts := daemon.Options{Layout: l, Config: cfg, Build: version.Info()}
			if l.Mode == paths.ModeSystem {
				if err := systemInstall(&opts); err != nil {
					return err
				}
			}
			if !background {
				opts.Stderr = env.Stderr
			}
			return daemon.Run(ctx, opts)
		},
	}
	cmd.Flags().BoolVar(&system, "system", false, "use the system layout (/var/lib/banger, /run/banger/bangerd.sock, …)")
	cmd.Flags().BoolVar(&checkMigrations, "check-migrations", false, "report whether this binary can open the current store, and exit: 0 as it is, 10 after migrating it, 20 not at all (1: could not tell)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "with --check-migrations: print JSON")
	cmd.Flags().BoolVar(&background, "background", false, "log to the log file only (used by `banger daemon start`)")
	_ = cmd.Flags().MarkHidden("background")
	// `banger update` has these run as the store's owner (update.Bangerd).
	cmd.Flags().StringVar(&backupStore, "backup-store", "", "copy the store to this file beside it, and exit")
	cmd.Flags().StringVar(&restoreStore, "restore-store", "", "put this copy (beside the store) in the store's place, and exit; no daemon may run")
	_ = cmd.Flags().MarkHidden("backup-store")
	_ = cmd.Flags().MarkHidden("restore-store")
	return cmd
}

// storeCopy runs do on the layout's store for a copy at path, which must
// be in the store's own directory: these run for `banger update` as the
// store's owner, and touch nothing else.
func storeCopy(l paths.Layout, path string, do func(db string) error) error {
	db := l.Database()
	if !filepath.IsAbs(path) || filepath.Dir(path) != filepath.Dir(db) || filepath.Base(path) == filepath.Base(db) {
		return fmt.Errorf("%w: %s is not a copy's place beside the store %s", api.ErrInvalidArgument, path, db)
	}
	return do(db)
}

func hostInfo() config.Host {
	h := config.Host{CPUs: runtime.NumCPU()}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		h.MemoryBytes = int64(si.Totalram) * int64(si.Unit)
	}
	return h
}

func reportMigrations(ctx context.Context, env *Env, l paths.Layout, asJSON bool) error {
	res, err := store.Check(ctx, l.Database())
	if err != nil {
		return err
	}
	if asJSON {
		if err := cmdio.JSON(env.Stdout, struct {
			Path           string `json:"path"`
			Exists         bool   `json:"exists"`
			SchemaVersion  int    `json:"schema_version"`
			BinaryVersion  int    `json:"binary_version"`
			CanOpen        bool   `json:"can_open"`
			NeedsMigration bool   `json:"needs_migration"`
		}{res.Path, res.Exists, res.Version, res.BinaryVersion, res.CanOpen(), res.NeedsMigration()}); err != nil {
			return err
		}
	} else {
		switch {
		case !res.Exists:
			fmt.Fprintf(env.Stdout, "%s: no store yet; this binary creates schema version %d: can open\n", res.Path, res.BinaryVersion)
		case res.NeedsMigration():
			fmt.Fprintf(env.Stdout, "%s: schema version %d; this binary migrates it to %d: can open\n", res.Path, res.Version, res.BinaryVersion)
		case res.CanOpen():
			fmt.Fprintf(env.Stdout, "%s: schema version %d; this binary knows up to %d: can open\n", res.Path, res.Version, res.BinaryVersion)
		default:
			fmt.Fprintf(env.Stdout, "%s: schema version %d is newer than this binary's %d: cannot open\n", res.Path, res.Version, res.BinaryVersion)
		}
	}
	switch {
	case !res.CanOpen():
		return &cmdio.ExitError{Code: update.ExitRefuse}
	case res.NeedsMigration():
		return &cmdio.ExitError{Code: update.ExitWillMigrate}
	}
	return nil
}

// systemInstall reads the install record for a daemon in the system
// layout: who else may use the socket, and the helper's socket when it
// runs as the owner (not root). A root daemon without a record is the
// root-only layout: the socket is root's alone.
func systemInstall(opts *daemon.Options) error {
	rec, err := record.Read("")
	if errors.Is(err, record.ErrNotInstalled) {
		if os.Geteuid() != 0 {
			return fmt.Errorf("a daemon in the system layout runs as root or as the installed owner: %w", err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if uid := os.Geteuid(); uid != 0 && uid != rec.UID {
		return fmt.Errorf("the system daemon runs as its owner %s (uid %d), not uid %d: start it with `sudo systemctl start bangerd`", rec.Owner, rec.UID, uid)
	}
	opts.SocketGroup = rec.Group
	if os.Geteuid() != 0 && opts.Config.Network.Helper == "" {
		opts.Config.Network.Helper = rec.HelperSocket
	}
	return nil
}
