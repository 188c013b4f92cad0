package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/lockfile"
	"github.com/bangerdev/banger/internal/proc"
	"github.com/bangerdev/banger/internal/units"
	"github.com/bangerdev/banger/internal/version"
)

// Exit code of `daemon status` when no daemon runs (as systemctl/LSB do).
const exitNotRunning = 3

func daemonCommand(env *Env) *cobra.Command {
	return cmdio.Group("daemon", "Run, start, stop and inspect bangerd", nil,
		handOver(env, &cobra.Command{Use: "run", Short: "Run bangerd in the foreground (logs to stderr and the log file)"}),
		daemonStartCommand(env), daemonStopCommand(env), daemonStatusCommand(env), daemonPingCommand(env))
}

func daemonStartCommand(env *Env) *cobra.Command {
	var system bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start bangerd in the background; returns once its socket answers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return startDaemon(cmd.Context(), env, system, timeout)
		},
	}
	cmd.Flags().BoolVar(&system, "system", false, "use the system layout")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the socket to answer")
	return cmd
}

func startDaemon(ctx context.Context, env *Env, system bool, timeout time.Duration) error {
	l, err := env.Layout(system)
	if err != nil {
		return err
	}
	c := client.New(l.Socket(), version.Version)
	if info, err := pingInfo(ctx, c); err == nil {
		fmt.Fprintf(env.Stdout, "bangerd is already running (pid %d, socket %s)\n", info.PID, l.Socket())
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
	bangerd, err := bangerdPath()
	if err != nil {
		return err
	}
	args := []string{"--background"}
	if system {
		args = append(args, "--system")
	}
	child := exec.Command(bangerd, args...)
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
			fmt.Fprintf(env.Stdout, "bangerd started (pid %d, socket %s)\n", child.Process.Pid, l.Socket())
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

func daemonStopCommand(env *Env) *cobra.Command {
	var system bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop bangerd gracefully; returns once it has exited",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := env.Layout(system)
			if err != nil {
				return err
			}
			sock := l.Socket()
			if env.socket != "" {
				sock = env.socket
			}
			c := client.New(sock, version.Version)
			res, err := c.Shutdown(cmd.Context())
			if errors.Is(err, client.ErrDaemonNotRunning) {
				fmt.Fprintf(env.Stdout, "bangerd is not running (socket %s)\n", sock)
				return nil
			}
			if err != nil {
				return err
			}
			if err := waitGone(cmd.Context(), c, res.PID, l.LockFile(), env.socket == "", timeout); err != nil {
				return fmt.Errorf("bangerd (pid %d): %w", res.PID, err)
			}
			fmt.Fprintf(env.Stdout, "bangerd stopped (pid %d)\n", res.PID)
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

func daemonStatusCommand(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Tell whether bangerd runs, and describe it (exit code 3 when it does not)",
		Args:  cobra.NoArgs,
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			info, err := c.DaemonInfo(ctx)
			if errors.Is(err, client.ErrDaemonNotRunning) {
				if asJSON {
					_ = cmdio.JSON(env.Stdout, map[string]any{"running": false, "socket": c.Socket()})
				} else {
					fmt.Fprintf(env.Stdout, "bangerd is not running (socket %s); start it with `banger daemon start`\n", c.Socket())
				}
				return &cmdio.ExitError{Code: exitNotRunning}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return cmdio.JSON(env.Stdout, struct {
					Running bool `json:"running"`
					api.DaemonInfo
				}{true, info})
			}
			mode := info.Mode
			if info.Paths.Home != "" {
				mode += " (" + info.Paths.Home + ")"
			}
			fmt.Fprintln(env.Stdout, "bangerd is running")
			return cmdio.Fields(env.Stdout, [][2]string{
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

func daemonPingCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "ping",
		Short: "Check that bangerd answers, and print the round-trip time",
		Args:  cobra.NoArgs,
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			start := time.Now()
			if err := c.Ping(ctx); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "pong from %s in %s\n", c.Socket(), time.Since(start).Round(time.Microsecond))
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
