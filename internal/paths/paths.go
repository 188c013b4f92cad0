// Package paths resolves where banger keeps its files. There are three
// layouts: user mode (XDG directories of the invoking user), system mode
// (/etc, /var/lib, /var/cache, /run, /var/log, for a daemon run by systemd)
// and home mode (BANGER_HOME=DIR puts everything under DIR, so that several
// isolated daemons can run side by side, as tests do).
package paths

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
)

// Mode names a layout.
type Mode string

const (
	ModeUser   Mode = "user"
	ModeSystem Mode = "system"
	ModeHome   Mode = "home"
)

// HelperSocket is where an installed root network helper listens (its
// directory root's, the socket the owner's alone).
const HelperSocket = "/run/banger-helper/helper.sock"

// maxSocketPath is the longest path a unix socket address can hold on Linux
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Layout is every path a daemon and its clients use.
type Layout struct {
	Mode       Mode
	Home       string // set in ModeHome only
	ConfigDir  string
	StateDir   string // persistent state: database, images, VM disks
	CacheDir   string // re-creatable data: OCI blob cache
	RuntimeDir string // socket, lock, per-boot files
	LogDir     string
}

// ConfigFile is the daemon's TOML configuration.
func (l Layout) ConfigFile() string { return filepath.Join(l.ConfigDir, "config.toml") }

// Socket is the daemon's API socket.
func (l Layout) Socket() string { return filepath.Join(l.RuntimeDir, "bangerd.sock") }

// LockFile is held (flock) by the one daemon serving this layout. It lives in
// the state directory because the state is what must have a single owner.
func (l Layout) LockFile() string { return filepath.Join(l.StateDir, "bangerd.lock") }

// Database is the daemon's SQLite store.
func (l Layout) Database() string { return filepath.Join(l.StateDir, "banger.db") }

// LogFile is the daemon's log.
func (l Layout) LogFile() string { return filepath.Join(l.LogDir, "bangerd.log") }

// StartupLog receives a background daemon's stderr, so `daemon start` can
// show why a daemon died before its socket answered.
func (l Layout) StartupLog() string { return filepath.Join(l.LogDir, "bangerd.stderr") }

// OCICacheDir is the OCI blob cache (go-containerregistry layout).
func (l Layout) OCICacheDir() string { return filepath.Join(l.CacheDir, "oci") }

// Env is the part of the environment paths reads.
type Env struct {
	Getenv func(string) string
	UID    int
	// HomeDir is the user's home directory (os.UserHomeDir).
	HomeDir string
}

// ErrSocketPathTooLong means the layout's socket cannot be bound.
var ErrSocketPathTooLong = errors.New("socket path too long")

// Resolve picks the layout: BANGER_HOME wins, then system mode when asked
// for (flag or BANGER_MODE=system), else user mode.
func Resolve(env Env, system bool) (Layout, error) {
	get := env.Getenv
	if get == nil {
		get = func(string) string { return "" }
	}
	var l Layout
	switch {
	case get("BANGER_HOME") != "":
		home, err := filepath.Abs(get("BANGER_HOME"))
		if err != nil {
			return Layout{}, fmt.Errorf("resolving BANGER_HOME: %w", err)
		}
		l = Home(home)
	case system || get("BANGER_MODE") == string(ModeSystem):
		l = System()
	default:
		var err error
		l, err = User(env)
		if err != nil {
			return Layout{}, err
		}
	}
	if err := l.Validate(); err != nil {
		return Layout{}, err
	}
	return l, nil
}

// Home is the layout under one directory.
func Home(dir string) Layout {
	return Layout{
		Mode:       ModeHome,
		Home:       dir,
		ConfigDir:  dir,
		StateDir:   filepath.Join(dir, "state"),
		CacheDir:   filepath.Join(dir, "cache"),
		RuntimeDir: filepath.Join(dir, "run"),
		LogDir:     filepath.Join(dir, "logs"),
	}
}

// System is the layout of a system-wide daemon.
func System() Layout {
	return Layout{
		Mode:       ModeSystem,
		ConfigDir:  "/etc/banger",
		StateDir:   "/var/lib/banger",
		CacheDir:   "/var/cache/banger",
		RuntimeDir: "/run/banger",
		LogDir:     "/var/log/banger",
	}
}

// User is the XDG layout of the invoking user.
func User(env Env) (Layout, error) {
	get := env.Getenv
	xdg := func(key, fallback string) (string, error) {
		if v := get(key); v != "" && filepath.IsAbs(v) {
			return v, nil // the XDG spec says relative values are to be ignored
		}
		if env.HomeDir == "" {
			return "", fmt.Errorf("resolving %s: no home directory; set HOME or BANGER_HOME", key)
		}
		return filepath.Join(env.HomeDir, fallback), nil
	}
	config, err := xdg("XDG_CONFIG_HOME", ".config")
	if err != nil {
		return Layout{}, err
	}
	data, err := xdg("XDG_DATA_HOME", ".local/share")
	if err != nil {
		return Layout{}, err
	}
	cache, err := xdg("XDG_CACHE_HOME", ".cache")
	if err != nil {
		return Layout{}, err
	}
	state, err := xdg("XDG_STATE_HOME", ".local/state")
	if err != nil {
		return Layout{}, err
	}
	runtime := get("XDG_RUNTIME_DIR")
	if runtime == "" || !filepath.IsAbs(runtime) {
		// Without a session runtime dir, fall back to a per-uid directory the
		// daemon creates 0700 and checks it owns.
		runtime = filepath.Join("/tmp", "banger-"+strconv.Itoa(env.UID))
	} else {
		runtime = filepath.Join(runtime, "banger")
	}
	return Layout{
		Mode:       ModeUser,
		ConfigDir:  filepath.Join(config, "banger"),
		StateDir:   filepath.Join(data, "banger"),
		CacheDir:   filepath.Join(cache, "banger"),
		RuntimeDir: runtime,
		LogDir:     filepath.Join(state, "banger"),
	}, nil
}

// Validate checks that the layout can be used.
func (l Layout) Validate() error {
	if n := len(l.Socket()); n > maxSocketPath {
		return fmt.Errorf("%w: %s is %d bytes, a unix socket path holds at most %d; use a shorter BANGER_HOME", ErrSocketPathTooLong, l.Socket(), n, maxSocketPath)
	}
	return nil
}

// Dirs lists the directories a daemon creates, each with its mode.
func (l Layout) Dirs() []Dir {
	dirs := []Dir{
		{Path: l.StateDir, Mode: 0o700},
		{Path: l.CacheDir, Mode: 0o700},
		// 0750 and the socket's group's when the socket is shared.
		{Path: l.RuntimeDir, Mode: 0o700, Group: l.Mode == ModeSystem},
		{Path: l.LogDir, Mode: 0o700},
	}
	if l.Mode == ModeHome {
		dirs = append([]Dir{{Path: l.Home, Mode: 0o700}}, dirs...)
	}
	return dirs
}

// Dir is a directory of a layout.
type Dir struct {
	Path  string
	Mode  uint32
	Group bool // the shared socket's group's, 0750 (system mode)
}
