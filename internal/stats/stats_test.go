package stats

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/peer"
	"github.com/bangerdev/banger/internal/roottest"
)

// fakeAgent stands in for a guest's agent: unit tests of the service's
// arithmetic and bookkeeping need no VM. Dial reaches real servers on the
// test's loopback.
type fakeAgent struct {
	mu      sync.Mutex
	samples []proto.StatsResult
	socks   []proto.Socket
	dialTo  map[string]string // guest address → real address
	block   bool              // Ping and Stats wait for the context
	dials   int
}

func (f *fakeAgent) Ping(ctx context.Context) (proto.PingResult, error) {
	if f.block {
		<-ctx.Done()
		return proto.PingResult{}, ctx.Err()
	}
	return proto.PingResult{Uptime: 42, Version: "test"}, nil
}

func (f *fakeAgent) Stats(ctx context.Context) (proto.StatsResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return proto.StatsResult{}, ctx.Err()
	}
	s := f.samples[0]
	if len(f.samples) > 1 {
		f.samples = f.samples[1:]
	}
	return s, nil
}

func (f *fakeAgent) Ports(context.Context) ([]proto.Socket, error) { return f.socks, nil }

func (f *fakeAgent) Dial(ctx context.Context, addr string) (net.Conn, error) {
	f.mu.Lock()
	f.dials++
	f.mu.Unlock()
	real, ok := f.dialTo[addr]
	if !ok {
		return nil, fmt.Errorf("dial %s: connection refused", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", real)
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeVMs is the VM service as the tests give it: each method a
// function, Suspended none and Wake as Agent unless set.
type fakeVMs struct {
	running, suspended    func(context.Context) ([]Target, error)
	target                func(context.Context, string) (Target, error)
	agent, wake           func(context.Context, string) (Agent, error)
	autoStop, autoSuspend func(context.Context, string, string) (bool, error)
}

func (f *fakeVMs) Running(ctx context.Context) ([]Target, error) { return f.running(ctx) }
func (f *fakeVMs) Target(ctx context.Context, name string) (Target, error) {
	return f.target(ctx, name)
}
func (f *fakeVMs) Suspended(ctx context.Context) ([]Target, error) {
	if f.suspended == nil {
		return nil, nil
	}
	return f.suspended(ctx)
}
func (f *fakeVMs) Agent(ctx context.Context, name string) (Agent, error) { return f.agent(ctx, name) }
func (f *fakeVMs) Wake(ctx context.Context, name string) (Agent, error) {
	if f.wake == nil {
		return f.agent(ctx, name)
	}
	return f.wake(ctx, name)
}
func (f *fakeVMs) AutoStop(ctx context.Context, name, reason string) (bool, error) {
	return f.autoStop(ctx, name, reason)
}
func (f *fakeVMs) AutoSuspend(ctx context.Context, name, reason string) (bool, error) {
	return f.autoSuspend(ctx, name, reason)
}

func newTest(targets []Target, agents map[string]*fakeAgent, clk *clock) (*Service, *[]string) {
	var stopped []string
	var mu sync.Mutex
	s := New(Config{VMs: &fakeVMs{
		running: func(context.Context) ([]Target, error) { return targets, nil },
		target: func(_ context.Context, name string) (Target, error) {
			for _, t := range targets {
				if t.Name == name {
					return t, nil
				}
			}
			return Target{}, fmt.Errorf("vm %s: %w", name, api.ErrNotFound)
		},
		agent: func(_ context.Context, name string) (Agent, error) { return agents[name], nil },
		autoStop: func(_ context.Context, name, reason string) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			stopped = append(stopped, name+": "+reason)
			return true, nil
		},
	},
		History:  3,
		ProcRoot: "/nonexistent",
		Now:      clk.Now,
		Self:     uint32(os.Getuid()), // the test's connections are the daemon user's
	})
	return s, &stopped
}

func TestCollect(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	a := &fakeAgent{samples: []proto.StatsResult{
		{CPUBusy: 100, CPUTotal: 1000, NumCPU: 2, MemTotal: 1000, MemAvailable: 400, NetRx: 0, NetTx: 0, Uptime: 10},
		{CPUBusy: 600, CPUTotal: 2000, NumCPU: 2, MemTotal: 1000, MemAvailable: 300, NetRx: 5000, NetTx: 500, Uptime: 15},
		{CPUBusy: 600, CPUTotal: 3000, NumCPU: 2, MemTotal: 1000, MemAvailable: 300, NetRx: 5000, NetTx: 500, Uptime: 20},
		{CPUBusy: 700, CPUTotal: 4000, NumCPU: 2, MemTotal: 1000, MemAvailable: 300, NetRx: 5000, NetTx: 500, Uptime: 25},
	}}
	s, _ := newTest([]Target{{Name: "web", ID: "id1", VCPU: 2}}, map[string]*fakeAgent{"web": a}, clk)
	ctx := context.Background()
	st, err := s.Stats(ctx, api.VMRefParams{Name: "web"}) // no poll yet: sampled on demand
	if err != nil || st.CPUPercent != 20 || st.MemUsed != 600 {
		t.Fatalf("first sample = %+v, %v; want 20%% (since boot, of one CPU × 2) and 600 used", st, err)
	}
	clk.Add(5 * time.Second)
	s.Poll(ctx)
	st, _ = s.Stats(ctx, api.VMRefParams{Name: "web"})
	if st.CPUPercent != 100 || st.NetRxRate != 1000 || st.NetTxRate != 100 || st.MemUsed != 700 {
		t.Fatalf("second sample = %+v; want 100%% CPU, 1000 B/s in, 100 B/s out", st)
	}
	clk.Add(5 * time.Second)
	s.Poll(ctx)
	clk.Add(5 * time.Second)
	s.Poll(ctx)
	st, _ = s.Stats(ctx, api.VMRefParams{Name: "web"})
	got := []float64{}
	for _, h := range st.History {
		got = append(got, h.CPUPercent)
	}
	if !slices.Equal(got, []float64{100, 0, 20}) {
		t.Fatalf("history = %v; want the last 3: 100, 0, 20", got)
	}
	if _, err := s.Stats(ctx, api.VMRefParams{Name: "nope"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("stats of a missing VM: %v", err)
	}
}

func TestHealthUnresponsive(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	s, _ := newTest([]Target{{Name: "ok", ID: "1"}, {Name: "hung", ID: "2"}},
		map[string]*fakeAgent{"ok": {}, "hung": {block: true}}, clk)
	h, err := s.Health(context.Background(), api.VMRefParams{Name: "ok"})
	if err != nil || h.AgentVersion != "test" || h.Uptime != 42 {
		t.Fatalf("Health(ok) = %+v, %v", h, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Health(ctx, api.VMRefParams{Name: "hung"}); !errors.Is(err, api.ErrUnresponsive) {
		t.Fatalf("Health(hung) = %v; want unresponsive", err)
	}
}

func TestSweep(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	start := clk.Now()
	targets := []Target{
		{Name: "idle", ID: "1", AutoStop: time.Minute, StartedAt: start},
		{Name: "busy", ID: "2", AutoStop: time.Minute, StartedAt: start},
		{Name: "touched", ID: "3", AutoStop: time.Minute, StartedAt: start},
		{Name: "never", ID: "4", StartedAt: start},
	}
	agents := map[string]*fakeAgent{}
	for _, tg := range targets {
		agents[tg.Name] = &fakeAgent{samples: []proto.StatsResult{{CPUTotal: 1}}}
	}
	agents["busy"].samples[0].Sessions = 1 // an ssh connection to the agent's server
	s, stopped := newTest(targets, agents, clk)
	ctx := context.Background()
	s.Poll(ctx)
	if len(*stopped) != 0 {
		t.Fatalf("stopped at once: %v", *stopped)
	}
	end := s.Session("idle") // an exec through the daemon
	clk.Add(50 * time.Second)
	s.Touch("touched") // an API call naming it
	clk.Add(50 * time.Second)
	s.Poll(ctx)
	if len(*stopped) != 0 {
		t.Fatalf("stopped during a session or soon after a call: %v", *stopped)
	}
	end()
	clk.Add(70 * time.Second)
	s.Poll(ctx)
	want := []string{
		"idle: stopped automatically: idle for 1m10s (auto-stop after 1m0s)",
		"touched: stopped automatically: idle for 2m0s (auto-stop after 1m0s)",
	}
	slices.Sort(*stopped) // VMs are polled each on its own
	if !slices.Equal(*stopped, want) {
		t.Fatalf("stopped = %q; want %q (busy has an ssh connection, never has no auto-stop)", *stopped, want)
	}
}

func TestDedupe(t *testing.T) {
	got := Dedupe([]proto.Socket{
		{Proto: "tcp", Addr: "0.0.0.0", Port: 80, PID: 7, Process: "httpd"},
		{Proto: "tcp6", Addr: "::", Port: 80, PID: 7, Process: "httpd"},
		{Proto: "tcp", Addr: "127.0.0.1", Port: 5432},
		{Proto: "tcp6", Addr: "::1", Port: 5432, PID: 9, Process: "postgres"},
		{Proto: "udp", Addr: "0.0.0.0", Port: 53},
		{Proto: "tcp", Addr: "10.0.0.2", Port: 22},
	})
	want := []api.VMPort{
		{Proto: "tcp", Port: 22, Addresses: []string{"10.0.0.2"}},
		{Proto: "tcp", Port: 80, Addresses: []string{"*"}, Process: "httpd", PID: 7},
		{Proto: "tcp", Port: 5432, Addresses: []string{"127.0.0.1", "::1"}, Process: "postgres", PID: 9},
		{Proto: "udp", Port: 53, Addresses: []string{"*"}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Dedupe =\n%+v\nwant\n%+v", got, want)
	}
}

// servers starts real HTTP, HTTPS, echo and silent TCP servers.
func servers(t *testing.T) map[string]string {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hi") }))
	t.Cleanup(plain.Close)
	secure := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hi") }))
	secure.Config.ErrorLog = log.New(io.Discard, "", 0) // the probes hang up mid-handshake
	secure.StartTLS()
	t.Cleanup(secure.Close)
	listen := func(serve func(net.Conn)) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go serve(c)
			}
		}()
		return ln.Addr().String()
	}
	echo := listen(func(c net.Conn) { defer c.Close(); _, _ = io.Copy(c, c) })
	silent := listen(func(c net.Conn) { defer c.Close(); _, _ = io.Copy(io.Discard, c) })
	return map[string]string{
		"http": plain.Listener.Addr().String(), "https": secure.Listener.Addr().String(),
		"echo": echo, "silent": silent,
	}
}

func TestProbe(t *testing.T) {
	srv := servers(t)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	srv["closed"] = closed.Addr().String()
	closed.Close()
	for name, want := range map[string]string{"http": "http", "https": "https", "echo": "tcp", "silent": "tcp", "closed": "tcp"} {
		got := Probe(context.Background(), func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", srv[name])
		})
		if got != want {
			t.Errorf("Probe(%s) = %s; want %s", name, got, want)
		}
	}
}

// TestPortsForward: ports are labelled through the agent's dial, and
// --forward opens a loopback listener that reaches the guest port.
func TestPortsForward(t *testing.T) {
	srv := servers(t)
	a := &fakeAgent{
		socks: []proto.Socket{
			{Proto: "tcp", Addr: "0.0.0.0", Port: 18080, Process: "httpd"},
			{Proto: "tcp6", Addr: "::", Port: 18443},
			{Proto: "tcp", Addr: "127.0.0.1", Port: 17000},
			{Proto: "udp", Addr: "0.0.0.0", Port: 15353},
		},
		dialTo: map[string]string{"127.0.0.1:18080": srv["http"], "127.0.0.1:18443": srv["https"], "127.0.0.1:17000": srv["echo"]},
	}
	clk := &clock{now: time.Unix(1000, 0)}
	s, _ := newTest([]Target{{Name: "web", ID: "1", Network: api.NetworkUser}}, map[string]*fakeAgent{"web": a}, clk)
	ctx := context.Background()
	r, err := s.Ports(ctx, api.VMPortsParams{Name: "web", Forward: false})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]string{}
	for _, p := range r.Ports {
		got[p.Port] = p.Scheme + " " + p.URL
	}
	want := map[int]string{17000: "tcp ", 18080: "http ", 18443: "https ", 15353: "udp "}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ports = %v; want %v (no URL: a user-mode VM without forwards)", got, want)
	}
	r, err = s.Ports(ctx, api.VMPortsParams{Name: "web", Forward: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.closeForwards(ctx, func(string) bool { return true }, false)
	for _, p := range r.Ports {
		if p.Port == 18080 {
			if p.Forward == "" || p.URL != "http://"+p.Forward {
				t.Fatalf("forwarded http port = %+v", p)
			}
			resp, err := http.Get(p.URL)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "hi" {
				t.Fatalf("through the forward: %q", body)
			}
		}
		if p.Port == 17000 {
			c, err := net.Dial("tcp", p.Forward)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(c, "ping")
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if line != "ping\n" {
				t.Fatalf("echo through the forward: %q", line)
			}
		}
	}
	// A second --forward keeps the same listeners.
	again, _ := s.Ports(ctx, api.VMPortsParams{Name: "web", Forward: true})
	for i := range again.Ports {
		if again.Ports[i].Forward != r.Ports[i].Forward {
			t.Fatalf("forward moved: %s → %s", r.Ports[i].Forward, again.Ports[i].Forward)
		}
	}
}

// memForwards keeps forwards in memory: the store's stand-in here, the
// daemon wires the real one (store.Tx forwards).
type memForwards struct {
	mu sync.Mutex
	fs map[string]Forward
}

func (m *memForwards) Save(_ context.Context, f Forward) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fs[fmt.Sprint(f.VMID, f.GuestPort)] = f
	return nil
}

func (m *memForwards) Drop(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, f := range m.fs {
		if f.VMID == id {
			delete(m.fs, k)
		}
	}
	return nil
}

func (m *memForwards) All(context.Context) ([]Forward, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Forward
	for _, f := range m.fs {
		out = append(out, f)
	}
	return out, nil
}

// TestForwardsSurviveARestart: a second service (a restarted daemon)
// opens the kept forwards again on the same address; a VM that is gone
// loses its.
func TestForwardsSurviveARestart(t *testing.T) {
	srv := servers(t)
	a := &fakeAgent{
		socks:  []proto.Socket{{Proto: "tcp", Addr: "0.0.0.0", Port: 18081}},
		dialTo: map[string]string{"127.0.0.1:18081": srv["http"]},
	}
	kept := &memForwards{fs: map[string]Forward{}}
	clk := &clock{now: time.Unix(1000, 0)}
	targets := []Target{{Name: "web", ID: "1", Network: api.NetworkUser}}
	first, _ := newTest(targets, map[string]*fakeAgent{"web": a}, clk)
	first.cfg.Forwards = kept
	ctx := context.Background()
	r, err := first.Ports(ctx, api.VMPortsParams{Name: "web", Forward: true})
	if err != nil || r.Ports[0].Forward == "" {
		t.Fatalf("Ports --forward = %+v, %v", r, err)
	}
	addr := r.Ports[0].Forward
	first.closeForwards(ctx, func(string) bool { return true }, false) // the daemon stops
	if _, err := http.Get("http://" + addr); err == nil {
		t.Fatal("the forward still answers with no daemon")
	}
	second, _ := newTest(targets, map[string]*fakeAgent{"web": a}, clk)
	second.cfg.Forwards = kept
	second.restoreForwards(ctx)
	defer second.closeForwards(ctx, func(string) bool { return true }, false)
	resp, err := http.Get("http://" + addr)
	if err != nil {
		t.Fatalf("the kept forward after a restart: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hi" {
		t.Fatalf("through the restored forward: %q", body)
	}
	// The VM stops: its forward closes and is no longer kept.
	gone, _ := newTest(nil, map[string]*fakeAgent{}, clk)
	gone.cfg.Forwards = kept
	gone.restoreForwards(ctx)
	if all, _ := kept.All(ctx); len(all) != 0 {
		t.Fatalf("forwards of a stopped VM kept: %+v", all)
	}
}

// TestForwardServesOnlyItsRequester: a forward any local user can reach
// on 127.0.0.1 carries the connections of the uid that asked for it (a
// caller of the daemon's socket) and root's, and closes another real
// user's at once (logged, with the uid), until that user asks for the
// forward too. The users are made by useradd; their connections come
// from their own processes (bash's /dev/tcp), so the kernel's socket
// table names them.
func TestForwardServesOnlyItsRequester(t *testing.T) {
	roottest.Require(t, "it makes two users and connects as each")
	asker, removeA, err := roottest.AddUser("bgfa")
	if err != nil {
		t.Fatal(err)
	}
	defer removeA()
	other, removeB, err := roottest.AddUser("bgfb")
	if err != nil {
		t.Fatal(err)
	}
	defer removeB()
	srv := servers(t)
	a := &fakeAgent{
		socks:  []proto.Socket{{Proto: "tcp", Addr: "0.0.0.0", Port: 17002}},
		dialTo: map[string]string{"127.0.0.1:17002": srv["echo"]},
	}
	s, _ := newTest([]Target{{Name: "web", ID: "1", Network: api.NetworkUser}}, map[string]*fakeAgent{"web": a}, &clock{now: time.Unix(1000, 0)})
	var logs syncBuffer
	s.cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	kept := &memForwards{fs: map[string]Forward{}}
	s.cfg.Forwards = kept
	asks := func(u roottest.User) context.Context {
		return peer.NewContext(context.Background(), peer.Cred{UID: uint32(u.UID), GID: uint32(u.GID)})
	}
	r, err := s.Ports(asks(asker), api.VMPortsParams{Name: "web", Forward: true})
	if err != nil || len(r.Ports) != 1 || r.Ports[0].Forward == "" {
		t.Fatalf("Ports --forward = %+v, %v", r, err)
	}
	defer s.closeForwards(context.Background(), func(string) bool { return true }, false)
	host, port, _ := net.SplitHostPort(r.Ports[0].Forward)
	// echo sends a line through the forward as u (nil: root) and says
	// what came back.
	echo := func(u *roottest.User) string {
		cmd := exec.Command("timeout", "10", "bash", "-c", `exec 3<>/dev/tcp/`+host+`/`+port+` && echo ping >&3 && head -n 1 <&3`)
		if u != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID), Groups: []uint32{}}}
		}
		out, _ := cmd.Output()
		return strings.TrimSpace(string(out))
	}
	if got := echo(&asker); got != "ping" {
		t.Fatalf("the asker through its forward: %q", got)
	}
	if got := echo(nil); got != "ping" {
		t.Fatalf("root through the forward: %q", got)
	}
	if got := echo(&other); got != "" {
		t.Fatalf("another user through the forward: %q", got)
	}
	if !strings.Contains(logs.String(), "a forward refused a connection") || !strings.Contains(logs.String(), fmt.Sprintf("uid=%d", other.UID)) {
		t.Fatalf("the refusal is not logged with the uid:\n%s", logs.String())
	}
	// Kept with its requester: a restarted daemon serves the same.
	if all, _ := kept.All(context.Background()); len(all) != 1 || !slices.Equal(all[0].UIDs, []uint32{uint32(asker.UID)}) {
		t.Fatalf("kept forwards %+v", all)
	}
	// The other user asks for it too: it is theirs as well, at the same
	// address.
	again, err := s.Ports(asks(other), api.VMPortsParams{Name: "web", Forward: true})
	if err != nil || again.Ports[0].Forward != r.Ports[0].Forward {
		t.Fatalf("the other user's --forward = %+v, %v", again, err)
	}
	if got := echo(&other); got != "ping" {
		t.Fatalf("the other user after asking: %q", got)
	}
}

// syncBuffer is a bytes.Buffer for a logger several goroutines write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestStuckVMDelaysNoOther: a VM whose agent never answers does not hold
// up the sampling or the idle sweep of another.
func TestStuckVMDelaysNoOther(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	targets := []Target{
		{Name: "stuck", ID: "1", StartedAt: clk.Now()},
		{Name: "idle", ID: "2", AutoStop: time.Second, StartedAt: clk.Now().Add(-time.Hour)},
	}
	agents := map[string]*fakeAgent{
		"stuck": {block: true},
		"idle":  {samples: []proto.StatsResult{{CPUTotal: 1, Uptime: 1}}},
	}
	s, stopped := newTest(targets, agents, clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Poll(ctx); close(done) }()
	deadline := time.After(agentTimeout / 2)
	for {
		s.mu.Lock()
		_, sampled := s.series["2"]
		s.mu.Unlock()
		if sampled && s.claim("2") { // its poll, sweep included, is over
			s.unclaim("2")
			break
		}
		select {
		case <-deadline:
			t.Fatalf("the other VM waited behind the stuck one (sampled: %v)", sampled)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if len(*stopped) != 1 {
		t.Fatalf("stopped = %v; want the idle VM stopped", *stopped)
	}
	// A second poll while the first still waits on the stuck VM samples
	// the other again and leaves the stuck one alone.
	if !s.claim("1") {
		cancel()
		<-done
		return
	}
	t.Fatal("the stuck VM's poll was not under way")
}

// TestHostilePorts: a guest's socket list is checked before use: bad
// entries left out, names cut and cleaned, thousands of ports neither
// all shown nor all probed, and a guest port under 1024 never becomes a
// privileged port on the host.
func TestHostilePorts(t *testing.T) {
	a := &fakeAgent{socks: []proto.Socket{
		{Proto: "tcp", Addr: "0.0.0.0", Port: -1},
		{Proto: "tcp", Addr: "0.0.0.0", Port: 70000},
		{Proto: "sctp", Addr: "0.0.0.0", Port: 99},
		{Proto: "tcp", Addr: "not an address", Port: 98},
		{Proto: "tcp", Addr: "0.0.0.0", Port: 22, Process: "sshd\x1b]0;owned\x07" + strings.Repeat("x", 1000)},
	}}
	for p := 2000; p < 7000; p++ {
		a.socks = append(a.socks, proto.Socket{Proto: "tcp", Addr: "10.0.0.1", Port: p})
	}
	s, _ := newTest([]Target{{Name: "web", ID: "1", Network: api.NetworkUser}}, map[string]*fakeAgent{"web": a}, &clock{now: time.Unix(1000, 0)})
	ctx := context.Background()
	r, err := s.Ports(ctx, api.VMPortsParams{Name: "web", Forward: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.closeForwards(ctx, func(string) bool { return true }, false)
	if len(r.Ports) != maxPorts || r.Ports[0].Port != 22 {
		t.Fatalf("%d ports, first %+v; want %d, port 22 first", len(r.Ports), r.Ports[0], maxPorts)
	}
	if p := r.Ports[0].Process; len(p) > maxProcess || strings.ContainsAny(p, "\x1b\x07") {
		t.Fatalf("process name %q", p)
	}
	if a.dials > 2*maxProbes {
		t.Fatalf("%d dials into the guest for one ports call", a.dials)
	}
	if fwd := r.Ports[0].Forward; fwd == "" || strings.HasSuffix(fwd, ":22") {
		t.Fatalf("guest port 22 forwarded at %q; want an unprivileged port", fwd)
	}
}

// TestIdleSuspend: an idle VM whose action is suspend is suspended, not
// stopped; a suspended VM keeps its forwards, and a connection to one
// wakes it (Wake, not Agent) and reaches its port; a VM gone from both
// lists loses them.
func TestIdleSuspend(t *testing.T) {
	srv := servers(t)
	clk := &clock{now: time.Unix(1000, 0)}
	start := clk.Now()
	web := Target{Name: "web", ID: "1", Network: api.NetworkUser, AutoStop: time.Minute, Suspend: true, StartedAt: start}
	plain := Target{Name: "plain", ID: "2", AutoStop: time.Minute, StartedAt: start}
	agents := map[string]*fakeAgent{
		"web":   {samples: []proto.StatsResult{{CPUTotal: 1}}, socks: []proto.Socket{{Proto: "tcp", Addr: "0.0.0.0", Port: 17001}}, dialTo: map[string]string{"127.0.0.1:17001": srv["echo"]}},
		"plain": {samples: []proto.StatsResult{{CPUTotal: 1}}},
	}
	var mu sync.Mutex
	running, suspended := []Target{web, plain}, []Target(nil)
	var acted, woken []string
	s, stopped := newTest(nil, agents, clk)
	vms := s.cfg.VMs.(*fakeVMs)
	s.cfg.Suspends = true
	vms.running = func(context.Context) ([]Target, error) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(running), nil
	}
	vms.target = func(_ context.Context, name string) (Target, error) { return web, nil }
	vms.suspended = func(context.Context) ([]Target, error) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(suspended), nil
	}
	vms.autoSuspend = func(_ context.Context, name, reason string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		acted = append(acted, name+": "+reason)
		running, suspended = []Target{plain}, []Target{web}
		return true, nil
	}
	vms.wake = func(_ context.Context, name string) (Agent, error) {
		mu.Lock()
		defer mu.Unlock()
		woken = append(woken, name)
		return agents[name], nil
	}
	ctx := context.Background()
	r, err := s.Ports(ctx, api.VMPortsParams{Name: "web", Forward: true})
	if err != nil || len(r.Ports) != 1 || r.Ports[0].Forward == "" {
		t.Fatalf("ports = %+v, %v", r, err)
	}
	addr := r.Ports[0].Forward
	s.Poll(ctx)
	clk.Add(2 * time.Minute)
	s.Poll(ctx)
	mu.Lock()
	if len(acted) != 1 || !strings.HasPrefix(acted[0], "web: suspended automatically: idle for 2m0s (auto-stop after 1m0s); exec, ssh or a connection") {
		t.Fatalf("suspended %q", acted)
	}
	mu.Unlock()
	if len(*stopped) != 1 || !strings.HasPrefix((*stopped)[0], "plain: stopped automatically") {
		t.Fatalf("stopped %q", *stopped)
	}
	s.Poll(ctx) // web is suspended now: its forward stays
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("the forward of a suspended VM: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "wake up\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || line != "wake up\n" {
		t.Fatalf("through the forward of a suspended VM: %q, %v", line, err)
	}
	mu.Lock()
	if !slices.Equal(woken, []string{"web"}) {
		t.Fatalf("woken %q", woken)
	}
	running, suspended = nil, nil // deleted
	mu.Unlock()
	s.Poll(ctx)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the forward of a deleted VM is still open")
	}
}
