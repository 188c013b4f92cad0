package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/units"
)

func vmWorkspaceCommand(env *Env) *cobra.Command {
	return cmdio.Group("workspace", "Put a host project in a VM, and sync or export its changes", nil,
		workspacePrepareCommand(env), workspaceStatusCommand(env), workspaceSyncCommand(env, "pull"),
		workspaceSyncCommand(env, "push"), workspaceExportCommand(env))
}

// workspaceFlags are the flags that choose what a workspace holds.
type workspaceFlags struct {
	untracked, readonly, dryRun bool
}

func (f *workspaceFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.untracked, "include-untracked", false, "also take untracked files that git does not ignore (default: tracked files only)")
	cmd.Flags().BoolVar(&f.readonly, "readonly", false, "mount the workspace read-only in the guest")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "print the files that would go, and create nothing")
}

func (f *workspaceFlags) spec(path string) (api.WorkspaceSpec, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return api.WorkspaceSpec{}, err
	}
	return api.WorkspaceSpec{Path: abs, IncludeUntracked: f.untracked, ReadOnly: f.readonly}, nil
}

// dryRun prints the files spec selects.
func dryRun(ctx context.Context, env *Env, c *client.Client, spec api.WorkspaceSpec) error {
	r, err := c.PrepareWorkspace(ctx, api.WorkspacePrepareParams{WorkspaceSpec: spec, DryRun: true}, nil)
	if err != nil {
		return err
	}
	for _, f := range r.List {
		fmt.Fprintln(env.Stdout, f)
	}
	fmt.Fprintf(env.Stderr, "%d files would go to %s (plus .git when %s is a repository's top)\n", r.Files, r.Dir, spec.Path)
	return nil
}

// transferProgress draws a transfer's progress on a terminal, and
// nothing elsewhere; done erases it.
func transferProgress(env *Env) (func(api.WorkspaceProgress), func()) {
	if !cmdio.IsTTY(env.Stderr) {
		return func(api.WorkspaceProgress) {}, func() {}
	}
	return func(p api.WorkspaceProgress) {
			what := fmt.Sprintf("%d/%d files", p.Done, p.Total)
			if p.Unit == "bytes" {
				what = units.FormatSize(p.Done)
			}
			fmt.Fprintf(env.Stderr, "\r\033[2K%s %s", p.Phase, what)
		}, func() {
			fmt.Fprint(env.Stderr, "\r\033[2K")
		}
}

func workspacePrepareCommand(env *Env) *cobra.Command {
	var f workspaceFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "prepare NAME PATH",
		Short: "Place the host tree PATH in a running VM, at /workspace",
		Long: "Place PATH in the VM at /workspace, owned by root, modes and symlinks kept: in a git work tree the\n" +
			"tracked files (--include-untracked adds untracked ones git does not ignore) and .git, so git works\n" +
			"inside; elsewhere every file. All of it arrives or none: each file is checked against its hash.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := f.spec(args[1])
			if err != nil {
				return err
			}
			c, err := env.client()
			if err != nil {
				return err
			}
			if f.dryRun {
				return dryRun(cmd.Context(), env, c, spec)
			}
			show, done := transferProgress(env)
			r, err := c.PrepareWorkspace(cmd.Context(), api.WorkspacePrepareParams{Name: args[0], WorkspaceSpec: spec}, show)
			done()
			if err != nil {
				return err
			}
			if asJSON {
				return cmdio.JSON(env.Stdout, r)
			}
			_, err = fmt.Fprintf(env.Stdout, "placed %d files (%s) of %s in vm %s at %s%s\n", r.Files, units.FormatSize(r.Bytes),
				spec.Path, r.Name, r.Dir, baseNote(r.Base))
			return err
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func baseNote(base string) string {
	if base == "" {
		return ""
	}
	return " (from commit " + base[:min(12, len(base))] + ")"
}

func workspaceStatusCommand(env *Env) *cobra.Command {
	var asJSON bool
	var dir string
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "What changed on each side since the last sync, by content hash",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			st, err := c.WorkspaceStatus(ctx, api.WorkspaceRefParams{Name: args[0], Dir: absOrEmpty(dir)})
			if err != nil {
				return err
			}
			if asJSON {
				return cmdio.JSON(env.Stdout, st)
			}
			var rows [][]string
			for _, side := range []struct {
				name string
				c    api.WorkspaceChanges
			}{{"host", st.Host}, {"guest", st.Guest}} {
				for _, ch := range []struct {
					what  string
					paths []string
				}{{"added", side.c.Added}, {"modified", side.c.Modified}, {"deleted", side.c.Deleted}} {
					for _, p := range ch.paths {
						rows = append(rows, []string{side.name, ch.what, p})
					}
				}
			}
			for _, p := range st.Conflicts {
				rows = append(rows, []string{"both", "conflict", p})
			}
			fmt.Fprintf(env.Stdout, "host %s, guest %s%s\n", st.HostDir, st.GuestDir, baseNote(st.Base))
			if len(rows) == 0 {
				_, err := fmt.Fprintln(env.Stdout, "in sync: no changes on either side")
				return err
			}
			return cmdio.Table(env.Stdout, []string{"SIDE", "CHANGE", "PATH"}, rows)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&dir, "dir", "", "host directory to compare (default: the one the workspace was made from)")
	return cmd
}

func absOrEmpty(p string) string {
	if p == "" {
		return ""
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return abs
}

func workspaceSyncCommand(env *Env, verb string) *cobra.Command {
	var force, asJSON bool
	short := "Bring the guest's changes into the host directory (default: the one the workspace came from)"
	if verb == "push" {
		short = "Send the host directory's changes into the guest's workspace"
	}
	cmd := &cobra.Command{
		Use:   verb + " NAME [DIR]",
		Short: short,
		Long: short + ".\nOnly files changed since the last sync travel, checked by hash, and the receiving side changes\n" +
			"all at once or not at all. A file changed on both sides, or (pull) a host file the sync did not put\n" +
			"there, is refused with the list unless --force, which takes this side's and says what it replaced.",
		Args: cobra.RangeArgs(1, 2),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			p := api.WorkspaceRefParams{Name: args[0], Force: force}
			if len(args) == 2 {
				p.Dir = absOrEmpty(args[1])
			}
			show, done := transferProgress(env)
			do := c.PullWorkspace
			if verb == "push" {
				do = c.PushWorkspace
			}
			r, err := do(ctx, p, show)
			done()
			if err != nil {
				return err
			}
			if asJSON {
				return cmdio.JSON(env.Stdout, r)
			}
			for _, o := range r.Overwritten {
				fmt.Fprintf(env.Stderr, "%s: --force replaced %s, which had changed on the other side too\n", verb, o)
			}
			_, err = fmt.Fprintf(env.Stdout, "%sed %d added, %d modified, %d deleted (%s) into %s\n", strings.TrimSuffix(verb, "e"),
				len(r.Changes.Added), len(r.Changes.Modified), len(r.Changes.Deleted), units.FormatSize(r.Bytes), r.Dir)
			return err
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "overwrite what changed on both sides with this side's")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func workspaceExportCommand(env *Env) *cobra.Command {
	var base, output string
	cmd := &cobra.Command{
		Use:   "export NAME",
		Short: "A binary git patch of the guest's changes, for git apply on the host",
		Long: "Print (or with --output write) a binary git patch of the guest's workspace, committed and uncommitted\n" +
			"changes alike, against the commit it was made from (--base-commit to choose another). The guest is\n" +
			"only read. Apply it with `git apply PATCH` in the host repository.",
		Args: cobra.ExactArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			r, err := c.ExportWorkspace(ctx, api.WorkspaceExportParams{Name: args[0], BaseCommit: base})
			if err != nil {
				return err
			}
			var w io.Writer = env.Stdout
			if output != "" {
				if err := os.WriteFile(output, []byte(r.Patch), 0o644); err != nil {
					return err
				}
				fmt.Fprintf(env.Stderr, "wrote a patch of %d files against %s to %s\n", r.Files, r.Base[:min(12, len(r.Base))], output)
				return nil
			}
			_, err = io.WriteString(w, r.Patch)
			return err
		}),
	}
	cmd.Flags().StringVar(&base, "base-commit", "", "commit to diff against (default: the one the workspace was made from)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the patch to this file instead of stdout")
	return cmd
}
