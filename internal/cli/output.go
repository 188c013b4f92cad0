package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/units"
)

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
	env            *Env
	follow, asJSON bool
	header         string
	line           func(E) string
	all            []E
	rows           int
}

func (s *streamed[E]) emit(e E) error {
	switch {
	case s.asJSON && s.follow:
		return cmdio.JSONLine(s.env.Stdout, e)
	case s.asJSON:
		s.all = append(s.all, e)
		return nil
	}
	if s.rows == 0 {
		fmt.Fprintln(s.env.Stdout, s.header)
	}
	s.rows++
	_, err := fmt.Fprintln(s.env.Stdout, s.line(e))
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
		return cmdio.JSON(s.env.Stdout, whole(s.collected()))
	}
	if s.rows == 0 && !s.asJSON {
		fmt.Fprintln(s.env.Stdout, none)
	}
	return nil
}
