package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/cmdio"
	"github.com/bangerdev/banger/internal/mcp"
	"github.com/bangerdev/banger/internal/tokenfile"
	"github.com/bangerdev/banger/internal/units"
	"github.com/bangerdev/banger/internal/version"
)

func mcpCommand(env *Env) *cobra.Command {
	var o mcp.Options
	var maxMemory, httpAddr string
	var hosts []string
	cmd := &cobra.Command{
		Use:   "mcp [--http ADDR|unix:PATH [--allow-host H]...] [--name NAME] [--all] [--max-sandboxes N] [--max-memory SIZE] [--root DIR]... [--allow-egress-changes]",
		Short: "Serve sandboxes to a coding agent over MCP (stdio, or HTTP): create, exec, delete",
		Long: "An MCP server on stdin and stdout, for an agent's config: {\"command\": \"banger\", \"args\": [\"mcp\"]}.\n" +
			"--http serves stateless Streamable HTTP at /mcp instead: on HOST:PORT (the host defaults to 127.0.0.1)\n" +
			"with a bearer token required (`banger mcp token` makes one) and the Host and Origin headers checked\n" +
			"against DNS rebinding (--allow-host adds a name), or on unix:PATH (a socket only you may open).\n" +
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
			if httpAddr != "" {
				return serveMCPHTTP(cmd.Context(), env, s, httpAddr, hosts)
			}
			return s.MCP().Run(cmd.Context(), &sdk.IOTransport{Reader: io.NopCloser(env.Stdin), Writer: nopWriteCloser{env.Stdout}})
		},
	}
	cmd.Flags().StringVar(&httpAddr, "http", "", "serve Streamable HTTP at /mcp on HOST:PORT, PORT (on 127.0.0.1) or unix:PATH, instead of stdio")
	cmd.Flags().StringSliceVar(&hosts, "allow-host", nil, "with --http: a host name clients may use beside localhost, 127.0.0.1 and ::1 (repeatable)")
	cmd.Flags().StringVar(&o.Name, "name", "agent", "this server's name: its sandboxes record mcp:NAME as their creator")
	cmd.Flags().BoolVar(&o.All, "all", false, "see and touch every VM of the daemon, not only this server's")
	cmd.Flags().StringArrayVar(&o.Roots, "root", nil, "a host directory whose projects workspace tools may take in and write reviewed changes into (repeatable; none: no host path)")
	cmd.Flags().BoolVar(&o.AllowEgressChanges, "allow-egress-changes", false, "let egress_allow change an allow-list without asking a person (for clients that cannot ask)")
	cmd.Flags().IntVar(&o.MaxSandboxes, "max-sandboxes", 0, "how many sandboxes this server may keep (0: no bound)")
	cmd.Flags().StringVar(&maxMemory, "max-memory", "", "how much memory its sandboxes may have in all, e.g. 8G (default: no bound)")
	cmd.AddCommand(mcpTokenCommand(env))
	return cmd
}

// serveMCPHTTP serves s over HTTP on addr until ctx ends or a signal
// comes.
func serveMCPHTTP(ctx context.Context, env *Env, s *mcp.Server, addr string, hosts []string) error {
	l, unixSocket, err := mcp.Listen(addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	o := mcp.HTTPOptions{AnyHost: unixSocket}
	if !unixSocket {
		file, err := mcp.TokenFile(env.Getenv)
		if err != nil {
			return err
		}
		o.Tokens = mcp.OpenTokens(file)
		if list, err := o.Tokens.List(); err != nil {
			return err
		} else if len(list) == 0 {
			l.Close()
			return fmt.Errorf("no MCP tokens in %s: over TCP every request needs one; make one with `banger mcp token`, or serve on unix:PATH", file)
		}
		o.Hosts = hosts
		if host, _, err := net.SplitHostPort(l.Addr().String()); err == nil && !net.ParseIP(host).IsUnspecified() {
			o.Hosts = append(o.Hosts, host)
		}
	}
	srv := &http.Server{Handler: s.Handler(o), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	where := "http://" + l.Addr().String() + "/mcp"
	if unixSocket {
		where = addr + " (path /mcp)"
	}
	fmt.Fprintf(env.Stderr, "banger mcp: serving %s\n", where)
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func mcpTokenCommand(env *Env) *cobra.Command {
	var name string
	var asJSON bool
	tokens := func() (*mcp.Tokens, error) {
		file, err := mcp.TokenFile(env.Getenv)
		if err != nil {
			return nil, err
		}
		return mcp.OpenTokens(file), nil
	}
	cmd := &cobra.Command{
		Use:   "token [--name LABEL] [--json]",
		Short: "Make a bearer token for `banger mcp --http` (shown once; kept hashed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := tokens()
			if err != nil {
				return err
			}
			secret, tok, err := t.Create(tokenfile.Token{Name: name})
			if err != nil {
				return err
			}
			if asJSON {
				return cmdio.JSON(env.Stdout, map[string]any{"id": tok.ID, "name": tok.Name, "token": secret})
			}
			fmt.Fprintf(env.Stderr, "token %s made; it is shown once (only its hash is kept in %s):\n", tok.ID, t.Path())
			fmt.Fprintln(env.Stdout, secret)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "a label for the token")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the MCP tokens (IDs and labels; the secrets are not kept)",
		Args:  cobra.NoArgs,
	}
	var listJSON bool
	list.RunE = func(cmd *cobra.Command, args []string) error {
		t, err := tokens()
		if err != nil {
			return err
		}
		all, err := t.List()
		if err != nil {
			return err
		}
		if all == nil {
			all = []tokenfile.Token{}
		}
		if listJSON {
			return cmdio.JSON(env.Stdout, map[string]any{"tokens": all})
		}
		rows := [][]string{}
		for _, tok := range all {
			rows = append(rows, []string{tok.ID, dash(tok.Name), tok.Created.Local().Format(time.RFC3339)})
		}
		return cmdio.Table(env.Stdout, []string{"ID", "NAME", "CREATED"}, rows)
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an MCP token: requests with it are refused at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := tokens()
			if err != nil {
				return err
			}
			tok, err := t.Revoke(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "token %s revoked\n", tok.ID)
			return nil
		},
	}
	cmd.AddCommand(list, revoke)
	return cmd
}

// nopWriteCloser keeps the transport from closing the CLI's stdout.
type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
