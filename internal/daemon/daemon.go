// Package daemon is bangerd: it owns the layout's directories, the lock, the
// store and the API socket, wires the services together and dispatches RPC
// methods to them through one table (dispatch.go). It is the only package
// that knows every service.
package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/lockfile"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/peer"
	"github.com/bangerdev/banger/internal/rpc"
	"github.com/bangerdev/banger/internal/store"
)

// ErrAlreadyRunning means another daemon holds this layout's lock.
var ErrAlreadyRunning = errors.New("another bangerd is already running for this home")

// Options configure one daemon run.
type Options struct {
	Layout paths.Layout
	Config config.Config
	Build  api.BuildInfo
	// Stderr, when non-nil, receives the log as well as the log file
	// (foreground runs).
	Stderr io.Writer
	// OpRetention is how long finished operations stay listed (default 1h).
	OpRetention time.Duration
	// ShutdownGrace bounds how long a stop waits for calls in flight
	// (default 10s).
	ShutdownGrace time.Duration
	// Ready, when non-nil, is called once the socket accepts connections.
	Ready func()

	// SocketGroup may also use the socket (0660, its directory 0750),
	// in the system layout: the install's --group. Empty: the daemon's
	// user alone (0600).
	SocketGroup string

	// AgentBin is the guest agent binary (default: banger-agent next to
	// the running executable).
	AgentBin string

	// extraOps lets this package's tests list registries of their own.
	extraOps []opSource
}

// Daemon is a running bangerd.
type Daemon struct {
	layout     paths.Layout
	cfg        config.Config
	build      api.BuildInfo
	log        *slog.Logger
	store      *store.Store
	started    time.Time
	instanceID string

	// lifetime is the parent of every operation: it ends when the daemon
	// stops, canceling work still in flight.
	lifetime context.Context
	// stop requests a graceful shutdown.
	stop context.CancelFunc

	svc     *services
	methods map[string]method
}

// Run serves until ctx ends or a client calls shutdown. It returns once
// every connection is closed, the store is closed and the lock is released.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.OpRetention <= 0 {
		opts.OpRetention = time.Hour
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	l := opts.Layout
	group, groupErr := socketGroup(l, opts.SocketGroup)
	if err := prepareDirs(l, group); err != nil {
		return err
	}
	logFile, err := openLog(l.LogFile())
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := newLogger(logFile, opts.Stderr, opts.Config.LogLevel)
	if groupErr != nil {
		log.Warn("socket restricted to the daemon's user", "reason", groupErr)
	}

	lock, err := lockfile.Acquire(l.LockFile())
	if errors.Is(err, lockfile.ErrLocked) {
		return fmt.Errorf("%w: %w; stop it with `banger daemon stop` or use another BANGER_HOME", ErrAlreadyRunning, err)
	}
	if err != nil {
		return err
	}
	defer lock.Release()

	st, err := store.Open(ctx, l.Database())
	if err != nil {
		return err
	}
	defer st.Close()

	lifetime, stop := context.WithCancel(ctx)
	defer stop()
	d := &Daemon{
		layout: l, cfg: opts.Config, build: opts.Build, log: log, store: st,
		started: time.Now(), lifetime: lifetime, stop: stop,
	}
	if d.instanceID, err = d.initMeta(ctx); err != nil {
		return err
	}
	if d.svc, err = d.wire(opts); err != nil {
		return err
	}
	if d.svc.dns != nil {
		defer d.svc.dns.Close()
	}
	d.methods = rpcMethods(d.svc)

	ln, err := listen(l, group)
	if err != nil {
		return err
	}
	log.Info("bangerd started", "pid", os.Getpid(), "version", d.build.Version, "commit", d.build.Commit,
		"mode", l.Mode, "socket", l.Socket(), "schema", st.SchemaVersion())
	for _, v := range opts.Config.Values() {
		log.Debug("config", "key", v.Key, "value", v.Value, "source", v.Source)
	}
	if opts.Ready != nil {
		opts.Ready()
	}

	var wg sync.WaitGroup
	wg.Go(func() { d.background(lifetime, opts.OpRetention) })
	wg.Go(func() { d.svc.stats.Run(lifetime) })
	wg.Go(func() { d.serveE2B(lifetime) })
	connCtx, closeConns := context.WithCancel(context.WithoutCancel(lifetime))
	wg.Go(func() {
		<-lifetime.Done()
		ln.Close() // unlinks the socket file too
	})
	var conns sync.WaitGroup
	for {
		c, err := ln.Accept()
		if err != nil {
			if lifetime.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Error("accepting connection", "err", err)
				stop()
			}
			break
		}
		// Each call knows its caller: logged, and checked against the
		// host paths it names (internal/peer).
		ctx := connCtx
		if cred, err := peer.FromConn(c); err == nil {
			ctx = peer.NewContext(connCtx, cred)
		} else {
			log.Warn("refusing a connection whose peer the kernel cannot name", "err", err)
			c.Close()
			continue
		}
		conns.Go(func() { rpc.ServeConn(ctx, c, d.dispatch, log, d.upgradable) })
	}
	log.Info("bangerd shutting down")
	// Give calls in flight a moment to answer, then cut them off.
	if !waitTimeout(&conns, opts.ShutdownGrace) {
		log.Warn("closing connections still busy after the grace period", "grace", opts.ShutdownGrace)
	}
	closeConns()
	conns.Wait()
	wg.Wait()
	log.Info("bangerd stopped")
	return nil
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// background runs the daemon's periodic chores until ctx ends.
func (d *Daemon) background(ctx context.Context, retention time.Duration) {
	every := min(max(retention/4, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.svc.ops.prune()
		}
	}
}

// initMeta records the store's identity on first start.
func (d *Daemon) initMeta(ctx context.Context) (string, error) {
	var id string
	err := d.store.Update(ctx, func(tx *store.Tx) error {
		v, err := tx.Meta(ctx, "instance_id")
		if err == nil {
			id = v
			return nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		var b [8]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
		if err := tx.SetMeta(ctx, "instance_id", id); err != nil {
			return err
		}
		return tx.SetMeta(ctx, "created_at", time.Now().UTC().Format(time.RFC3339))
	})
	if err != nil {
		return "", fmt.Errorf("initialising store: %w", err)
	}
	return id, nil
}

// socketGroup returns the gid that may use a system daemon's socket, or -1.
func socketGroup(l paths.Layout, name string) (int, error) {
	if l.Mode != paths.ModeSystem || name == "" {
		return -1, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("looking up group %s: %w; make it (`groupadd %s`) or install again without --group", name, err, name)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1, fmt.Errorf("looking up group %s: gid %q: %w", name, g.Gid, err)
	}
	return gid, nil
}

// prepareDirs creates the layout's directories with their modes and checks
// that each is a real directory owned by us, so a planted symlink or a
// directory someone else made in /tmp cannot capture the socket.
func prepareDirs(l paths.Layout, gid int) error {
	for _, dir := range l.Dirs() {
		mode := fs.FileMode(dir.Mode)
		if err := os.MkdirAll(dir.Path, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir.Path, err)
		}
		fi, err := os.Lstat(dir.Path)
		if err != nil {
			return fmt.Errorf("checking %s: %w", dir.Path, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("checking %s: not a directory (a symlink?); remove it and retry", dir.Path)
		}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
			return fmt.Errorf("checking %s: owned by uid %d, not by us (uid %d); remove it or use another BANGER_HOME", dir.Path, sys.Uid, os.Geteuid())
		}
		if dir.Group && gid >= 0 {
			if err := os.Chown(dir.Path, -1, gid); err != nil {
				return fmt.Errorf("setting group of %s: %w", dir.Path, err)
			}
			mode = 0o750
		}
		if fi.Mode().Perm() != mode {
			if err := os.Chmod(dir.Path, mode); err != nil {
				return fmt.Errorf("setting mode of %s: %w", dir.Path, err)
			}
		}
	}
	return nil
}

// listen binds the socket. The lock is held, so any socket file left there
// belongs to a dead daemon and can go.
func listen(l paths.Layout, gid int) (*net.UnixListener, error) {
	sock := l.Socket()
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket %s: %w", sock, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", sock, err)
	}
	mode := fs.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(sock, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("setting group of %s: %w", sock, err)
		}
	}
	if err := os.Chmod(sock, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("setting mode of %s: %w", sock, err)
	}
	return ln, nil
}

// maxLogSize is the size past which a start rotates the log to .1.
const maxLogSize = 16 << 20

func openLog(path string) (*os.File, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > maxLogSize {
		_ = os.Rename(path, path+".1")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening log: %w", err)
	}
	return f, nil
}

func newLogger(file io.Writer, stderr io.Writer, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated by config; default info
	opts := &slog.HandlerOptions{Level: lv}
	h := slog.Handler(slog.NewTextHandler(file, opts))
	if stderr != nil {
		h = slog.NewMultiHandler(h, slog.NewTextHandler(stderr, opts))
	}
	return slog.New(h)
}
