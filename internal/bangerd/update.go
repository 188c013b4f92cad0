package bangerd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/doctor"
	"github.com/bangerdev/banger/internal/install"
	"github.com/bangerdev/banger/internal/install/record"
	"github.com/bangerdev/banger/internal/release"
	"github.com/bangerdev/banger/internal/termsafe"
	"github.com/bangerdev/banger/internal/update"
	"github.com/bangerdev/banger/internal/version"
)

func updateCommand(env *Env) *cobra.Command {
	var check, dryRun, rollback, asJSON bool
	var o update.Options
	var from, pubkeyFile string
	cmd := &cobra.Command{
		Use:   "update [--check] [--to VERSION [--allow-downgrade]] [--from URL|DIR|FILE] [--dry-run] [--rollback] [--json]",
		Short: "Update banger to a signed release (or --rollback to the previous one)",
		Long: "Reads the release index (SHA256SUMS) of --from or update_url, checks its signature against banger's\n" +
			"release key and the tarball's checksum before anything else, refuses while an operation is in flight\n" +
			"(naming it) or when the new daemon cannot open the store (`bangerd --check-migrations`), then swaps\n" +
			"the binaries (the old ones kept in .banger-previous), restarts the daemon (and the helper, installed),\n" +
			"and runs the new `banger doctor`: a failure after the swap rolls back by itself and says why. Running\n" +
			"VMs keep running and are adopted by the new daemon; they keep their agent until `banger vm restart`.\n" +
			"The index's signature says when it was issued and until when it holds: an expired index, or one issued\n" +
			"before the newest this host has verified (kept in .banger-update-mark.json beside the binaries), is\n" +
			"refused; so is a release older than the installed one unless --to names it with --allow-downgrade.\n" +
			"Installed, every step on the owner's store runs as the owner.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			h, cfgURL, err := updateHost(env)
			if err != nil {
				return err
			}
			if rollback {
				if check || dryRun || from != "" || o.To != "" || o.AllowDowngrade {
					return fmt.Errorf("%w: --rollback takes no release; drop --check, --dry-run, --from, --to and --allow-downgrade", api.ErrInvalidArgument)
				}
				res, err := update.Rollback(ctx, h)
				if err != nil {
					return err
				}
				return env.Emit(res, asJSON, func() error {
					fmt.Fprintf(env.Stdout, "rolled back from %s to %s (`banger update --rollback` again goes back to %s)\n", res.Previous, res.Target, res.Previous)
					return nil
				})
			}
			if from == "" {
				from = cfgURL
			}
			if from == "" {
				return fmt.Errorf("%w: no release source: pass --from URL|DIR|FILE, or set update_url in config.toml", api.ErrInvalidArgument)
			}
			if o.From, err = release.OpenSource(from); err != nil {
				return err
			}
			keyText := release.PinnedKey
			if pubkeyFile != "" {
				b, err := os.ReadFile(pubkeyFile)
				if err != nil {
					return fmt.Errorf("reading --pubkey-file: %w", err)
				}
				keyText = string(b)
			}
			if o.Key, err = release.ParseKey(keyText); err != nil {
				return err
			}
			if check {
				p, _, err := update.Check(ctx, h, o)
				if err != nil {
					return err
				}
				return env.Emit(p, asJSON, func() error {
					if p.UpToDate {
						fmt.Fprintf(env.Stdout, "banger %s is up to date (%s has %s)\n", p.Current, p.Source, strings.Join(p.Available, ", "))
					} else {
						fmt.Fprintf(env.Stdout, "banger %s can be updated to %s (`banger update`)\n", p.Current, p.Target)
					}
					return nil
				})
			}
			o.DryRun = dryRun
			res, err := update.Apply(ctx, h, o)
			if err != nil {
				if errors.Is(err, update.ErrRolledBack) && asJSON {
					_ = cmdio.JSON(env.Stdout, res)
				}
				return err
			}
			return env.Emit(res, asJSON, func() error {
				switch {
				case res.UpToDate:
					fmt.Fprintf(env.Stdout, "banger %s is up to date\n", res.Current)
				case dryRun:
					fmt.Fprintf(env.Stdout, "dry run: banger %s would be updated to %s (signature, checksum, operations and store checked: %s); nothing was changed\n",
						res.Current, res.Target, res.Migration)
				default:
					fmt.Fprintf(env.Stdout, "updated banger %s to %s; the daemon restarted and doctor passed (`banger update --rollback` goes back to %s)\n",
						res.Previous, res.Target, res.Previous)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "only say whether a newer release is there")
	cmd.Flags().StringVar(&o.To, "to", "", "the release to go to (default: the newest; an older one needs --allow-downgrade)")
	cmd.Flags().BoolVar(&o.AllowDowngrade, "allow-downgrade", false, "with --to: go to a release older than the installed one")
	cmd.Flags().StringVar(&from, "from", "", "the release source: https://BASE, a directory, or a tarball with SHA256SUMS and its signature beside it (default: update_url)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check everything (signature, checksum, operations, store) and change nothing")
	cmd.Flags().BoolVar(&rollback, "rollback", false, "put the previous binaries back, restart and run doctor")
	cmd.Flags().StringVar(&pubkeyFile, "pubkey-file", "", "trust this minisign public key instead of banger's pinned release key (tests, private builds)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// updateHost is this machine as an update sees it: the install's
// binaries (as root) or those beside this CLI, and the daemon that runs
// on them; and the config's update_url.
func updateHost(env *Env) (update.Host, string, error) {
	h := update.Host{Current: version.Version, Paths: map[string]string{}}
	if cmdio.IsTTY(env.Stderr) {
		h.Say = func(format string, args ...any) { fmt.Fprintf(env.Stderr, "banger update: "+format+"\n", args...) }
	} else {
		h.Say = func(string, ...any) {}
	}
	var system bool
	var storeCmds update.Bangerd // runs bangerd's store commands: as the owner, installed
	rec, err := record.Read("")
	switch {
	case err == nil:
		if os.Geteuid() != 0 {
			return h, "", errors.New("banger is installed (/etc/banger/install.toml), and its binaries are root's: run `sudo banger update`")
		}
		system = true
		storeCmds = update.Bangerd{Owner: &update.Owner{UID: rec.UID, GID: rec.GID}, Args: []string{"--system"}}
		for name, path := range install.BinaryPaths(rec) {
			h.Paths[name] = path
		}
		h.KeepDir = filepath.Join(filepath.Dir(h.Paths["bangerd"]), update.PreviousDir)
		h.Daemon = units{}
	case errors.Is(err, record.ErrNotInstalled):
		exe, err := os.Executable()
		if err == nil {
			exe, err = filepath.EvalSymlinks(exe)
		}
		if err != nil {
			return h, "", fmt.Errorf("finding banger's binaries: %w", err)
		}
		dir := filepath.Dir(exe)
		for _, name := range release.Binaries {
			h.Paths[name] = filepath.Join(dir, name)
		}
		h.KeepDir = filepath.Join(dir, update.PreviousDir)
		h.Daemon = userDaemon{env: env, banger: h.Paths["banger"]}
	default:
		return h, "", err
	}
	l, err := env.Layout(system)
	if err != nil {
		return h, "", err
	}
	h.Store = l.Database()
	h.MarkFile = filepath.Join(filepath.Dir(h.Paths["bangerd"]), update.MarkName)
	h.StoreSteps = storeCmds
	sock := l.Socket()
	if env.socket != "" {
		sock = env.socket
	}
	h.InFlight = func(ctx context.Context) ([]api.OperationSummary, error) {
		path := sock
		if system {
			// The socket's directory is the owner's: root connects to the
			// socket it opened there without following a link, the
			// owner's own, never to whatever a name was turned into.
			fd, err := unix.Open(sock, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if errors.Is(err, unix.ENOENT) {
				return nil, nil // nothing runs: nothing in flight
			}
			if err != nil {
				return nil, fmt.Errorf("opening the daemon's socket %s: %w", sock, err)
			}
			defer unix.Close(fd)
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return nil, err
			}
			if st.Mode&unix.S_IFMT != unix.S_IFSOCK || int(st.Uid) != rec.UID {
				return nil, fmt.Errorf("%s is not a socket of uid %d's: refusing to ask it what is in flight", sock, rec.UID)
			}
			path = fmt.Sprintf("/proc/self/fd/%d", fd)
		}
		ops, err := client.New(path, version.Version).Operations(ctx)
		if errors.Is(err, client.ErrDaemonNotRunning) {
			return nil, nil // nothing runs: nothing in flight
		}
		return ops, err
	}
	h.Version = func(ctx context.Context, bangerd string) (string, error) {
		out, err := runBinary(ctx, env, bangerd, "--version")
		if err != nil {
			return "", fmt.Errorf("%w: %s", err, out)
		}
		v, ok := strings.CutPrefix(out, "bangerd version ")
		if !ok {
			return "", fmt.Errorf("it says %q, not its version", out)
		}
		return v, nil
	}
	h.Doctor = func(ctx context.Context, banger string) error {
		out, _ := runBinary(ctx, env, banger, "doctor", "--json")
		var rep struct {
			OK     bool           `json:"ok"`
			Checks []doctor.Check `json:"checks"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			return fmt.Errorf("the new doctor did not report: %q", out)
		}
		if rep.OK {
			return nil
		}
		var failed []string
		for _, c := range rep.Checks {
			if c.Status == doctor.Fail {
				failed = append(failed, c.Name+": "+c.Detail)
			}
		}
		return errors.New(strings.Join(failed, "; "))
	}
	cfg, err := config.Load(l.ConfigFile(), hostInfo())
	if err != nil {
		return h, "", err
	}
	return h, cfg.UpdateURL, nil
}

// runBinary runs one of banger's binaries with this CLI's environment,
// for at most two minutes, and returns what it printed (trimmed).
func runBinary(ctx context.Context, env *Env, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	if env.socket != "" && filepath.Base(path) == "banger" {
		cmd.Args = append([]string{path, "--socket", env.socket}, args...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(termsafe.Text(out.String())), err
}

// units are the installed daemon and helper, as systemd runs them.
type units struct{}

var errNoSystemd = errors.New("systemd is not running on this host: restart `banger system helper` and `bangerd --system` yourself")

func (units) Restart(context.Context) error {
	if !systemdRunning() {
		return errNoSystemd
	}
	return systemctl("restart", install.HelperUnit, install.DaemonUnit)
}

func (units) Stop(context.Context) error {
	if !systemdRunning() {
		return errNoSystemd
	}
	return systemctl("stop", install.DaemonUnit)
}

// userDaemon is a daemon not installed, as the CLI beside the binaries
// stops and starts it.
type userDaemon struct {
	env    *Env
	banger string
}

func (d userDaemon) Stop(ctx context.Context) error {
	if out, err := runBinary(ctx, d.env, d.banger, "daemon", "stop"); err != nil {
		return fmt.Errorf("stopping the daemon: %w: %s", err, out)
	}
	return nil
}

func (d userDaemon) Restart(ctx context.Context) error {
	if err := d.Stop(ctx); err != nil {
		return err
	}
	if out, err := runBinary(ctx, d.env, d.banger, "daemon", "start"); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}
