package bangerd

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/nethelper"
	"github.com/bangerdev/banger/internal/paths"
)

func systemCommand(env *Env) *cobra.Command {
	return cmdio.Group("system", "Run banger installed for daily use: the owner's daemon and its root helper", nil,
		systemInstallCommand(env), systemStatusCommand(env), systemRestartCommand(env), systemUninstallCommand(env), systemHelperCommand(env))
}

func systemHelperCommand(env *Env) *cobra.Command {
	var socket, owner, configFile string
	cmd := &cobra.Command{
		Use:   "helper --owner USER [--socket PATH] [--config FILE]",
		Short: "Run the root network helper in the foreground (what the banger-helper unit runs)",
		Long: "The narrow root helper of an installed banger: the bridge, taps the owner's VMMs may open, the\n" +
			"VMs' nftables rules and sets, the DNS port and the firewall's log, for the owner's daemon alone\n" +
			"(its uid checked on every connection; docs/privileges.md). It reads [network] of the config.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("the network helper needs root (it makes bridges, taps and nftables rules); run it as root, as its unit does")
			}
			if owner == "" {
				return errors.New("--owner is required: the user whose daemon the helper serves")
			}
			u, err := lookupUser(owner)
			if err != nil {
				return err
			}
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			if uid == 0 {
				return errors.New("--owner root: a root daemon needs no helper; name the user the daemon runs as")
			}
			cfg, err := config.Load(configFile, hostInfo())
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(env.Stderr, nil)).With("service", "nethelper")
			if err := tunForEveryone(log); err != nil {
				return err
			}
			ln, err := listenHelper(socket, uid)
			if err != nil {
				return err
			}
			n, err := hostnet.New(hostnet.Config{Bridge: cfg.Network.Bridge, Prefix: cfg.Network.CIDR, Deny: cfg.Network.NATDeny,
				Owner: nethelper.Owner(socket), TapUser: uint32(uid), TapGroup: uint32(gid), Log: log})
			if err != nil {
				ln.Close()
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log.Info("network helper serving", "socket", socket, "owner", u.Username, "uid", uid, "bridge", cfg.Network.Bridge, "cidr", cfg.Network.CIDR)
			s := &nethelper.Server{Net: n, Bridge: cfg.Network.Bridge, Prefix: cfg.Network.CIDR, Owner: uid, Log: log}
			return s.Serve(ctx, ln)
		},
	}
	cmd.Flags().StringVar(&owner, "owner", "", "the user (name or uid) whose daemon the helper serves")
	cmd.Flags().StringVar(&socket, "socket", paths.HelperSocket, "the helper's socket")
	cmd.Flags().StringVar(&configFile, "config", "/etc/banger/config.toml", "the configuration whose [network] the helper serves")
	return cmd
}

// tunForEveryone makes /dev/net/tun 0666, as Debian's udev rules do (a
// host without udev may leave it 0600): the owner's VMM opens the taps
// made for it there. Opening it grants nothing more: a new tap needs
// CAP_NET_ADMIN, and an existing one only takes its owner.
func tunForEveryone(log *slog.Logger) error {
	const tun = "/dev/net/tun"
	fi, err := os.Stat(tun)
	if err != nil {
		return fmt.Errorf("%s: %w; load the tun module (`modprobe tun`)", tun, err)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("%s is not a character device", tun)
	}
	if fi.Mode().Perm() == 0o666 {
		return nil
	}
	if err := os.Chmod(tun, 0o666); err != nil {
		return err
	}
	log.Info("made /dev/net/tun 0666, as udev does, for the owner's VMMs", "was", fi.Mode().Perm())
	return nil
}

// lookupUser finds a user by name or uid.
func lookupUser(name string) (*user.User, error) {
	if _, err := strconv.Atoi(name); err == nil {
		u, err := user.LookupId(name)
		if err != nil {
			return nil, fmt.Errorf("no user with uid %s: %w", name, err)
		}
		return u, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("no user %q: %w", name, err)
	}
	return u, nil
}

// listenHelper binds the helper's socket, owned by uid and private to it,
// in a root-owned directory others may only traverse.
func listenHelper(socket string, uid int) (*net.UnixListener, error) {
	dir := filepath.Dir(socket)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || !ok || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%s must be a directory root owns and no one else may write; remove it and retry", dir)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", socket, err)
	}
	if err := os.Chown(socket, uid, -1); err == nil {
		err = os.Chmod(socket, 0o600)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("giving %s to uid %d: %w", socket, uid, err)
	}
	return ln, nil
}
