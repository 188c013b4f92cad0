package mcp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/api"
)

// Background commands: sandbox_exec with background: true starts one and
// returns its handle; process_status gives its new output since the last
// look and, once it ended, its exit code; process_kill ends it (the
// agent kills its process group).
const (
	maxProcesses = 32      // running or not yet looked at after their end, a server
	maxUnread    = 1 << 20 // bytes of a stream kept unread; older ones are dropped, and counted
)

// process is one background command.
type process struct {
	id, sandbox string
	argv        []string
	started     time.Time
	cancel      context.CancelFunc
	exited      chan struct{} // closed once it ended

	mu             sync.Mutex
	stdout, stderr []byte
	dropped        int64 // unread bytes dropped for maxUnread
	killed         bool  // by process_kill
	done           bool
	result         api.VMExecResult
	err            error
	ended          time.Time
}

func (p *process) write(e api.VMExecEvent) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	buf := &p.stdout
	if e.Stream == "stderr" {
		buf = &p.stderr
	}
	*buf = append(*buf, e.Data...)
	if over := len(*buf) - maxUnread; over > 0 {
		*buf = (*buf)[over:]
		p.dropped += int64(over)
	}
	return nil
}

// processes are a server's background commands.
type processes struct {
	mu  sync.Mutex
	all map[string]*process
}

// StatusIn names a background command.
type StatusIn struct {
	Handle string `json:"handle" jsonschema:"what sandbox_exec with background: true returned"`
}

// StatusOut is process_status's result.
type StatusOut struct {
	Handle  string `json:"handle"`
	Running bool   `json:"running"`
	// ExitCode is set once it ended.
	ExitCode *int   `json:"exit_code,omitempty"`
	Signal   string `json:"signal,omitempty"`
	Error    string `json:"error,omitempty" jsonschema:"why it could not run or was cut off"`
	Stdout   string `json:"stdout" jsonschema:"output since the last process_status"`
	Stderr   string `json:"stderr"`
	// Dropped counts unread output dropped because more than 1 MiB waited.
	Dropped    int64 `json:"dropped,omitempty"`
	DurationMS int64 `json:"duration_ms"`
}

func (s *Server) addProcessTools() {
	sdk.AddTool(s.srv, &sdk.Tool{Name: "process_status", Title: "A background command's progress",
		Description: "The output a background command (sandbox_exec with background: true) wrote since the last look, whether it runs, and its exit code once it ended.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(false)}}, s.processStatus)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "process_kill", Title: "End a background command",
		Description: "End a background command and its children in the sandbox.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(true), IdempotentHint: true, OpenWorldHint: new(false)}}, s.processKill)
}

// start runs p in the background and returns its handle.
func (s *Server) start(p api.VMExecParams, timeout time.Duration) (string, error) {
	s.procs.mu.Lock()
	defer s.procs.mu.Unlock()
	if s.procs.all == nil {
		s.procs.all = map[string]*process{}
	}
	if len(s.procs.all) >= maxProcesses {
		return "", fmt.Errorf("%w: this server keeps %d background commands, running or not looked at since they ended; end some (process_kill) or read their end (process_status)", api.ErrLimitExceeded, maxProcesses)
	}
	var raw [6]byte
	_, _ = rand.Read(raw[:])
	// Not tied to the call that started it: it outlives the call.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	pr := &process{id: "proc-" + hex.EncodeToString(raw[:]), sandbox: p.Name, argv: p.Args, started: time.Now(), cancel: cancel, exited: make(chan struct{})}
	s.procs.all[pr.id] = pr
	go func() {
		defer cancel()
		res, err := s.d.ExecVM(ctx, p, pr.write)
		pr.mu.Lock()
		pr.done, pr.result, pr.err, pr.ended = true, res, err, time.Now()
		pr.mu.Unlock()
		close(pr.exited)
		s.log.Info("background command ended", "handle", pr.id, "vm", p.Name, "exit", res.ExitCode, "err", err)
	}()
	return pr.id, nil
}

func (s *Server) process(handle string) (*process, error) {
	s.procs.mu.Lock()
	defer s.procs.mu.Unlock()
	pr, ok := s.procs.all[handle]
	if !ok {
		return nil, fmt.Errorf("%w: no background command %q on this server (its end was already read, or it never was)", api.ErrNotFound, handle)
	}
	return pr, nil
}

func (s *Server) processStatus(_ context.Context, _ *sdk.CallToolRequest, in StatusIn) (*sdk.CallToolResult, StatusOut, error) {
	pr, err := s.process(in.Handle)
	if err != nil {
		return nil, StatusOut{}, err
	}
	pr.mu.Lock()
	out := StatusOut{Handle: pr.id, Running: !pr.done, Stdout: toText(pr.stdout), Stderr: toText(pr.stderr), Dropped: pr.dropped}
	pr.stdout, pr.stderr, pr.dropped = nil, nil, 0
	end := time.Now()
	if pr.done {
		end = pr.ended
		switch {
		case pr.killed:
			out.Error = "killed by process_kill"
		case errors.Is(pr.err, context.DeadlineExceeded):
			out.Error = "killed at its timeout"
		case pr.err != nil:
			out.Error = pr.err.Error()
		default:
			code := pr.result.ExitCode
			out.ExitCode, out.Signal = &code, pr.result.Signal
		}
	}
	out.DurationMS = end.Sub(pr.started).Milliseconds()
	done := pr.done
	pr.mu.Unlock()
	if done { // its end is read: it is forgotten
		s.procs.mu.Lock()
		delete(s.procs.all, pr.id)
		s.procs.mu.Unlock()
	}
	state := "running"
	switch {
	case out.Error != "":
		state = "failed: " + out.Error
	case out.ExitCode != nil:
		state = fmt.Sprintf("ended with exit code %d", *out.ExitCode)
	}
	return text("%s %s after %d ms\n--- stdout\n%s--- stderr\n%s", pr.id, state, out.DurationMS, out.Stdout, out.Stderr), out, nil
}

func (s *Server) processKill(ctx context.Context, req *sdk.CallToolRequest, in StatusIn) (*sdk.CallToolResult, StatusOut, error) {
	pr, err := s.process(in.Handle)
	if err != nil {
		return nil, StatusOut{}, err
	}
	pr.mu.Lock()
	pr.killed = !pr.done
	pr.mu.Unlock()
	pr.cancel()
	// Wait for its end, so the answer can say it.
	select {
	case <-pr.exited:
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
		return nil, StatusOut{}, ctx.Err()
	}
	return s.processStatus(ctx, req, in)
}

// toText is output as text: bytes that are not UTF-8 become U+FFFD.
func toText(b []byte) string { return strings.ToValidUTF8(string(b), "\uFFFD") }
