package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/rpc"
)

type testDaemon struct {
	layout paths.Layout
	client *client.Client
	ops    *opstate.Registry[string]
	stop   context.CancelFunc
	done   chan error
}

// startDaemon runs a real daemon on a temporary home and waits for its
// socket to answer.
func startDaemon(t *testing.T) *testDaemon {
	t.Helper()
	// t.TempDir paths can exceed a socket path's 107 bytes.
	home, err := os.MkdirTemp("", "bgd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	td := &testDaemon{
		layout: paths.Home(home),
		ops:    opstate.NewRegistry[string](time.Hour, time.Now),
		done:   make(chan error, 1),
	}
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	td.stop = cancel
	go func() {
		td.done <- Run(ctx, Options{
			Layout:   td.layout,
			Config:   config.Defaults(config.Host{CPUs: 2, MemoryBytes: 4 << 30}),
			Build:    api.BuildInfo{Version: "9.9.9-test"},
			Ready:    func() { close(ready) },
			extraOps: []opSource{td.ops},
		})
	}()
	select {
	case <-ready:
	case err := <-td.done:
		t.Fatalf("daemon exited before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon not ready after 30s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-td.done:
		case <-time.After(30 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	td.client = client.New(td.layout.Socket(), "test")
	return td
}

func TestDaemonBasics(t *testing.T) {
	td := startDaemon(t)
	ctx := context.Background()

	if err := td.client.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	v, err := td.client.Version(ctx)
	if err != nil || v.Daemon.Version != "9.9.9-test" {
		t.Fatalf("version = %+v, %v", v, err)
	}
	info, err := td.client.DaemonInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode != "home" || info.Paths.Socket != td.layout.Socket() || info.SchemaVersion < 1 || info.InstanceID == "" || info.PID != os.Getpid() {
		t.Fatalf("info = %+v", info)
	}
	cfg, err := td.client.ConfigShow(ctx)
	if err != nil || len(cfg.Values) != len(config.Keys()) {
		t.Fatalf("config.show = %+v, %v", cfg, err)
	}

	// Modes: socket 0600, state directories 0700.
	for path, want := range map[string]os.FileMode{
		td.layout.Socket():   0o600,
		td.layout.StateDir:   0o700,
		td.layout.RuntimeDir: 0o700,
		td.layout.LogDir:     0o700,
		td.layout.CacheDir:   0o700,
		td.layout.Home:       0o700,
		td.layout.Database(): 0o600,
		td.layout.LogFile():  0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	// A call made for an MCP server is logged with that caller and the uid.
	if _, err := td.client.WithCaller("mcp:agent-1").VMs(ctx); err != nil {
		t.Fatal(err)
	}
	logData, _ := os.ReadFile(td.layout.LogFile())
	if !strings.Contains(string(logData), "bangerd started") {
		t.Errorf("log file lacks the start line:\n%s", logData)
	}
	if want := fmt.Sprintf("method=vm.list id=1 uid=%d pid=%d caller=mcp:agent-1", os.Getuid(), os.Getpid()); !strings.Contains(string(logData), want) {
		t.Errorf("log file lacks %q:\n%s", want, logData)
	}
}

func TestDaemonErrorCodes(t *testing.T) {
	td := startDaemon(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		method   string
		params   any
		protocol int
		code     api.Code
		mentions []string
	}{
		{name: "unknown method", method: "vm.explode", code: api.CodeUnknownMethod, mentions: []string{`"vm.explode"`, "ping"}},
		{name: "version mismatch", method: "ping", protocol: api.ProtocolVersion + 1, code: api.CodeVersionMismatch,
			mentions: []string{"9.9.9-test", "banger test", "protocol 2", "protocol 1"}},
		{name: "params to a no-param method", method: "version", params: map[string]int{"x": 1}, code: api.CodeInvalidRequest},
		{name: "unknown param field", method: "operations.get", params: map[string]string{"name": "x"}, code: api.CodeInvalidRequest, mentions: []string{"name"}},
		{name: "wrong param type", method: "operations.get", params: []int{1}, code: api.CodeInvalidRequest},
		{name: "missing id", method: "operations.get", params: api.OperationIDParams{}, code: api.CodeInvalidArgument},
		{name: "no such operation", method: "operations.get", params: api.OperationIDParams{ID: "nope"}, code: api.CodeNotFound, mentions: []string{"nope", "ops list"}},
		{name: "cancel missing", method: "operations.cancel", params: api.OperationIDParams{ID: "nope"}, code: api.CodeNotFound},
		{name: "wait missing", method: "operations.wait", params: api.OperationIDParams{ID: "nope"}, code: api.CodeNotFound},
		// The stats service's methods reach the VM service (wiring).
		{name: "stats of a missing VM", method: "vm.stats", params: api.VMRefParams{Name: "nope"}, code: api.CodeNotFound, mentions: []string{"nope"}},
		{name: "health of a missing VM", method: "vm.health", params: api.VMRefParams{Name: "nope"}, code: api.CodeNotFound},
		{name: "ports of a missing VM", method: "vm.ports", params: api.VMPortsParams{Name: "nope"}, code: api.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := rpc.Dial(ctx, td.layout.Socket(), "test")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if tc.protocol != 0 {
				conn.SetProtocolVersion(tc.protocol)
			}
			err = conn.Call(ctx, tc.method, tc.params, nil, nil)
			var wire *api.Error
			if !errors.As(err, &wire) || wire.Code != tc.code {
				t.Fatalf("%s = %v, want code %s", tc.method, err, tc.code)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(wire.Message, m) {
					t.Errorf("message %q does not mention %q", wire.Message, m)
				}
			}
		})
	}
}

func TestDaemonSurvivesGarbage(t *testing.T) {
	td := startDaemon(t)
	for _, garbage := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0, 1, 2, 3, 0xff, '\n'},
		[]byte(strings.Repeat("{", 10000) + "\n"),
		[]byte(`{"v":1,"id":1,"method":"ping","params":` + "\n"),
	} {
		c, err := net.Dial("unix", td.layout.Socket())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(garbage)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.Contains(line, string(api.CodeInvalidRequest)) {
			t.Errorf("answer to %q = %q, %v", garbage, line, err)
		}
		c.Close()
	}
	// Half a frame and a hang-up.
	c, err := net.Dial("unix", td.layout.Socket())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, `{"v":1,"id":1,"meth`)
	c.Close()
	if err := td.client.Ping(context.Background()); err != nil {
		t.Fatalf("ping after garbage: %v", err)
	}
}

func TestOperations(t *testing.T) {
	td := startDaemon(t)
	ctx := context.Background()

	list, err := td.client.Operations(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("empty list = %v, %v", list, err)
	}

	release := make(chan struct{})
	op := td.ops.Start(context.Background(), api.OpKindImagePull, "debian:bookworm", func(ctx context.Context, op *opstate.Op[string]) (string, error) {
		op.SetPhase("downloading")
		for i := int64(1); i <= 3; i++ {
			op.SetProgress(i, 3, "bytes")
		}
		select {
		case <-release:
			return "sha256:abc", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	slow := td.ops.Start(context.Background(), api.OpKindVMCreate, "web", func(ctx context.Context, op *opstate.Op[string]) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	})

	list, err = td.client.Operations(ctx)
	if err != nil || len(list) != 2 || list[0].ID != op.ID() || list[0].Kind != api.OpKindImagePull || list[0].State != api.OpStateRunning {
		t.Fatalf("list = %+v, %v", list, err)
	}

	// wait streams updates and returns the final summary.
	var updates int
	var mu sync.Mutex
	waited := make(chan api.OperationSummary, 1)
	go func() {
		s, err := td.client.WaitOperation(ctx, op.ID(), func(api.OperationSummary) { mu.Lock(); updates++; mu.Unlock() })
		if err != nil {
			t.Errorf("wait: %v", err)
		}
		waited <- s
	}()
	// The first update proves the stream is attached before we release.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := updates
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no update streamed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	select {
	case s := <-waited:
		if s.State != api.OpStateSucceeded || !s.Done || s.FinishedAt == nil {
			t.Fatalf("waited = %+v", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("wait did not return")
	}

	// Cancel a running operation, then cancelling again is not_running.
	s, err := td.client.CancelOperation(ctx, slow.ID())
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	<-slow.Done()
	s, err = td.client.Operation(ctx, slow.ID())
	if err != nil || s.State != api.OpStateCanceled || s.Error == nil || s.Error.Code != api.CodeCanceled {
		t.Fatalf("canceled op = %+v, %v", s, err)
	}
	if _, err := td.client.CancelOperation(ctx, slow.ID()); !errors.Is(err, api.ErrNotRunning) {
		t.Fatalf("second cancel = %v, want not_running", err)
	}
}

func TestSecondDaemonRefused(t *testing.T) {
	td := startDaemon(t)
	err := Run(context.Background(), Options{Layout: td.layout, Config: config.Defaults(config.Host{CPUs: 1, MemoryBytes: 1 << 30})})
	if !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "banger daemon stop") {
		t.Fatalf("second daemon = %v", err)
	}
	// The first one is untouched, socket included.
	if err := td.client.Ping(context.Background()); err != nil {
		t.Fatalf("first daemon after refusal: %v", err)
	}
}

func TestShutdownOverAPI(t *testing.T) {
	td := startDaemon(t)
	if _, err := td.client.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-td.done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
		td.done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("daemon still running after shutdown")
	}
	if _, err := os.Stat(td.layout.Socket()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if err := td.client.Ping(context.Background()); !errors.Is(err, client.ErrDaemonNotRunning) {
		t.Errorf("ping after shutdown = %v", err)
	}
}

func TestRefusesForeignDirectory(t *testing.T) {
	home, err := os.MkdirTemp("", "bgd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(home)
	l := paths.Home(home)
	// A symlink where the runtime dir should be must not be followed.
	if err := os.Symlink("/tmp", filepath.Join(home, "run")); err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), Options{Layout: l, Config: config.Defaults(config.Host{CPUs: 1, MemoryBytes: 1 << 30})})
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Run with a symlinked runtime dir = %v", err)
	}
}

// TestEvents: an operation that fails is an event over the wire, with
// its target and error; a canceled one is not; past and live come in one
// stream.
func TestEvents(t *testing.T) {
	td := startDaemon(t)
	ctx := context.Background()
	start := time.Now()
	failed := td.ops.Start(context.Background(), api.OpKindImagePull, "evil:latest", func(context.Context, *opstate.Op[string]) (string, error) {
		return "", errors.New("manifest unknown")
	})
	<-failed.Done()
	canceled := td.ops.Start(context.Background(), api.OpKindVMCreate, "web", func(ctx context.Context, _ *opstate.Op[string]) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	})
	_ = canceled.Cancel()
	<-canceled.Done()

	fctx, stop := context.WithCancel(ctx)
	defer stop()
	got := make(chan api.Event, 10)
	go func() {
		_, _ = td.client.Events(fctx, api.EventsParams{Since: start, Follow: true}, func(e api.Event) error { got <- e; return nil })
	}()
	next := func() api.Event {
		select {
		case e := <-got:
			return e
		case <-time.After(30 * time.Second):
			t.Fatal("no event")
			return api.Event{}
		}
	}
	if e := next(); e.Type != api.EventOperationFailed || e.Image != "evil:latest" || e.Reason != "manifest unknown" ||
		e.Detail != api.OpKindImagePull+" "+failed.ID() {
		t.Fatalf("past event %+v", e)
	}
	live := td.ops.Start(context.Background(), api.OpKindVMCreate, "db", func(context.Context, *opstate.Op[string]) (string, error) {
		return "", errors.New("no space left on device")
	})
	if e := next(); e.Type != api.EventOperationFailed || e.VM != "db" || e.Detail != api.OpKindVMCreate+" "+live.ID() {
		t.Fatalf("live event %+v", e)
	}
	if _, err := td.client.Events(ctx, api.EventsParams{Since: start, Types: []string{"vm.exploded"}}, func(api.Event) error { return nil }); !errors.Is(err, api.ErrInvalidArgument) {
		t.Fatalf("an unknown type = %v", err)
	}
}
