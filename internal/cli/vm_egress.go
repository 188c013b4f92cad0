package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/termsafe"
)

func vmEgressCommand(env *Env) *cobra.Command {
	var p api.VMEgressParams
	var asJSON, suggest bool
	cmd := &cobra.Command{
		Use:   "egress NAME [-f] [--json] [--suggest]",
		Short: "Show what a VM tried to reach: DNS questions and new connections, allowed or denied",
		Long: "Every outbound attempt of a bridge VM as the host saw it (the daemon's DNS server, the firewall's\n" +
			"log; nothing the guest says): time, verdict, destination, port, the name it was resolved from, and\n" +
			"why a denied one was. --suggest prints the allow-list that would have allowed it all: run a task\n" +
			"once with --nat, then `banger vm set NAME --allow RULE...` with those rules. The log is kept per VM\n" +
			"(1 MiB at most; the oldest goes first) and deleted with it.",
		Args: cobra.ExactArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			p.Name = args[0]
			if suggest {
				if p.Follow {
					return fmt.Errorf("%w: --suggest reads what was seen; drop --follow", api.ErrInvalidArgument)
				}
				r, err := c.VMEgressSuggest(ctx, p.Name)
				if err != nil {
					return err
				}
				return env.Emit(r, asJSON, func() error { return printSuggestion(env, r) })
			}
			out := &streamed[api.EgressEvent]{env: env, follow: p.Follow, asJSON: asJSON, line: egressLine,
				header: fmt.Sprintf("%-8s  %-7s  %-7s  %-26s  %s", "TIME", "VERDICT", "KIND", "DESTINATION", "NAME / WHY")}
			return out.run(ctx, func(ctx context.Context, emit func(api.EgressEvent) error) error {
				return c.VMEgress(ctx, p, emit)
			}, func(all []api.EgressEvent) any {
				return struct {
					Name   string            `json:"name"`
					Events []api.EgressEvent `json:"events"`
				}{p.Name, all}
			}, fmt.Sprintf("vm %s has tried nothing yet", p.Name))
		}),
	}
	cmd.Flags().BoolVarP(&p.Follow, "follow", "f", false, "keep printing attempts as they come")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (with -f: one object a line)")
	cmd.Flags().BoolVar(&suggest, "suggest", false, "print the allow-list that would have allowed what was seen")
	return cmd
}

// egressLine is one attempt as a line of the table; guest-chosen names
// are escaped.
func egressLine(e api.EgressEvent) string {
	dest := e.Dest
	if e.Port != 0 {
		dest += ":" + strconv.Itoa(e.Port)
	}
	if e.Proto != "" {
		dest = e.Proto + " " + dest
	}
	what := e.Name
	if e.Kind == api.EgressDNS {
		dest = e.Type + " " + e.Name
		what = strings.Join(e.Answers, " ")
	}
	if e.Reason != "" && what != "" {
		what += "; " + e.Reason
	} else if e.Reason != "" {
		what = e.Reason
	}
	return termsafe.String(fmt.Sprintf("%-8s  %-7s  %-7s  %-26s  %s", e.Time.Local().Format("15:04:05"), e.Verdict, e.Kind, dest, what))
}

func printSuggestion(env *Env, r api.VMEgressSuggestResult) error {
	if len(r.Allow) == 0 {
		fmt.Fprintf(env.Stdout, "# vm %s has tried nothing an allow-list would open\n", r.Name)
	}
	for _, rule := range r.Allow {
		fmt.Fprintln(env.Stdout, rule)
	}
	for _, n := range r.Never {
		fmt.Fprintf(env.Stdout, "# never allowed: %s\n", termsafe.String(n))
	}
	if cmdio.IsTTY(env.Stdout) && len(r.Allow) > 0 {
		var b strings.Builder
		for _, rule := range r.Allow {
			b.WriteString(" --allow '" + rule + "'")
		}
		fmt.Fprintf(env.Stderr, "apply with: banger vm set %s%s\n", r.Name, b.String())
	}
	return nil
}
