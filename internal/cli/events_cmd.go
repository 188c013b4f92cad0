package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/termsafe"
)

func eventsCommand(env *Env) *cobra.Command {
	var p api.EventsParams
	var since string
	var asJSON, noFollow bool
	cmd := &cobra.Command{
		Use:   "events [--since DURATION|TIME] [--vm NAME] [--type T]... [--no-follow] [--json]",
		Short: "Stream the daemon's events: VMs created, started, stopped (and why), deleted; images; failures; egress denied",
		Long: "Follows events as they happen until Ctrl-C; with --since, the kept past first (the daemon keeps the\n" +
			"last 10000 events in its store, across restarts). --no-follow prints the kept events and ends.\n" +
			"Types: " + strings.Join(api.EventTypes, ", ") + ".\n" +
			"A stop's reason says who or what stopped the VM: a user, auto-stop, the guest powering off, a VMM crash.",
		Args: cobra.NoArgs,
		RunE: withClient(env, func(ctx context.Context, c *client.Client, _ []string) error {
			p.Follow = !noFollow
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				p.Since = t
			} else if noFollow {
				p.Since = time.Unix(0, 1) // everything kept
			}
			out := &streamed[api.Event]{env: env, follow: p.Follow, asJSON: asJSON, line: eventLine,
				header: fmt.Sprintf("%-19s  %-16s  %-20s  %s", "TIME", "TYPE", "VM/IMAGE", "REASON")}
			return out.run(ctx, func(ctx context.Context, emit func(api.Event) error) error {
				_, err := c.Events(ctx, p, emit)
				return err
			}, func(all []api.Event) any {
				return struct {
					Events []api.Event `json:"events"`
				}{all}
			}, "no events")
		}),
	}
	cmd.Flags().StringVar(&since, "since", "", "send the kept events since then first: a duration back (10m, 2h) or a time (2026-12-05T10:00:00Z, 2026-12-05)")
	cmd.Flags().StringVar(&p.VM, "vm", "", "only this VM's events")
	cmd.Flags().StringArrayVar(&p.Types, "type", nil, "only events of this type (repeatable)")
	cmd.Flags().BoolVar(&noFollow, "no-follow", false, "print the kept events and end")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (following: one object a line)")
	return cmd
}

// parseSince reads --since: a duration back from now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: --since %q is neither a duration (10m, 2h) nor a time (2026-12-05T10:00:00Z, 2026-12-05)", api.ErrInvalidArgument, s)
}

// eventLine is one event as a line of the table; everything in it that
// may come from a guest or an image is escaped.
func eventLine(e api.Event) string {
	who := e.VM
	if who == "" {
		who = e.Image
	}
	why := e.Reason
	if e.Detail != "" && why != "" {
		why = e.Detail + ": " + why
	} else if e.Detail != "" {
		why = e.Detail
	}
	return termsafe.String(fmt.Sprintf("%-19s  %-16s  %-20s  %s", e.Time.Local().Format("2006-01-02 15:04:05"), e.Type, who, why))
}
