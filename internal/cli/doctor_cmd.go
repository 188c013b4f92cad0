package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/diskspace"
	"github.com/bangerdev/banger/internal/doctor"
	"github.com/bangerdev/banger/internal/install/record"
	"github.com/bangerdev/banger/internal/kvm"
	"github.com/bangerdev/banger/internal/version"
)

func doctorCommand(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor [--json]",
		Short: "Check this host for banger: KVM, the VMMs, the network, the daemon, disk, kernel, image, clock",
		Long: "Each check says what it found and, when something is wrong, the fix. A warning is something banger\n" +
			"works around (no KVM: software emulation); the exit code is 1 when a check failed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := env.client()
			if err != nil {
				return err
			}
			checks := doctor.Run(localHost(), version.Info(), daemonView(cmd.Context(), c))
			if asJSON {
				if err := cmdio.JSON(env.Stdout, struct {
					OK     bool           `json:"ok"`
					Checks []doctor.Check `json:"checks"`
				}{!doctor.Failed(checks), checks}); err != nil {
					return err
				}
			} else {
				rows := make([][]string, 0, len(checks))
				for _, ch := range checks {
					rows = append(rows, []string{string(ch.Status), ch.Name, ch.Detail})
				}
				if err := cmdio.Table(env.Stdout, []string{"STATUS", "CHECK", "FOUND"}, rows); err != nil {
					return err
				}
				for _, ch := range checks {
					if ch.Fix != "" && ch.Status != doctor.OK {
						fmt.Fprintf(env.Stdout, "%s: %s\n", ch.Name, ch.Fix)
					}
				}
			}
			if doctor.Failed(checks) {
				return &cmdio.ExitError{Code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// daemonView asks the daemon what doctor needs, or says why it could not.
func daemonView(ctx context.Context, c *client.Client) doctor.Daemon {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d doctor.Daemon
	if d.Info, d.Err = c.DaemonInfo(ctx); d.Err != nil {
		return d
	}
	cfg, err := c.ConfigShow(ctx)
	if err == nil {
		d.Config = map[string]string{}
		for _, v := range cfg.Values {
			d.Config[v.Key] = v.Value
		}
		d.Kernels, err = c.Kernels(ctx)
	}
	if err == nil {
		d.Images, err = c.Images(ctx)
	}
	if err != nil {
		d.Err = err
	}
	return d
}

// localHost is this machine, as doctor reads it.
func localHost() doctor.Host {
	return doctor.Host{
		KVM: func() error {
			// A PVM-only KVM first (its /dev/kvm may be there or not),
			// then the open's own error: missing or closed.
			if kvm.PVMOnly() {
				return errors.New("this host's KVM is PVM-only (kvm_pvm, no vmx/svm)")
			}
			f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
			if err != nil {
				return err
			}
			f.Close()
			return kvm.KVMUsable()
		},
		Program: programVersion,
		Stat:    os.Stat,
		Free: func(path string) (uint64, error) {
			u, err := diskspace.Of(path)
			return uint64(max(u.Free, 0)), err
		},
		Now:  time.Now,
		Root: os.Geteuid() == 0,
		Helper: func() (string, error) {
			rec, err := record.Read("")
			if err != nil {
				return "", nil // not installed
			}
			c, err := net.DialTimeout("unix", rec.HelperSocket, 2*time.Second)
			if errors.Is(err, fs.ErrPermission) {
				return rec.HelperSocket, nil // listening, for its owner alone
			}
			if err != nil {
				return rec.HelperSocket, err
			}
			c.Close()
			return rec.HelperSocket, nil
		},
	}
}

// programVersion finds a program and the first line of its --version.
func programVersion(name string) (string, string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	// A version line is the program's to choose: escaped where shown.
	if line = strings.TrimSpace(line); line != "" {
		return path, line, nil
	}
	return path, "version unknown", nil
}
