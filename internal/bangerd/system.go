package bangerd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/install"
	"github.com/bangerdev/banger/internal/install/record"
	"github.com/bangerdev/banger/internal/nethelper"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/version"
)

// needRoot refuses a system command run without root, naming sudo.
func needRoot(what string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s needs root: run `sudo banger system %s`", what, what)
	}
	return nil
}

// systemdRunning says whether systemd is this host's init (its runtime
// directory exists only then).
func systemdRunning() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

func systemctl(args ...string) error {
	out, err := exec.Command("systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func systemInstallCommand(env *Env) *cobra.Command {
	var owner, group, prefix, root string
	cmd := &cobra.Command{
		Use:   "install [--owner USER] [--group GROUP] [--prefix DIR] [--root DIR]",
		Short: "Install banger for daily use: the owner's daemon and the root network helper as systemd units",
		Long: "Installs the binaries (PREFIX/bin/banger, PREFIX/lib/banger/{bangerd,banger-agent}), two systemd units\n" +
			"(bangerd.service as the owner, banger-helper.service as root), /etc/banger/install.toml, and the system\n" +
			"layout's directories owned by the owner (/var/lib/banger, /var/cache/banger, /var/log/banger, 0700).\n" +
			"The daemon's socket, /run/banger/bangerd.sock, is the owner's alone (0600), or also --group's (0660).\n" +
			"The owner joins group kvm. Running it again changes nothing; a root-only layout's state is moved to the\n" +
			"owner. --root renders everything under a staging directory and leaves the host alone.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needRoot("install"); err != nil {
				return err
			}
			if owner == "" {
				owner = env.Getenv("SUDO_USER")
			}
			if owner == "" || owner == "root" {
				return errors.New("--owner USER is needed: the ordinary user the daemon runs as (under sudo it defaults to the user who ran sudo)")
			}
			u, err := lookupUser(owner)
			if err != nil {
				return err
			}
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			g, err := user.LookupGroupId(u.Gid)
			if err != nil {
				return fmt.Errorf("the primary group of %s: %w", u.Username, err)
			}
			from, err := installedFrom()
			if err != nil {
				return err
			}
			say := func(format string, args ...any) { fmt.Fprintf(env.Stdout, format+"\n", args...) }
			rec, changed, err := install.Apply(install.Options{
				Root: root, Prefix: prefix, Owner: install.Account{Name: u.Username, ID: uid},
				OwnerGroup: install.Account{Name: g.Name, ID: gid}, Group: group, From: from,
				Version: version.Version, Say: say,
			})
			if err != nil {
				return err
			}
			if install.Staging(root) {
				fmt.Fprintf(env.Stdout, "staged under %s; the host is untouched (no unit started, no group changed)\n", root)
				return nil
			}
			if err := handOverBridge(say); err != nil {
				return err
			}
			return startUnits(env, changed, rec)
		},
	}
	cmd.Flags().StringVar(&owner, "owner", "", "the user the daemon runs as (default: $SUDO_USER)")
	cmd.Flags().StringVar(&group, "group", "", "a group whose members may also use the daemon (its socket 0660); default: the owner alone")
	cmd.Flags().StringVar(&prefix, "prefix", "/usr/local", "where the binaries go")
	cmd.Flags().StringVar(&root, "root", "", "render everything under this staging directory instead of /")
	return cmd
}

// installedFrom finds the binaries to install: this bangerd, the agent
// beside it, and the CLI beside it (a build's bin/, an unpacked release)
// or in the prefix's bin/ (bangerd in an installed PREFIX/lib/banger).
func installedFrom() (install.Binaries, error) {
	exe, err := os.Executable()
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		return install.Binaries{}, err
	}
	dir := filepath.Dir(exe)
	b := install.Binaries{Daemon: exe, Agent: filepath.Join(dir, "banger-agent")}
	if _, err := os.Stat(b.Agent); err != nil {
		return install.Binaries{}, fmt.Errorf("no banger-agent beside %s; build it (`make build`) and run bin/banger system install", exe)
	}
	for _, cli := range []string{filepath.Join(dir, "banger"), filepath.Join(dir, "..", "..", "bin", "banger")} {
		if _, err := os.Stat(cli); err == nil {
			b.CLI = filepath.Clean(cli)
			return b, nil
		}
	}
	return install.Binaries{}, fmt.Errorf("no banger CLI beside %s; build it (`make build`) and run bin/banger system install", exe)
}

// handOverBridge gives a root daemon's bridge (the root-only system
// layout's) to the helper: that daemon is stopped and its VMs too, or
// Apply would have refused.
func handOverBridge(say func(string, ...any)) error {
	cfg, err := config.Load(paths.System().ConfigFile(), hostInfo())
	if err != nil {
		return err
	}
	done, err := hostnet.Handover(hostnet.Config{Bridge: cfg.Network.Bridge, Prefix: cfg.Network.CIDR,
		Owner: nethelper.Owner(record.HelperSocket)}, func(owner string) bool {
		return strings.HasSuffix(owner, " "+paths.System().StateDir)
	})
	if err != nil {
		return err
	}
	if done {
		say("handed bridge %s of the root-only daemon over to the helper", cfg.Network.Bridge)
	}
	return nil
}

// startUnits enables and (re)starts the units where systemd runs, or
// says how to start the two processes by hand where it does not.
func startUnits(env *Env, changed bool, rec record.Record) error {
	if !systemdRunning() {
		fmt.Fprintf(env.Stdout, "systemd is not running on this host: start the helper as root (`%s system helper --owner %s`)\n"+
			"and the daemon as %s (`%s --system`) yourself\n",
			filepath.Join(rec.Prefix, "bin/banger"), rec.Owner, rec.Owner, filepath.Join(rec.Prefix, "lib/banger/bangerd"))
		return nil
	}
	if err := systemctl("daemon-reload"); err != nil {
		return err
	}
	if err := systemctl("enable", install.HelperUnit, install.DaemonUnit); err != nil {
		return err
	}
	verb, done := "start", "started" // a no-op for a unit already running
	if changed {
		// The daemon's VMs survive (KillMode=process) and are adopted.
		verb, done = "restart", "restarted"
	}
	if err := systemctl(verb, install.HelperUnit, install.DaemonUnit); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s %s and %s; %s may now run `banger vm run`\n", done, install.HelperUnit, install.DaemonUnit, rec.Owner)
	return nil
}

func systemRestartCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "restart",
		Short: "Restart the installed helper and daemon (running VMs keep running and are adopted)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needRoot("restart"); err != nil {
				return err
			}
			if _, err := record.Read(""); err != nil {
				return err
			}
			if !systemdRunning() {
				return errors.New("systemd is not running on this host: stop and start `banger system helper` and `bangerd --system` yourself")
			}
			return systemctl("restart", install.HelperUnit, install.DaemonUnit)
		},
	}
}

func systemUninstallCommand(env *Env) *cobra.Command {
	var purge bool
	var root string
	cmd := &cobra.Command{
		Use:   "uninstall [--purge] [--root DIR]",
		Short: "Remove the units, binaries and install record (VMs, images and kernels stay, unless --purge)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needRoot("uninstall"); err != nil {
				return err
			}
			staging := install.Staging(root)
			if !staging && systemdRunning() {
				if _, err := record.Read(""); err == nil {
					if err := systemctl("disable", "--now", install.DaemonUnit, install.HelperUnit); err != nil {
						return err
					}
				}
			}
			say := func(format string, args ...any) { fmt.Fprintf(env.Stdout, format+"\n", args...) }
			if err := install.Uninstall(root, purge, say); err != nil {
				return err
			}
			if !staging && systemdRunning() {
				return systemctl("daemon-reload")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "also remove the state (VMs, images, kernels), cache, logs and /etc/banger")
	cmd.Flags().StringVar(&root, "root", "", "uninstall from this staging directory instead of /")
	return cmd
}

// installStatus is what `system status` reports.
type installStatus struct {
	Installed bool   `json:"installed"`
	Error     string `json:"error,omitempty"`
	Owner     string `json:"owner,omitempty"`
	UID       int    `json:"uid,omitempty"`
	Group     string `json:"group,omitempty"`
	Prefix    string `json:"prefix,omitempty"`
	Version   string `json:"version,omitempty"`
	// Units are systemd's word on each unit; empty without systemd.
	Units   map[string]string `json:"units,omitempty"`
	Systemd bool              `json:"systemd"`
	Daemon  string            `json:"daemon,omitempty"`
	Helper  string            `json:"helper,omitempty"`
	KVM     string            `json:"kvm,omitempty"`
}

func systemStatusCommand(env *Env) *cobra.Command {
	var root string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json] [--root DIR]",
		Short: "Show the install: its owner, the units, whether the daemon and the helper answer, /dev/kvm",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			staging := install.Staging(root)
			s := installStatus{Systemd: systemdRunning() && !staging}
			rec, err := record.Read(root)
			if err != nil {
				s.Error = err.Error()
			} else {
				s.Installed, s.Owner, s.UID, s.Group, s.Prefix, s.Version = true, rec.Owner, rec.UID, rec.Group, rec.Prefix, rec.Version
				if s.Systemd {
					s.Units = map[string]string{}
					for _, u := range []string{install.HelperUnit, install.DaemonUnit} {
						out, _ := exec.Command("systemctl", "is-active", u).Output()
						s.Units[u] = strings.TrimSpace(string(out))
					}
				}
				if !staging {
					s.Helper, s.KVM = socketAnswers(rec.HelperSocket), kvmAccess(rec)
				}
			}
			if !staging {
				s.Daemon = daemonAnswers(cmd.Context(), paths.System().Socket())
			}
			if asJSON {
				return cmdio.JSON(env.Stdout, s)
			}
			if !s.Installed {
				fmt.Fprintf(env.Stdout, "not installed: %s\n", s.Error)
				return cmdio.Fields(env.Stdout, [][2]string{{"daemon", s.Daemon}})
			}
			kv := [][2]string{{"owner", fmt.Sprintf("%s (uid %d)", s.Owner, s.UID)}, {"group", orDash(s.Group)},
				{"prefix", s.Prefix}, {"version", s.Version}}
			if s.Systemd {
				for _, u := range slices.Sorted(maps.Keys(s.Units)) {
					kv = append(kv, [2]string{u, s.Units[u]})
				}
			} else if !staging {
				kv = append(kv, [2]string{"units", "systemd is not running on this host"})
			}
			if !staging {
				kv = append(kv, [2]string{"daemon", s.Daemon}, [2]string{"helper", s.Helper}, [2]string{"kvm", s.KVM})
			}
			return cmdio.Fields(env.Stdout, kv)
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "read the install staged under this directory")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// daemonAnswers pings the daemon's socket.
func daemonAnswers(ctx context.Context, sock string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := client.New(sock, version.Version).Version(ctx)
	if err != nil {
		return fmt.Sprintf("%s does not answer: %v", sock, err)
	}
	return fmt.Sprintf("%s answers (bangerd %s)", sock, v.Daemon.Version)
}

// socketAnswers says whether something listens on a unix socket.
func socketAnswers(sock string) string {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return fmt.Sprintf("%s does not answer: %v", sock, err)
	}
	c.Close()
	return sock + " listening"
}

// kvmAccess says whether the owner's VMMs may open /dev/kvm.
func kvmAccess(rec record.Record) string {
	fi, err := os.Stat("/dev/kvm")
	if errors.Is(err, fs.ErrNotExist) {
		return "no /dev/kvm on this host: VMs run under emulation (TCG), much slower"
	}
	if err != nil {
		return err.Error()
	}
	st := fi.Sys().(*syscall.Stat_t)
	perm := fi.Mode().Perm()
	switch {
	case perm&0o006 == 0o006, int(st.Uid) == rec.UID && perm&0o600 == 0o600:
		return "/dev/kvm: " + rec.Owner + " may open it"
	case perm&0o060 == 0o060:
		if g, err := user.LookupGroupId(strconv.Itoa(int(st.Gid))); err == nil {
			if gr, ok, _ := install.LookupGroup("", g.Name); ok && slices.Contains(gr.Members, rec.Owner) || int(st.Gid) == rec.GID {
				return "/dev/kvm: " + rec.Owner + " may open it (group " + g.Name + ")"
			}
			return fmt.Sprintf("/dev/kvm: %s is not in group %s; run `sudo banger system install` again (it adds them)", rec.Owner, g.Name)
		}
	}
	return fmt.Sprintf("/dev/kvm (mode %v) is closed to %s; VMs run under emulation (TCG)", perm, rec.Owner)
}
