package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/cmdio"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/termsafe"
)

// TestGuestTextIsEscaped: a process name or path a guest chose reaches
// the terminal with its escape sequences shown, not obeyed.
func TestGuestTextIsEscaped(t *testing.T) {
	var b bytes.Buffer
	evil := "nginx\x1b]0;owned\x07\x1b[2J"
	if err := cmdio.Table(&b, []string{"PORT", "PROCESS"}, [][]string{{"80", evil}}); err != nil {
		t.Fatal(err)
	}
	if err := cmdio.Fields(&b, [][2]string{{"hostname", evil}}); err != nil {
		t.Fatal(err)
	}
	// A DNS question is the guest's too.
	b.WriteString(egressLine(api.EgressEvent{Kind: api.EgressDNS, Verdict: api.EgressDenied, Type: "A", Name: evil, Reason: api.ReasonAllowList}) + "\n")
	// So is what an event says of a denial, a stop, an image's name.
	b.WriteString(eventLine(api.Event{Type: api.EventEgressDenied, VM: "x", Detail: "dns " + evil}) + "\n")
	env := &Env{Streams: cmdio.Streams{Stdout: &b, Stderr: &b}}
	if err := printSuggestion(env, api.VMEgressSuggestResult{Name: "x", Never: []string{evil}}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07") || strings.Count(out, `nginx\x1b]0;owned\x07\x1b[2J`) != 5 {
		t.Fatalf("output %q", out)
	}
	var e bytes.Buffer
	env = &Env{Streams: cmdio.Streams{Stdin: strings.NewReader(""), Stdout: &b, Stderr: &e}}
	env.Execute(&cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error {
		return errors.New("agent: " + evil)
	}}, nil)
	if strings.ContainsAny(e.String(), "\x1b\x07") {
		t.Fatalf("error %q", e.String())
	}
}

// TestJSONEscapesC1: --json of events and egress (every --json) writes
// a guest's C1 controls escaped, as it does C0.
func TestJSONEscapesC1(t *testing.T) {
	evil := "a\u009b2J\u009d0;owned\u009c\x1b[31m"
	var b bytes.Buffer
	if err := cmdio.JSON(&b, api.EgressEvent{Kind: api.EgressDNS, Name: evil}); err != nil {
		t.Fatal(err)
	}
	if err := cmdio.JSONLine(&b, api.Event{Type: api.EventEgressDenied, Detail: "dns " + evil}); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsFunc(b.String(), func(r rune) bool { return r != '\n' && termsafe.IsControl(r) }) {
		t.Fatalf("--json output holds control characters: %q", b.String())
	}
	if strings.Count(b.String(), `a\u009b2J\u009d0;owned\u009c\u001b[31m`) != 2 {
		t.Fatalf("output %q", b.String())
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "10m", want: now.Add(-10 * time.Minute)},
		{in: "2h30m", want: now.Add(-150 * time.Minute)},
		{in: "2026-12-05T10:00:00Z", want: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)},
		{in: "2026-12-05", want: time.Date(2026, 12, 5, 0, 0, 0, 0, time.Local)},
		{in: "-5m", bad: true},
		{in: "yesterday", bad: true},
	} {
		got, err := parseSince(c.in, now)
		if c.bad {
			if !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "neither a duration") {
				t.Errorf("%q: %v", c.in, err)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) {
			t.Errorf("%q = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}
