package cli

import (
	"fmt"
	"io"
	"log/slog"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/mcp"
	"github.com/bangerdev/banger/internal/units"
	"github.com/bangerdev/banger/internal/version"
)

func mcpCommand(env *Env) *cobra.Command {
	var o mcp.Options
	var maxMemory string
	cmd := &cobra.Command{
		Use:   "mcp [--name NAME] [--all] [--max-sandboxes N] [--max-memory SIZE]",
		Short: "Serve sandboxes to a coding agent over MCP (stdio): create, exec, delete",
		Long: "An MCP server on stdin and stdout, for an agent's config: {\"command\": \"banger\", \"args\": [\"mcp\"]}.\n" +
			"Its sandboxes are VMs of your daemon that record it as their creator (mcp:NAME, shown by `banger ps`);\n" +
			"it sees and touches only those, unless --all. --max-sandboxes and --max-memory bound what its\n" +
			"sandboxes add up to. Its log goes to stderr. See docs/mcp.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if maxMemory != "" {
				n, err := units.ParseSize(maxMemory)
				if err != nil || n < 1<<20 {
					return fmt.Errorf("--max-memory %q: give a size such as 8G", maxMemory)
				}
				o.MaxMemoryMiB = int(n >> 20)
			}
			if o.MaxSandboxes < 0 {
				return fmt.Errorf("--max-sandboxes %d: give a count, or 0 for no bound", o.MaxSandboxes)
			}
			c, err := env.client()
			if err != nil {
				return err
			}
			o.Version, o.Log = version.Version, slog.New(slog.NewTextHandler(env.Stderr, nil))
			s, err := mcp.New(c.WithCaller("mcp:"+o.Name), o)
			if err != nil {
				return err
			}
			return s.MCP().Run(cmd.Context(), &sdk.IOTransport{Reader: io.NopCloser(env.Stdin), Writer: nopWriteCloser{env.Stdout}})
		},
	}
	cmd.Flags().StringVar(&o.Name, "name", "agent", "this server's name: its sandboxes record mcp:NAME as their creator")
	cmd.Flags().BoolVar(&o.All, "all", false, "see and touch every VM of the daemon, not only this server's")
	cmd.Flags().IntVar(&o.MaxSandboxes, "max-sandboxes", 0, "how many sandboxes this server may keep (0: no bound)")
	cmd.Flags().StringVar(&maxMemory, "max-memory", "", "how much memory its sandboxes may have in all, e.g. 8G (default: no bound)")
	return cmd
}

// nopWriteCloser keeps the transport from closing the CLI's stdout.
type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
