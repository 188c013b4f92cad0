package e2b

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	pb "github.com/bangerdev/banger/internal/e2b/envd/processpb"
)

// Bounds of the process service.
const (
	maxProcs        = 256     // running at once in one sandbox
	maxArgs         = 4096    // arguments of a command
	maxInput        = 1 << 20 // one SendInput
	subscriberQueue = 256     // events a slow reader may fall behind by
	publishWait     = 5 * time.Second
	firstPID        = 1000 // handles start here, as a guest's pids would
	defaultCols     = 80
	defaultRows     = 24
)

// processes are a sandbox's commands started through the API. Each runs
// as a kept exec of the VM's agent (proto.ExecParams.Keep) held by the
// daemon, not by the request that started it, so it outlives its client
// (E2B's background commands) and a pause (the suspend breaks the
// agent's link; the resume attaches to it again) until it ends, is
// killed, or the sandbox goes.
type processes struct {
	mu      sync.Mutex
	next    uint32
	running map[uint32]*process
	closed  bool
	// resumed is closed when a pause ends; nil while not paused.
	resumed chan struct{}
}

// pause marks the sandbox pausing: an exec whose link breaks from now
// waits for resume to attach again.
func (ps *processes) pause() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.resumed == nil {
		ps.resumed = make(chan struct{})
	}
}

// resume lets the execs the pause broke attach again.
func (ps *processes) resume() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.resumed != nil {
		close(ps.resumed)
		ps.resumed = nil
	}
}

// paused is closed when the pause ends; nil when not paused.
func (ps *processes) paused() <-chan struct{} {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.resumed
}

// process is one command and who listens to it.
type process struct {
	pid    uint32
	tag    string
	config *pb.ProcessConfig
	pty    bool
	in     *inbox // nil without stdin
	resize chan proto.Winsize
	cancel context.CancelFunc
	// handle names the exec in the guest, for signals (agent's signal)
	// and to attach to it again after a pause.
	handle string
	gmu    sync.Mutex
	guest  Guest // the agent of its last attach

	wait time.Duration // how long a full listener may hold up the output
	// gone is set when the process ends with its sandbox: its streams
	// are cut, as a killed sandbox's would be, not ended.
	gone atomic.Bool

	mu   sync.Mutex
	subs map[chan *pb.ProcessEvent]struct{}
	done chan struct{}
	end  *pb.ProcessEvent_EndEvent
}

func (s *Service) processesOf(id string) *processes {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[id]
	if p == nil {
		p = &processes{next: firstPID, running: map[uint32]*process{}}
		s.procs[id] = p
	}
	return p
}

// killAll ends every process (the sandbox is going).
func (ps *processes) killAll() {
	ps.mu.Lock()
	ps.closed = true
	all := make([]*process, 0, len(ps.running))
	for _, p := range ps.running {
		all = append(all, p)
	}
	ps.mu.Unlock()
	for _, p := range all {
		p.gone.Store(true)
		p.cancel()
	}
}

func (ps *processes) find(sel *pb.ProcessSelector) (*process, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	switch s := sel.GetSelector().(type) {
	case *pb.ProcessSelector_Pid:
		if p, ok := ps.running[s.Pid]; ok {
			return p, nil
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d not found", s.Pid))
	case *pb.ProcessSelector_Tag:
		for _, p := range ps.running {
			if p.tag == s.Tag {
				return p, nil
			}
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with tag %q not found", s.Tag))
	}
	return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("a process is named by pid or tag"))
}

func (p *process) agent() Guest {
	p.gmu.Lock()
	defer p.gmu.Unlock()
	return p.guest
}

// inbox is a process's stdin as the API writes it. It is not a pipe of
// one exec call: a pause ends the call, and the next (an attach) reads
// on from it, nothing lost between.
type inbox struct {
	ch     chan []byte
	closed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	rest   []byte // what a reader took and did not use
}

func newInbox() *inbox { return &inbox{ch: make(chan []byte), closed: make(chan struct{})} }

func (b *inbox) close() { b.once.Do(func() { close(b.closed) }) }

// reader reads the inbox until it closes (io.EOF) or stop does.
func (b *inbox) reader(stop <-chan struct{}) io.Reader { return inboxReader{b, stop} }

type inboxReader struct {
	b    *inbox
	stop <-chan struct{}
}

func (r inboxReader) Read(p []byte) (int, error) {
	b := r.b
	b.mu.Lock()
	if len(b.rest) > 0 {
		n := copy(p, b.rest)
		b.rest = b.rest[n:]
		b.mu.Unlock()
		return n, nil
	}
	b.mu.Unlock()
	select {
	case data := <-b.ch:
		n := copy(p, data)
		b.mu.Lock()
		b.rest = append(b.rest, data[n:]...)
		b.mu.Unlock()
		return n, nil
	case <-b.closed:
		return 0, io.EOF
	case <-r.stop:
		return 0, io.ErrClosedPipe
	}
}

// subscribe adds a listener; the channel closes after the end event.
func (p *process) subscribe() chan *pb.ProcessEvent {
	ch := make(chan *pb.ProcessEvent, subscriberQueue)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.end != nil {
		ch <- &pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: p.end}}
		close(ch)
		return ch
	}
	p.subs[ch] = struct{}{}
	return ch
}

func (p *process) unsubscribe(ch chan *pb.ProcessEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.subs[ch]; ok {
		delete(p.subs, ch)
		close(ch)
	}
}

// publish hands ev to every listener. One that stays a queue behind for
// publishWait is dropped (its stream ends with an error), so a stalled
// client holds up the command only that long, and never the daemon.
func (p *process) publish(ev *pb.ProcessEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ch := range p.subs {
		select {
		case ch <- ev:
			continue
		default:
		}
		t := time.NewTimer(p.wait)
		select {
		case ch <- ev:
		case <-t.C:
			delete(p.subs, ch)
			close(ch)
		}
		t.Stop()
	}
}

func (p *process) finish(end *pb.ProcessEvent_EndEvent) {
	p.mu.Lock()
	p.end = end
	subs := p.subs
	p.subs = nil
	p.mu.Unlock()
	ev := &pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: end}}
	for ch := range subs {
		select {
		case ch <- ev:
		default:
		}
		close(ch)
	}
	close(p.done)
}

// output is an io.Writer of one of a process's streams.
type output struct {
	p    *process
	kind string
}

func (o output) Write(b []byte) (int, error) {
	d := &pb.ProcessEvent_DataEvent{}
	data := append([]byte(nil), b...)
	switch o.kind {
	case "stderr":
		d.Output = &pb.ProcessEvent_DataEvent_Stderr{Stderr: data}
	case "pty":
		d.Output = &pb.ProcessEvent_DataEvent_Pty{Pty: data}
	default:
		d.Output = &pb.ProcessEvent_DataEvent_Stdout{Stdout: data}
	}
	o.p.publish(&pb.ProcessEvent{Event: &pb.ProcessEvent_Data{Data: d}})
	return len(b), nil
}

// userOf is the guest user a request names: its Basic authorization's
// user name (the SDKs' `user`), else "" (the sandbox's default user).
func userOf(h http.Header) (string, error) {
	a, ok := strings.CutPrefix(h.Get("Authorization"), "Basic ")
	if !ok {
		return "", nil
	}
	raw, err := base64.StdEncoding.DecodeString(a)
	if err != nil {
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("authorization: not base64 of user:"))
	}
	user, _, _ := strings.Cut(string(raw), ":")
	if !validUser(user) {
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("user %q: a user name of the guest", user))
	}
	return user, nil
}

func validUser(u string) bool {
	if len(u) > 32 {
		return false
	}
	return strings.Trim(u, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == "" && !strings.HasPrefix(u, "-")
}

type processService struct{ s *Service }

// guest is the agent of the request's sandbox.
func (ps *processService) guest(ctx context.Context) (string, Guest, error) {
	id := sandboxFrom(ctx)
	g, err := ps.s.o.VMs.Guest(ctx, id)
	if err != nil {
		return id, nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("sandbox %s: %w", id, err))
	}
	return id, g, nil
}

func (ps *processService) Start(ctx context.Context, req *connect.Request[pb.StartRequest], stream *connect.ServerStream[pb.StartResponse]) error {
	cfg := req.Msg.GetProcess()
	if cfg == nil || cfg.GetCmd() == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("process.cmd: the program to run"))
	}
	if len(cfg.GetArgs()) > maxArgs || len(cfg.GetEnvs()) > maxEnvs {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("at most %d arguments and %d variables", maxArgs, maxEnvs))
	}
	if c := cfg.GetCwd(); c != "" && !path.IsAbs(c) {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd %q: an absolute path", c))
	}
	user, err := userOf(req.Header())
	if err != nil {
		return err
	}
	id, g, err := ps.guest(ctx)
	if err != nil {
		return err
	}
	sb, err := ps.s.sandboxByID(id)
	if err != nil {
		return connect.NewError(connect.CodeNotFound, err)
	}
	if user == "" {
		user = sb.User
	}
	env := maps.Clone(sb.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, cfg.GetEnvs())
	for k := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("env %.40q: a name without '=' or NUL", k))
		}
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	envList := make([]string, 0, len(keys))
	for _, k := range keys {
		envList = append(envList, k+"="+env[k])
	}
	table := ps.s.processesOf(id)
	table.mu.Lock()
	if table.closed || len(table.running) >= maxProcs {
		table.mu.Unlock()
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("sandbox %s runs %d processes, at most %d", id, len(table.running), maxProcs))
	}
	pid := table.next
	table.next++
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &process{pid: pid, tag: req.Msg.GetTag(), config: cfg, pty: req.Msg.Pty != nil, cancel: cancel, wait: publishWait,
		handle: "e2b-" + newID(), guest: g, subs: map[chan *pb.ProcessEvent]struct{}{}, done: make(chan struct{})}
	table.running[pid] = p
	table.mu.Unlock()

	params := proto.ExecParams{Args: append([]string{cfg.GetCmd()}, cfg.GetArgs()...), Env: envList, Dir: cfg.GetCwd(), User: user,
		Handle: p.handle, Keep: true}
	if req.Msg.GetStdin() || p.pty {
		p.in = newInbox()
	}
	if p.pty {
		size := req.Msg.GetPty().GetSize()
		params.Cols, params.Rows = clampSize(size.GetCols(), defaultCols), clampSize(size.GetRows(), defaultRows)
		p.resize = make(chan proto.Winsize, 4)
	}
	ch := p.subscribe()
	// Logged before it starts: its end is logged after.
	ps.s.o.Logger.Info("e2b process started", "sandbox", id, "pid", pid, "cmd", cfg.GetCmd())
	ps.s.logf(id, "info", "process started", "pid", strconv.Itoa(int(pid)), "cmd", strings.Join(append([]string{cfg.GetCmd()}, cfg.GetArgs()...), " "), "user", user, "tag", req.Msg.GetTag())
	go func() {
		res, err := ps.run(runCtx, id, table, p, params)
		table.mu.Lock()
		delete(table.running, pid)
		table.mu.Unlock()
		cancel()
		end := endOf(res, err, runCtx)
		level := "info"
		if end.GetError() != "" {
			level = "error"
		}
		ps.s.logf(id, level, "process ended", "pid", strconv.Itoa(int(pid)), "exitCode", strconv.Itoa(int(end.GetExitCode())), "status", end.GetStatus(), "error", end.GetError())
		p.finish(end)
	}()
	if err := stream.Send(&pb.StartResponse{Event: &pb.ProcessEvent{Event: &pb.ProcessEvent_Start{Start: &pb.ProcessEvent_StartEvent{Pid: pid}}}}); err != nil {
		p.unsubscribe(ch)
		return err
	}
	return relay(ctx, req.Header(), p, ch, func(ev *pb.ProcessEvent) error { return stream.Send(&pb.StartResponse{Event: ev}) })
}

// run runs p's exec to its end: started, and attached to again each
// time its link breaks with a pause, once the pause ends. An exec whose
// call failed otherwise is attached to once more (the agent keeps it
// if it runs on) before its failure counts.
func (ps *processService) run(ctx context.Context, id string, table *processes, p *process, params proto.ExecParams) (proto.ExecResult, error) {
	attach := false
	var first error
	for {
		stop := make(chan struct{})
		var stdin io.Reader
		if p.in != nil {
			stdin = p.in.reader(stop)
		}
		g := p.agent()
		var res proto.ExecResult
		var err error
		switch {
		case attach && p.pty:
			res, err = g.Attach(ctx, p.handle, stdin, output{p, "pty"}, nil, p.resize)
		case attach:
			res, err = g.Attach(ctx, p.handle, stdin, output{p, "stdout"}, output{p, "stderr"}, nil)
		case p.pty:
			res, err = g.ExecTTY(ctx, params, stdin, output{p, "pty"}, p.resize)
		default:
			res, err = g.Exec(ctx, params, stdin, output{p, "stdout"}, output{p, "stderr"})
		}
		close(stop)
		if err == nil || ctx.Err() != nil {
			return res, err
		}
		ng, err := ps.reattach(ctx, id, table, p, err, &first)
		if err != nil {
			return res, err
		}
		p.gmu.Lock()
		p.guest = ng
		p.gmu.Unlock()
		attach = true
	}
}

// reattach is the agent to attach to p's exec again after its call
// failed with err: once its sandbox's pause ends, or at once, a single
// time, for another failure. A VM suspended outside the API (banger vm
// suspend, the idle sweep) is waited for as a pause, never woken here.
func (ps *processService) reattach(ctx context.Context, id string, table *processes, p *process, err error, first *error) (Guest, error) {
	for {
		if resumed := table.paused(); resumed != nil {
			ps.s.o.Logger.Debug("e2b: a process waits for its sandbox's resume", "sandbox", id, "pid", p.pid, "err", err)
			select {
			case <-resumed:
			case <-ctx.Done():
				return nil, err
			}
			*first = nil // the pause broke it: not a failure
		} else if *first != nil {
			return nil, *first
		} else {
			*first = err
		}
		g, gerr := ps.s.o.VMs.Running(ctx, id)
		if errors.Is(gerr, api.ErrNotRunning) {
			table.pause() // its resume event ends the wait
			// Asked again once the wait is set: a resume between the
			// first answer and pause() found nothing to end, and its
			// event is not sent twice.
			if g, gerr = ps.s.o.VMs.Running(ctx, id); errors.Is(gerr, api.ErrNotRunning) {
				continue
			}
			table.resume()
		}
		if gerr != nil {
			return nil, cmp.Or(*first, gerr)
		}
		return g, nil
	}
}

func clampSize(v uint32, def uint16) uint16 {
	if v == 0 {
		return def
	}
	return uint16(min(v, 1000))
}

// endOf is E2B's end event of an exec's result.
func endOf(res proto.ExecResult, err error, ctx context.Context) *pb.ProcessEvent_EndEvent {
	switch {
	case err != nil && ctx.Err() != nil:
		return &pb.ProcessEvent_EndEvent{ExitCode: -1, Exited: false, Status: "signal: killed"}
	case err != nil:
		msg := err.Error()
		return &pb.ProcessEvent_EndEvent{ExitCode: -1, Exited: false, Status: "error", Error: &msg}
	case res.Signal != "":
		return &pb.ProcessEvent_EndEvent{ExitCode: -1, Exited: false, Status: "signal: " + strings.ToLower(strings.TrimPrefix(res.Signal, "SIG"))}
	}
	return &pb.ProcessEvent_EndEvent{ExitCode: int32(res.ExitCode), Exited: true, Status: "exit status " + strconv.Itoa(res.ExitCode)}
}

// keepaliveOf is the keepalive interval a client asks
// (Keepalive-Ping-Interval, seconds; 50 by default, as envd).
func keepaliveOf(h http.Header) time.Duration {
	if n, err := strconv.Atoi(h.Get("Keepalive-Ping-Interval")); err == nil && n > 0 {
		return time.Duration(min(n, 3600)) * time.Second
	}
	return 50 * time.Second
}

// relay sends a listener's events to a client until the end event or
// the client goes, with keepalives at the interval the client asks
// (keepaliveOf).
func relay(ctx context.Context, h http.Header, p *process, ch chan *pb.ProcessEvent, send func(*pb.ProcessEvent) error) error {
	defer p.unsubscribe(ch)
	tick := time.NewTicker(keepaliveOf(h))
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return connect.NewError(connect.CodeResourceExhausted, errors.New("this stream fell too far behind the process's output and was dropped"))
			}
			if ev.GetEnd() != nil && p.gone.Load() {
				// The SDKs read a cut stream of a sandbox that is no
				// longer running as "killed or at its end of life".
				panic(http.ErrAbortHandler)
			}
			if err := send(ev); err != nil {
				return err
			}
			if ev.GetEnd() != nil {
				return nil
			}
		case <-tick.C:
			if err := send(&pb.ProcessEvent{Event: &pb.ProcessEvent_Keepalive{Keepalive: &pb.ProcessEvent_KeepAlive{}}}); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (ps *processService) table(ctx context.Context) (*processes, error) {
	id := sandboxFrom(ctx)
	if _, err := ps.s.sandboxByID(id); err != nil {
		return nil, connect.NewError(connect.CodeNotFound, err)
	}
	return ps.s.processesOf(id), nil
}

// process is the request's sandbox's process that sel names.
func (ps *processService) process(ctx context.Context, sel *pb.ProcessSelector) (*process, error) {
	t, err := ps.table(ctx)
	if err != nil {
		return nil, err
	}
	return t.find(sel)
}

func (ps *processService) Connect(ctx context.Context, req *connect.Request[pb.ConnectRequest], stream *connect.ServerStream[pb.ConnectResponse]) error {
	p, err := ps.process(ctx, req.Msg.GetProcess())
	if err != nil {
		return err
	}
	ch := p.subscribe()
	if err := stream.Send(&pb.ConnectResponse{Event: &pb.ProcessEvent{Event: &pb.ProcessEvent_Start{Start: &pb.ProcessEvent_StartEvent{Pid: p.pid}}}}); err != nil {
		p.unsubscribe(ch)
		return err
	}
	return relay(ctx, req.Header(), p, ch, func(ev *pb.ProcessEvent) error { return stream.Send(&pb.ConnectResponse{Event: ev}) })
}

func (ps *processService) List(ctx context.Context, req *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error) {
	t, err := ps.table(ctx)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	out := &pb.ListResponse{}
	for _, p := range t.running {
		info := &pb.ProcessInfo{Config: p.config, Pid: p.pid}
		if p.tag != "" {
			info.Tag = &p.tag
		}
		out.Processes = append(out.Processes, info)
	}
	t.mu.Unlock()
	sort.Slice(out.Processes, func(i, j int) bool { return out.Processes[i].Pid < out.Processes[j].Pid })
	return connect.NewResponse(out), nil
}

func (ps *processService) Update(ctx context.Context, req *connect.Request[pb.UpdateRequest]) (*connect.Response[pb.UpdateResponse], error) {
	p, err := ps.process(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if size := req.Msg.GetPty().GetSize(); size != nil {
		if !p.pty || p.resize == nil {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process %d has no terminal to resize", p.pid))
		}
		select {
		case p.resize <- proto.Winsize{Rows: clampSize(size.GetRows(), defaultRows), Cols: clampSize(size.GetCols(), defaultCols)}:
		case <-p.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return connect.NewResponse(&pb.UpdateResponse{}), nil
}

func (p *process) write(ctx context.Context, in *pb.ProcessInput) error {
	data := in.GetStdin()
	if in.GetPty() != nil {
		data = in.GetPty()
	}
	if len(data) > maxInput {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("input of %d bytes: at most %d at once", len(data), maxInput))
	}
	if p.in == nil {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process %d was started without stdin (start it with stdin: true)", p.pid))
	}
	select {
	case p.in.ch <- data:
		return nil
	case <-p.in.closed:
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process %d's stdin is closed", p.pid))
	case <-p.done:
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("process %d has ended", p.pid))
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (ps *processService) SendInput(ctx context.Context, req *connect.Request[pb.SendInputRequest]) (*connect.Response[pb.SendInputResponse], error) {
	p, err := ps.process(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.write(ctx, req.Msg.GetInput()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.SendInputResponse{}), nil
}

func (ps *processService) StreamInput(ctx context.Context, stream *connect.ClientStream[pb.StreamInputRequest]) (*connect.Response[pb.StreamInputResponse], error) {
	t, err := ps.table(ctx)
	if err != nil {
		return nil, err
	}
	var p *process
	for stream.Receive() {
		msg := stream.Msg()
		switch {
		case msg.GetStart() != nil:
			if p, err = t.find(msg.GetStart().GetProcess()); err != nil {
				return nil, err
			}
		case msg.GetData() != nil:
			if p == nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("a start event names the process first"))
			}
			if err := p.write(ctx, msg.GetData().GetInput()); err != nil {
				return nil, err
			}
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.StreamInputResponse{}), nil
}

// SendSignal sends SIGTERM or SIGKILL to the process's group in the
// guest (agent's signal; its exec is kept, so dropping the call would
// not end it). An agent that cannot signal has the call dropped.
func (ps *processService) SendSignal(ctx context.Context, req *connect.Request[pb.SendSignalRequest]) (*connect.Response[pb.SendSignalResponse], error) {
	p, err := ps.process(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	switch req.Msg.GetSignal() {
	case pb.Signal_SIGNAL_SIGTERM:
		// Sent to its process group in the guest, which may trap it and
		// go on, as with envd; an agent without signals ends it instead.
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := p.agent().Signal(sctx, p.handle, int(syscall.SIGTERM))
		cancel()
		if err == nil {
			return connect.NewResponse(&pb.SendSignalResponse{}), nil
		}
		ps.s.o.Logger.Debug("e2b: SIGTERM by the agent failed; killing", "pid", p.pid, "err", err)
	case pb.Signal_SIGNAL_SIGKILL:
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("signal %v: SIGTERM or SIGKILL", req.Msg.GetSignal()))
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = p.agent().Signal(sctx, p.handle, int(syscall.SIGKILL))
	cancel()
	if err != nil {
		ps.s.o.Logger.Debug("e2b: SIGKILL by the agent failed; dropping the exec", "pid", p.pid, "err", err)
		p.cancel()
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return connect.NewResponse(&pb.SendSignalResponse{}), nil
}

func (ps *processService) CloseStdin(ctx context.Context, req *connect.Request[pb.CloseStdinRequest]) (*connect.Response[pb.CloseStdinResponse], error) {
	p, err := ps.process(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if p.in == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("process %d was started without stdin", p.pid))
	}
	p.in.close()
	return connect.NewResponse(&pb.CloseStdinResponse{}), nil
}
