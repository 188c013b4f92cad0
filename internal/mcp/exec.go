package mcp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/api"
)

// Exec bounds: what an agent gets back of a command's output, and how
// long a command may run.
const (
	defaultOutputCap = 64 << 10
	maxOutputCap     = 1 << 20
	defaultTimeout   = 5 * time.Minute
	maxTimeout       = time.Hour
)

// ExecIn are sandbox_exec's arguments.
type ExecIn struct {
	Name    string            `json:"name" jsonschema:"the sandbox's name"`
	Argv    []string          `json:"argv,omitempty" jsonschema:"the program and its arguments, run without a shell; give argv or command"`
	Command string            `json:"command,omitempty" jsonschema:"a shell command line, run by /bin/sh -c; give argv or command"`
	Dir     string            `json:"dir,omitempty" jsonschema:"absolute working directory (default: the user's home, or /workspace when there is one)"`
	Env     map[string]string `json:"env,omitempty" jsonschema:"environment variables to add"`
	User    string            `json:"user,omitempty" jsonschema:"the user to run as (default: root)"`
	Stdin   string            `json:"stdin,omitempty" jsonschema:"text given to the command on its standard input (at most 1 MiB; none: /dev/null)"`
	// TimeoutSeconds ends the command (killing it) after this long.
	TimeoutSeconds int `json:"timeout_seconds,omitempty" jsonschema:"seconds before the command is killed (default 300, at most 3600)"`
	// OutputCap bounds the bytes of stdout, and of stderr, returned.
	OutputCap int `json:"output_cap,omitempty" jsonschema:"bytes of stdout and of stderr to return at most (default 65536, at most 1048576); the counts say how much there was"`
	// Background starts the command and returns its handle at once.
	Background bool `json:"background,omitempty" jsonschema:"start it and return a handle at once: process_status reads its output and exit, process_kill ends it (its timeout defaults to 3600 s)"`
}

// ExecOut is sandbox_exec's result.
type ExecOut struct {
	// Handle names a background command, for process_status and
	// process_kill.
	Handle   string `json:"handle,omitempty"`
	ExitCode int    `json:"exit_code" jsonschema:"the command's exit code; -1 when it was killed by a signal or the timeout"`
	Signal   string `json:"signal,omitempty" jsonschema:"the signal that ended it"`
	TimedOut bool   `json:"timed_out,omitempty"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	// StdoutBytes and StderrBytes count all the command wrote, kept or not.
	StdoutBytes int64 `json:"stdout_bytes"`
	StderrBytes int64 `json:"stderr_bytes"`
	Truncated   bool  `json:"truncated" jsonschema:"true when stdout or stderr was longer than output_cap and was cut"`
	DurationMS  int64 `json:"duration_ms"`
}

func (s *Server) addExecTools() {
	sdk.AddTool(s.srv, &sdk.Tool{
		Name:        "sandbox_exec",
		Title:       "Run a command in a sandbox",
		Description: "Run a command in a sandbox and wait for it: argv (no shell) or command (a /bin/sh -c line), with a working directory, environment and timeout. Returns the exit code, duration and output (each stream capped; truncated and the byte counts say what was cut). With background: true it returns a handle at once (a server, a watcher, a long build): process_status and process_kill take it.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(true), OpenWorldHint: new(true)},
	}, s.exec)
}

// argv is the command in tries to run.
func (in ExecIn) argv() ([]string, error) {
	switch {
	case len(in.Argv) > 0 && in.Command != "":
		return nil, fmt.Errorf("%w: give argv or command, not both", api.ErrInvalidArgument)
	case len(in.Argv) > 0:
		if in.Argv[0] == "" {
			return nil, fmt.Errorf("%w: argv[0] is empty: name the program to run", api.ErrInvalidArgument)
		}
		return in.Argv, nil
	case in.Command != "":
		return []string{"/bin/sh", "-c", in.Command}, nil
	}
	return nil, fmt.Errorf("%w: nothing to run: give argv (e.g. [\"ls\", \"-l\"]) or command (e.g. \"make test\")", api.ErrInvalidArgument)
}

func (in ExecIn) params() (api.VMExecParams, error) {
	argv, err := in.argv()
	if err != nil {
		return api.VMExecParams{}, err
	}
	if in.Dir != "" && !path.IsAbs(in.Dir) {
		return api.VMExecParams{}, fmt.Errorf("%w: dir %q is relative: give an absolute path such as /workspace", api.ErrInvalidArgument, in.Dir)
	}
	if len(in.Stdin) > api.MaxExecStdin {
		return api.VMExecParams{}, fmt.Errorf("%w: stdin of %d bytes: at most %d (write a file with file_write and redirect it)", api.ErrInvalidArgument, len(in.Stdin), api.MaxExecStdin)
	}
	p := api.VMExecParams{Name: in.Name, Args: argv, Dir: in.Dir, User: in.User, Stdin: []byte(in.Stdin)}
	for _, k := range slices.Sorted(maps.Keys(in.Env)) {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(in.Env[k], 0) {
			return api.VMExecParams{}, fmt.Errorf("%w: env %q: a name is not empty and has no '=' or NUL, a value no NUL", api.ErrInvalidArgument, k)
		}
		p.Env = append(p.Env, k+"="+in.Env[k])
	}
	return p, nil
}

func (in ExecIn) limits() (timeout time.Duration, outputCap int, err error) {
	timeout, outputCap = defaultTimeout, defaultOutputCap
	switch t := in.TimeoutSeconds; {
	case t < 0 || time.Duration(t)*time.Second > maxTimeout:
		return 0, 0, fmt.Errorf("%w: timeout_seconds %d: give 1 to %d", api.ErrInvalidArgument, t, int(maxTimeout/time.Second))
	case t > 0:
		timeout = time.Duration(t) * time.Second
	}
	switch c := in.OutputCap; {
	case c < 0 || c > maxOutputCap:
		return 0, 0, fmt.Errorf("%w: output_cap %d: give 1 to %d", api.ErrInvalidArgument, c, maxOutputCap)
	case c > 0:
		outputCap = c
	}
	return timeout, outputCap, nil
}

func (s *Server) exec(ctx context.Context, _ *sdk.CallToolRequest, in ExecIn) (*sdk.CallToolResult, ExecOut, error) {
	p, err := in.params()
	if err != nil {
		return nil, ExecOut{}, err
	}
	timeout, outputCap, err := in.limits()
	if err != nil {
		return nil, ExecOut{}, err
	}
	if _, err := s.mine(ctx, in.Name); err != nil {
		return nil, ExecOut{}, err
	}
	if in.Background {
		if in.TimeoutSeconds == 0 {
			timeout = maxTimeout
		}
		h, err := s.start(p, timeout)
		if err != nil {
			return nil, ExecOut{}, err
		}
		return text("started in the background as %s: process_status reads its output, process_kill ends it", h), ExecOut{Handle: h}, nil
	}
	stdout, stderr := &capped{max: outputCap}, &capped{max: outputCap}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	res, err := s.d.ExecVM(runCtx, p, func(e api.VMExecEvent) error {
		if e.Stream == "stderr" {
			stderr.write(e.Data)
		} else {
			stdout.write(e.Data)
		}
		return nil
	})
	out := ExecOut{ExitCode: res.ExitCode, Signal: res.Signal, DurationMS: time.Since(start).Milliseconds()}
	if err != nil {
		if ctx.Err() == nil && errors.Is(runCtx.Err(), context.DeadlineExceeded) {
			out.TimedOut, out.ExitCode = true, -1
		} else {
			return nil, ExecOut{}, err
		}
	}
	out.Stdout, out.StdoutBytes = stdout.String(), stdout.n
	out.Stderr, out.StderrBytes = stderr.String(), stderr.n
	out.Truncated = stdout.cut() || stderr.cut()
	s.log.Info("exec", "vm", in.Name, "argv0", p.Args[0], "exit", out.ExitCode, "timed_out", out.TimedOut, "ms", out.DurationMS)
	summary := fmt.Sprintf("exit code %d after %d ms", out.ExitCode, out.DurationMS)
	if out.TimedOut {
		summary = fmt.Sprintf("killed after the timeout of %s", timeout)
	}
	if out.Truncated {
		summary += fmt.Sprintf(" (output cut to %d bytes a stream: %d of stdout, %d of stderr)", outputCap, out.StdoutBytes, out.StderrBytes)
	}
	return text("%s\n--- stdout\n%s--- stderr\n%s", summary, out.Stdout, out.Stderr), out, nil
}

// capped keeps the first max bytes written to it and counts them all.
type capped struct {
	max int
	buf []byte
	n   int64
}

func (c *capped) write(p []byte) {
	c.n += int64(len(p))
	if room := c.max - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(room, len(p))]...)
	}
}

func (c *capped) cut() bool { return c.n > int64(len(c.buf)) }

// String is the kept output as text: bytes that are not UTF-8 (a cut
// through a character, or binary output) become U+FFFD.
func (c *capped) String() string {
	if utf8.Valid(c.buf) {
		return string(c.buf)
	}
	return strings.ToValidUTF8(string(c.buf), "\uFFFD")
}
