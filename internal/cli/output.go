package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/termsafe"
	"github.com/bangerdev/banger/internal/units"
)

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(termsafe.JSON(b), '\n'))
	return err
}

// printJSONLine prints v as one line of JSON, for streams. Both escape
// C1 controls as well as C0 (termsafe.JSON): a guest's text in an
// event or an egress name must not drive the terminal that shows it.
func printJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(termsafe.JSON(b), '\n'))
	return err
}

// table prints rows under a header, aligned. Cells may hold what a
// guest chose (a process name, a path): their control characters are
// escaped, so they cannot drive the terminal or break the alignment.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = termsafe.String(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// fields prints "key: value" lines, aligned, values escaped as table's.
func fields(w io.Writer, kv [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, f := range kv {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], termsafe.String(f[1]))
	}
	return tw.Flush()
}

// ago prints a coarse age: "12s", "5m", "3h", "2d".
func ago(now, t time.Time) string {
	return shortDuration(now.Sub(t))
}

func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatProgress(p *api.OperationProgress) string {
	if p == nil {
		return ""
	}
	if p.Unit == "bytes" {
		if p.Total > 0 {
			return fmt.Sprintf("%s/%s", units.FormatSize(p.Done), units.FormatSize(p.Total))
		}
		return units.FormatSize(p.Done)
	}
	s := fmt.Sprint(p.Done)
	if p.Total > 0 {
		s += fmt.Sprintf("/%d", p.Total)
	}
	if p.Unit != "" {
		s += " " + p.Unit
	}
	return s
}

func formatBuild(name string, b api.BuildInfo) string {
	var extra []string
	if b.Commit != "" {
		c := b.Commit
		if b.Modified {
			c += "+dirty"
		}
		extra = append(extra, "commit "+c)
	}
	if b.Date != "" {
		extra = append(extra, "built "+b.Date)
	}
	extra = append(extra, b.Go, fmt.Sprintf("protocol %d", b.Protocol))
	return fmt.Sprintf("%s %s (%s)", name, b.Version, strings.Join(extra, ", "))
}

// streamed prints what a streaming call sends: following with --json,
// one object a line as it comes; with --json otherwise, collected in all
// for the caller to print whole; else a table, header before the first
// row, each row line's (escaped there).
type streamed[E any] struct {
	a              *App
	follow, asJSON bool
	header         string
	line           func(E) string
	all            []E
	rows           int
}

func (s *streamed[E]) emit(e E) error {
	switch {
	case s.asJSON && s.follow:
		return printJSONLine(s.a.Stdout, e)
	case s.asJSON:
		s.all = append(s.all, e)
		return nil
	}
	if s.rows == 0 {
		fmt.Fprintln(s.a.Stdout, s.header)
	}
	s.rows++
	_, err := fmt.Fprintln(s.a.Stdout, s.line(e))
	return err
}

// collected is all, never nil (a JSON list, not null).
func (s *streamed[E]) collected() []E {
	if s.all == nil {
		return []E{}
	}
	return s.all
}

// run reads the stream through call (following: until Ctrl-C, which is
// no error), then prints what was collected, wrapped by whole, for
// --json, or none when nothing came.
func (s *streamed[E]) run(ctx context.Context, call func(context.Context, func(E) error) error, whole func([]E) any, none string) error {
	if s.follow {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt)
		defer stop()
	}
	err := call(ctx, s.emit)
	if s.follow && ctx.Err() != nil {
		return nil // Ctrl-C ends following
	}
	if err != nil {
		return err
	}
	if s.asJSON && !s.follow {
		return printJSON(s.a.Stdout, whole(s.collected()))
	}
	if s.rows == 0 && !s.asJSON {
		fmt.Fprintln(s.a.Stdout, none)
	}
	return nil
}
