package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/daemon"
	"github.com/bangerdev/banger/internal/install"
	"github.com/bangerdev/banger/internal/lockfile"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/proc"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/units"
	"github.com/bangerdev/banger/internal/update"
	"github.com/bangerdev/banger/internal/version"
)

// Exit code of `daemon status` when no daemon runs (as systemctl/LSB do).
const exitNotRunning = 3

func (a *App) daemonCommand() *cobra.Command {
	return group("daemon", "Run, start, stop and inspect bangerd", nil,
		a.daemonRunCommand(), a.daemonStartCommand(), a.daemonStopCommand(), a.daemonStatusCommand(), a.daemonPingCommand())
}

func (a *App) daemonRunCommand() *cobra.Command {
	var system, checkMigrations, background, asJSON bool
	var backupStore, restoreStore string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run bangerd in the foreground (logs to stderr and the log file)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := a.layout(system)
			if err != nil {
				return err
			}
			switch {
			case checkMigrations:
				return a.checkMigrations(cmd.Context(), l, asJSON)
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
				opts.Stderr = a.Stderr
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

func (a *App) checkMigrations(ctx context.Context, l paths.Layout, asJSON bool) error {
	res, err := store.Check(ctx, l.Database())
	if err != nil {
		return err
	}
	if asJSON {
		if err := printJSON(a.Stdout, struct {
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
			fmt.Fprintf(a.Stdout, "%s: no store yet; this binary creates schema version %d: can open\n", res.Path, res.BinaryVersion)
		case res.NeedsMigration():
			fmt.Fprintf(a.Stdout, "%s: schema version %d; this binary migrates it to %d: can open\n", res.Path, res.Version, res.BinaryVersion)
		case res.CanOpen():
			fmt.Fprintf(a.Stdout, "%s: schema version %d; this binary knows up to %d: can open\n", res.Path, res.Version, res.BinaryVersion)
		default:
			fmt.Fprintf(a.Stdout, "%s: schema version %d is newer than this binary's %d: cannot open\n", res.Path, res.Version, res.BinaryVersion)
		}
	}
	switch {
	case !res.CanOpen():
		return &ExitError{Code: update.ExitRefuse}
	case res.NeedsMigration():
		return &ExitError{Code: update.ExitWillMigrate}
	}
	return nil
}

func (a *App) daemonStartCommand() *cobra.Command {
	var system bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start bangerd in the background; returns once its socket answers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.startDaemon(cmd.Context(), system, timeout)
		},
	}
	cmd.Flags().BoolVar(&system, "system", false, "use the system layout")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the socket to answer")
	return cmd
}

func (a *App) startDaemon(ctx context.Context, system bool, timeout time.Duration) error {
	l, err := a.layout(system)
	if err != nil {
		return err
	}
	c := client.New(l.Socket(), version.Version)
	if info, err := pingInfo(ctx, c); err == nil {
		fmt.Fprintf(a.Stdout, "bangerd is already running (pid %d, socket %s)\n", info.PID, l.Socket())
		return nil
	}
	if err := os.MkdirAll(l.LogDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", l.LogDir, err)
	}
	startLog, err := os.OpenFile(l.StartupLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("opening start-up log: %w", err)
	}
	defer startLog.Close()
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the banger binary: %w", err)
	}
	args := []string{"daemon", "run", "--background"}
	if system {
		args = append(args, "--system")
	}
	child := exec.Command(self, args...)
	child.Stdout, child.Stderr = startLog, startLog
	// Its own session: the daemon outlives this command and its terminal.
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := child.Start(); err != nil {
		return fmt.Errorf("starting bangerd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()

	deadline := time.After(timeout)
	delay := 20 * time.Millisecond
	for {
		select {
		case err := <-exited:
			out, _ := os.ReadFile(l.StartupLog())
			msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "banger: "))
			if msg == "" {
				msg = fmt.Sprintf("%v; see %s", err, l.LogFile())
			}
			return fmt.Errorf("bangerd exited during start-up: %s", msg)
		case <-deadline:
			return fmt.Errorf("bangerd (pid %d) did not answer on %s within %s; see %s", child.Process.Pid, l.Socket(), timeout, l.LogFile())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if err := c.Ping(ctx); err == nil {
			fmt.Fprintf(a.Stdout, "bangerd started (pid %d, socket %s)\n", child.Process.Pid, l.Socket())
			return nil
		}
		delay = min(delay*2, 250*time.Millisecond)
	}
}

func pingInfo(ctx context.Context, c *client.Client) (api.DaemonInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.DaemonInfo(ctx)
}

func (a *App) daemonStopCommand() *cobra.Command {
	var system bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop bangerd gracefully; returns once it has exited",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := a.layout(system)
			if err != nil {
				return err
			}
			sock := l.Socket()
			if a.socket != "" {
				sock = a.socket
			}
			c := client.New(sock, version.Version)
			res, err := c.Shutdown(cmd.Context())
			if errors.Is(err, client.ErrDaemonNotRunning) {
				fmt.Fprintf(a.Stdout, "bangerd is not running (socket %s)\n", sock)
				return nil
			}
			if err != nil {
				return err
			}
			if err := waitGone(cmd.Context(), c, res.PID, l.LockFile(), a.socket == "", timeout); err != nil {
				return fmt.Errorf("bangerd (pid %d): %w", res.PID, err)
			}
			fmt.Fprintf(a.Stdout, "bangerd stopped (pid %d)\n", res.PID)
			return nil
		},
	}
	cmd.Flags().BoolVar(&system, "system", false, "use the system layout")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the daemon to exit")
	return cmd
}

// waitGone waits until the daemon has exited: its lock is free (when the
// layout is known), its socket no longer answers and its process is gone.
func waitGone(ctx context.Context, c *client.Client, pid int, lock string, useLock bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		held := false
		if useLock {
			held, _ = lockfile.Held(lock)
		}
		if !held && processGone(pid) && errors.Is(c.Ping(ctx), client.ErrDaemonNotRunning) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still running %s after the shutdown request", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (a *App) daemonStatusCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Tell whether bangerd runs, and describe it (exit code 3 when it does not)",
		Args:  cobra.NoArgs,
		RunE: a.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			info, err := c.DaemonInfo(ctx)
			if errors.Is(err, client.ErrDaemonNotRunning) {
				if asJSON {
					_ = printJSON(a.Stdout, map[string]any{"running": false, "socket": c.Socket()})
				} else {
					fmt.Fprintf(a.Stdout, "bangerd is not running (socket %s); start it with `banger daemon start`\n", c.Socket())
				}
				return &ExitError{Code: exitNotRunning}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.Stdout, struct {
					Running bool `json:"running"`
					api.DaemonInfo
				}{true, info})
			}
			mode := info.Mode
			if info.Paths.Home != "" {
				mode += " (" + info.Paths.Home + ")"
			}
			fmt.Fprintln(a.Stdout, "bangerd is running")
			return fields(a.Stdout, [][2]string{
				{"  pid", fmt.Sprint(info.PID)},
				{"  version", formatBuild("bangerd", info.Build)},
				{"  uptime", (time.Duration(info.UptimeSeconds) * time.Second).String()},
				{"  mode", mode},
				{"  socket", info.Paths.Socket},
				{"  config", info.Paths.ConfigFile},
				{"  state", info.Paths.StateDir},
				{"  cache", info.Paths.CacheDir},
				{"  log", info.Paths.LogFile},
				{"  store", fmt.Sprintf("%s (schema %d)", info.Paths.Database, info.SchemaVersion)},
				{"  resources", fmt.Sprintf("%d goroutines, %d open files, %s resident", info.Resources.Goroutines, info.Resources.OpenFiles, units.FormatSize(info.Resources.RSSBytes))},
			})
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *App) daemonPingCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ping",
		Short: "Check that bangerd answers, and print the round-trip time",
		Args:  cobra.NoArgs,
		RunE: a.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			start := time.Now()
			if err := c.Ping(ctx); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "pong from %s in %s\n", c.Socket(), time.Since(start).Round(time.Microsecond))
			return nil
		}),
	}
}

// processGone tells whether pid has exited. A zombie counts as gone: it
// holds nothing, and reaping it is its parent's business.
func processGone(pid int) bool {
	if pid <= 0 {
		return true
	}
	_, err := proc.Identify(pid)
	return errors.Is(err, proc.ErrGone)
}

// systemInstall reads the install record for a daemon in the system
// layout: who else may use the socket, and the helper's socket when it
// runs as the owner (not root). A root daemon without a record is the
// root-only layout: the socket is root's alone.
func systemInstall(opts *daemon.Options) error {
	rec, err := install.ReadRecord("")
	if errors.Is(err, install.ErrNotInstalled) {
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
