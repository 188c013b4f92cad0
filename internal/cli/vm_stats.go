package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/units"
)

func vmStatsCommands(env *Env) []*cobra.Command {
	return []*cobra.Command{vmStatsCommand(env), vmTopCommand(env), vmHealthCommand(env), vmPingCommand(env), vmPortsCommand(env)}
}

func vmStatsCommand(env *Env) *cobra.Command {
	var asJSON, watch bool
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "stats NAME",
		Short: "Show a running VM's CPU, memory, disk, network, load and processes",
		Long: "Show the stats poller's latest sample of a running VM, with its recent CPU history. " +
			"--watch redraws it live, as `banger vm top` does for every VM.",
		Args: cobra.ExactArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			if watch {
				return top(ctx, env, c, args[0], every)
			}
			st, err := c.VMStats(ctx, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return cmdio.JSON(env.Stdout, st)
			}
			return cmdio.Fields(env.Stdout, statsFields(st))
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "redraw live until interrupted")
	cmd.Flags().DurationVar(&every, "interval", 2*time.Second, "how often --watch redraws")
	return cmd
}

func statsFields(st api.VMStats) [][2]string {
	cpus := make([]float64, len(st.History))
	for i, h := range st.History {
		cpus[i] = h.CPUPercent
	}
	return [][2]string{
		{"name", st.Name},
		{"sampled", st.Time.Local().Format(time.RFC3339)},
		{"cpu", fmt.Sprintf("%.1f%% of %d vCPU(s) (the VMM on the host: %.1f%%)", st.CPUPercent, st.VCPU, st.HostCPUPercent)},
		{"cpu history", sparkline(cpus, float64(max(st.VCPU, 1)*100))},
		{"memory", fmt.Sprintf("%s used of %s, %s available (the VMM's RSS: %s)", size(st.MemUsed), size(st.MemTotal), size(st.MemAvailable), size(st.HostRSS))},
		{"disk", fmt.Sprintf("%s used of %s", size(st.DiskUsed), size(st.DiskSize))},
		{"network", fmt.Sprintf("%s in, %s out (%s/s in, %s/s out)", size(st.NetRx), size(st.NetTx), size(uint64(st.NetRxRate)), size(uint64(st.NetTxRate)))},
		{"load", fmt.Sprintf("%.2f %.2f %.2f", st.Load1, st.Load5, st.Load15)},
		{"processes", strconv.Itoa(st.Procs)},
		{"ssh sessions", strconv.Itoa(st.Sessions)},
		{"uptime", shortDuration(time.Duration(st.Uptime * float64(time.Second)))},
	}
}

func size(n uint64) string { return units.FormatSize(int64(n)) }

// sparkline draws vals (0 to top) as block characters, oldest first.
func sparkline(vals []float64, top float64) string {
	const bars = "▁▂▃▄▅▆▇█"
	levels := []rune(bars)
	if len(vals) == 0 {
		return "-"
	}
	var b strings.Builder
	for _, v := range vals {
		i := 0
		if top > 0 {
			i = int(v / top * float64(len(levels)-1))
		}
		b.WriteRune(levels[min(max(i, 0), len(levels)-1)])
	}
	return b.String()
}

func vmTopCommand(env *Env) *cobra.Command {
	var every time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "top",
		Short: "A live view of every running VM's CPU, memory and network",
		Long: "Redraw a table of every running VM every --interval until interrupted (Ctrl-C), with a " +
			"sparkline of each VM's recent CPU. Printed once when the output is not a terminal.",
		Args: cobra.NoArgs,
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			if asJSON {
				all, err := c.VMStatsAll(ctx)
				if err != nil {
					return err
				}
				return cmdio.JSON(env.Stdout, all)
			}
			return top(ctx, env, c, "", every)
		}),
	}
	cmd.Flags().DurationVar(&every, "interval", 2*time.Second, "how often to redraw")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print every running VM's latest sample once, as JSON")
	return cmd
}

// top draws every running VM (or only the one named only) until ctx
// ends; once, when stdout is not a terminal.
func top(ctx context.Context, env *Env, c *client.Client, only string, every time.Duration) error {
	live := cmdio.IsTTY(env.Stdout)
	for {
		all, err := c.VMStatsAll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		var rows [][]string
		for _, st := range all.VMs {
			if only != "" && st.Name != only {
				continue
			}
			cpus := make([]float64, len(st.History))
			for i, h := range st.History {
				cpus[i] = h.CPUPercent
			}
			rows = append(rows, []string{st.Name, fmt.Sprintf("%.1f%%", st.CPUPercent), sparkline(cpus[max(0, len(cpus)-20):], float64(max(st.VCPU, 1)*100)),
				fmt.Sprintf("%s/%s", size(st.MemUsed), size(st.MemTotal)), size(st.HostRSS),
				fmt.Sprintf("%s/s", size(uint64(st.NetRxRate))), fmt.Sprintf("%s/s", size(uint64(st.NetTxRate))),
				fmt.Sprintf("%.2f", st.Load1), strconv.Itoa(st.Procs), shortDuration(time.Duration(st.Uptime * float64(time.Second)))})
		}
		if only != "" && len(rows) == 0 {
			if _, err := c.VMStats(ctx, only); err != nil { // says why: not found, not running
				return err
			}
		}
		if live {
			fmt.Fprint(env.Stdout, "\033[H\033[2J") // home, clear
			fmt.Fprintf(env.Stdout, "banger vm top — %s — every %s, Ctrl-C to quit\n\n", time.Now().Format("15:04:05"), every)
		}
		if err := topTable(env, env.Stdout, rows); err != nil || !live {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

func topTable(env *Env, w io.Writer, rows [][]string) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "no running VMs")
		return err
	}
	return cmdio.Table(w, []string{"NAME", "CPU", "HISTORY", "MEMORY", "HOST RSS", "NET IN", "NET OUT", "LOAD", "PROCS", "UP"}, rows)
}

func vmHealthCommand(env *Env) *cobra.Command {
	return printed(env, &cobra.Command{
		Use:   "health NAME",
		Short: "Check that a running VM's agent answers, with its latency and version",
		Long: "Ping the VM's agent. Exits non-zero with code not_found, not_running, or unresponsive " +
			"(the agent did not answer within 5s).",
		Args: cobra.ExactArgs(1),
	}, "print JSON", func(ctx context.Context, c *client.Client, args []string) (api.VMHealth, error) {
		return c.VMHealth(ctx, args[0])
	}, func(h api.VMHealth) error {
		_, err := fmt.Fprintf(env.Stdout, "vm %s is healthy: agent %s answered in %.1f ms, guest up %s\n",
			h.Name, dash(h.AgentVersion), h.LatencyMS, shortDuration(time.Duration(h.Uptime*float64(time.Second))))
		return err
	})
}

func vmPingCommand(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "ping NAME",
		Short: "Ping a running VM's agent",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(env, func(ctx context.Context, c *client.Client, args []string) error {
			h, err := c.VMPing(ctx, args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(env.Stdout, "pong from %s in %.1f ms\n", h.Name, h.LatencyMS)
			return err
		}),
	}
}

func vmPortsCommand(env *Env) *cobra.Command {
	var forward bool
	cmd := printed(env, &cobra.Command{
		Use:   "ports NAME",
		Short: "List a running VM's listening ports, each probed as http, https or tcp",
		Long: "List every listening TCP and UDP socket in the guest with its process, one row per port. " +
			"Each TCP port is probed from the host (a TLS handshake, then an HTTP request) and given a URL: " +
			"the VM's address on the bridge network, or with --forward a listener on the host's 127.0.0.1 " +
			"that carries connections through the agent (any network; until the VM stops, across daemon restarts).",
		Args: cobra.ExactArgs(1),
	}, "print JSON", func(ctx context.Context, c *client.Client, args []string) (api.VMPortsResult, error) {
		return c.VMPorts(ctx, api.VMPortsParams{Name: args[0], Forward: forward})
	}, func(r api.VMPortsResult) error {
		rows := make([][]string, 0, len(r.Ports))
		for _, p := range r.Ports {
			proc := p.Process
			if p.PID != 0 {
				proc = fmt.Sprintf("%s (%d)", p.Process, p.PID)
			}
			rows = append(rows, []string{p.Proto, strconv.Itoa(p.Port), strings.Join(p.Addresses, ","), dash(proc), p.Scheme, dash(p.URL)})
		}
		return cmdio.Table(env.Stdout, []string{"PROTO", "PORT", "ADDRESS", "PROCESS", "SCHEME", "URL"}, rows)
	})
	cmd.Flags().BoolVar(&forward, "forward", false, "open each TCP port on the host's 127.0.0.1")
	return cmd
}
