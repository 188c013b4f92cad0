// Package cmdio is what banger's two programs, the banger CLI and bangerd,
// share about running a command: the streams and environment a command
// runs with, the exit code an error carries, and printing results as JSON,
// tables and fields with whatever a guest chose escaped.
package cmdio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/termsafe"
)

// ExitError carries an exit code out of a command. A nil Err exits
// silently (the command already said what it had to).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// Streams are what one invocation reads, writes and looks up.
type Streams struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// OS is the process's standard streams and environment.
func OS() Streams {
	return Streams{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// Layout resolves the file layout from the environment.
func (s Streams) Layout(system bool) (paths.Layout, error) {
	home, _ := os.UserHomeDir()
	return paths.Resolve(paths.Env{Getenv: s.Getenv, UID: os.Getuid(), HomeDir: home}, system)
}

// Execute runs cmd with args, prints any error to stderr and returns the
// exit code.
func (s Streams) Execute(cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	cmd.SetIn(s.Stdin)
	cmd.SetOut(s.Stdout)
	cmd.SetErr(s.Stderr)
	cmd.SilenceErrors = true
	cmd.SilenceUsage = true
	err := cmd.ExecuteContext(context.Background())
	if err == nil {
		return 0
	}
	var exit *ExitError
	if errors.As(err, &exit) {
		if exit.Err != nil {
			fmt.Fprintf(s.Stderr, "banger: %s\n", termsafe.Text(exit.Err.Error()))
		}
		return exit.Code
	}
	// An error may quote a guest (an agent's message): escaped.
	fmt.Fprintf(s.Stderr, "banger: %s\n", termsafe.Text(err.Error()))
	return 1
}

// IsTTY reports whether w is a terminal (progress displays only then).
func IsTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Group is a command that only holds others.
func Group(use, short string, aliases []string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Aliases: aliases}
	cmd.AddCommand(subs...)
	return cmd
}

// JSON prints v as indented JSON. It and JSONLine escape C1 controls as
// well as C0 (termsafe.JSON): a guest's text in an event or an egress name
// must not drive the terminal that shows it.
func JSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(termsafe.JSON(b), '\n'))
	return err
}

// JSONLine prints v as one line of JSON, for streams.
func JSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(termsafe.JSON(b), '\n'))
	return err
}

// Table prints rows under a header, aligned. Cells may hold what a guest
// chose (a process name, a path): their control characters are escaped,
// so they cannot drive the terminal or break the alignment.
func Table(w io.Writer, header []string, rows [][]string) error {
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

// Fields prints "key: value" lines, aligned, values escaped as Table's.
func Fields(w io.Writer, kv [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, f := range kv {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], termsafe.String(f[1]))
	}
	return tw.Flush()
}

// Emit prints r as JSON (--json) or as human says.
func (s Streams) Emit(r any, asJSON bool, human func() error) error {
	if asJSON {
		return JSON(s.Stdout, r)
	}
	return human()
}
