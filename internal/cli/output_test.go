package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
)

// TestGuestTextIsEscaped: a process name or path a guest chose reaches
// the terminal with its escape sequences shown, not obeyed.
func TestGuestTextIsEscaped(t *testing.T) {
	var b bytes.Buffer
	evil := "nginx\x1b]0;owned\x07\x1b[2J"
	if err := table(&b, []string{"PORT", "PROCESS"}, [][]string{{"80", evil}}); err != nil {
		t.Fatal(err)
	}
	if err := fields(&b, [][2]string{{"hostname", evil}}); err != nil {
		t.Fatal(err)
	}
	// A DNS question is the guest's too.
	b.WriteString(egressLine(api.EgressEvent{Kind: api.EgressDNS, Verdict: api.EgressDenied, Type: "A", Name: evil, Reason: api.ReasonAllowList}))
	a := &App{Stdout: &b, Stderr: &b}
	if err := a.printSuggestion(api.VMEgressSuggestResult{Name: "x", Never: []string{evil}}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07") || strings.Count(out, `nginx\x1b]0;owned\x07\x1b[2J`) != 4 {
		t.Fatalf("output %q", out)
	}
	var e bytes.Buffer
	a = &App{Stdin: strings.NewReader(""), Stdout: &b, Stderr: &e}
	a.Execute(&cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error {
		return errors.New("agent: " + evil)
	}}, nil)
	if strings.ContainsAny(e.String(), "\x1b\x07") {
		t.Fatalf("error %q", e.String())
	}
}
