package mcp

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/api"
)

// fakeDaemon stands in for bangerd to test the server's own rules
// (scope, limits, confirmations, caps); test/smoke drives the real one.
type fakeDaemon struct {
	mu               sync.Mutex
	vms              map[string]api.VM
	execs            []api.VMExecParams
	output           []api.VMExecEvent
	exit             int
	block            bool // exec waits for its context to end
	created          []api.VMCreateParams
	allowed          []string // the last SetVM's allow-list
	forks            []api.VMForkParams
	egress           []api.EgressEvent
	files            map[string][]byte // path: content, of every sandbox
	writes           []api.VMFileWriteParams
	fsCalls          []api.VMFSParams
	hostDir          string // the workspace's host tree
	prepared, pushed []string
	applied          []api.WorkspaceApplyParams
}

func newFake(vms ...api.VM) *fakeDaemon {
	f := &fakeDaemon{vms: map[string]api.VM{}}
	for _, v := range vms {
		f.vms[v.Name] = v
	}
	return f
}

func (f *fakeDaemon) CreateVM(_ context.Context, p api.VMCreateParams) (api.OperationSummary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, p)
	name := p.Name
	if name == "" {
		name = fmt.Sprintf("gen-%d", len(f.created))
	}
	mem := p.MemoryMiB
	if mem == 0 {
		mem = 1024
	}
	f.vms[name] = api.VM{Name: name, State: api.VMRunning, Image: "debian", MemoryMiB: mem, VCPU: 2, Egress: api.EgressNAT, Creator: p.Creator}
	return api.OperationSummary{ID: "op-" + name, Result: name, State: api.OpStateRunning}, nil
}

func (f *fakeDaemon) WaitOperation(_ context.Context, id string, onUpdate func(api.OperationSummary)) (api.OperationSummary, error) {
	if onUpdate != nil {
		onUpdate(api.OperationSummary{ID: id, Phase: "booting"})
	}
	return api.OperationSummary{ID: id, Result: strings.TrimPrefix(id, "op-"), State: api.OpStateSucceeded, Done: true}, nil
}

func (f *fakeDaemon) VMs(context.Context) ([]api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []api.VM
	for _, v := range f.vms {
		all = append(all, v)
	}
	slices.SortFunc(all, func(a, b api.VM) int { return strings.Compare(a.Name, b.Name) })
	return all, nil
}

func (f *fakeDaemon) VM(_ context.Context, name string) (api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vms[name]
	if !ok {
		return api.VM{}, fmt.Errorf("vm %q: %w", name, api.ErrNotFound)
	}
	return v, nil
}

func (f *fakeDaemon) DeleteVM(_ context.Context, p api.VMDeleteParams) (api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vms[p.Name]
	if !ok {
		return api.VM{}, api.ErrNotFound
	}
	delete(f.vms, p.Name)
	return v, nil
}

func (f *fakeDaemon) ExecVM(ctx context.Context, p api.VMExecParams, onOutput func(api.VMExecEvent) error) (api.VMExecResult, error) {
	f.mu.Lock()
	f.execs = append(f.execs, p)
	f.mu.Unlock()
	for _, e := range f.output {
		if err := onOutput(e); err != nil {
			return api.VMExecResult{}, err
		}
	}
	if f.block {
		<-ctx.Done()
		return api.VMExecResult{}, ctx.Err()
	}
	return api.VMExecResult{ExitCode: f.exit}, nil
}

func (f *fakeDaemon) VMPorts(_ context.Context, p api.VMPortsParams) (api.VMPortsResult, error) {
	port := api.VMPort{Proto: "tcp", Port: 8000, Scheme: "http", Process: "python3", URL: "http://10.0.0.5:8000/"}
	if p.Forward {
		port.URL, port.Forward = "http://127.0.0.1:40123/", "127.0.0.1:40123"
	}
	return api.VMPortsResult{Name: p.Name, Ports: []api.VMPort{port}}, nil
}

func (f *fakeDaemon) VMEgress(_ context.Context, _ api.VMEgressParams, onEvent func(api.EgressEvent) error) error {
	for _, e := range f.egress {
		if err := onEvent(e); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeDaemon) VMEgressSuggest(_ context.Context, name string) (api.VMEgressSuggestResult, error) {
	return api.VMEgressSuggestResult{Name: name, Allow: []string{"pypi.org:443"}}, nil
}

func (f *fakeDaemon) SetVM(_ context.Context, p api.VMSetParams) (api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allowed = p.Allow
	v := f.vms[p.Name]
	v.Allow, v.Egress = p.Allow, api.EgressAllowList
	f.vms[p.Name] = v
	return v, nil
}

func (f *fakeDaemon) CreateSnapshot(_ context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
	return api.Snapshot{VM: p.Name, Tag: cmp.Or(p.Tag, "t1"), Created: time.Unix(0, 0), StateBytes: 1 << 20}, nil
}

func (f *fakeDaemon) ListSnapshots(_ context.Context, name string) (api.SnapshotListResult, error) {
	return api.SnapshotListResult{Snapshots: []api.Snapshot{{VM: name, Tag: "t1"}}}, nil
}

func (f *fakeDaemon) RestoreSnapshot(_ context.Context, p api.VMSnapshotParams) (api.VM, error) {
	return f.VM(context.Background(), p.Name)
}

func (f *fakeDaemon) ForkVM(_ context.Context, p api.VMForkParams) (api.VMForkResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forks = append(f.forks, p)
	src := f.vms[p.Name]
	res := api.VMForkResult{VMs: []api.VM{}}
	if p.Checkpoint != "" {
		c := src
		c.Name = p.Prefix
		f.vms[c.Name] = c
		res.VMs = append(res.VMs, c)
		return res, nil
	}
	for i := 1; i <= max(p.Count, 1); i++ {
		name := fmt.Sprintf("%s-%d", p.Prefix, i)
		if i == 2 {
			res.Failed = append(res.Failed, api.VMForkFailure{Name: name, Error: "restoring: out of memory"})
			continue
		}
		c := src
		c.Name = name
		f.vms[name] = c
		res.VMs = append(res.VMs, c)
	}
	return res, nil
}

func (f *fakeDaemon) VMLogs(_ context.Context, p api.VMLogsParams, onChunk func(string) error) (api.VMLogsResult, error) {
	if p.Tail != consoleTail || p.Follow {
		return api.VMLogsResult{}, fmt.Errorf("logs asked with %+v", p)
	}
	return api.VMLogsResult{Console: "banger-agent: boot: ready\n\xff"}, nil
}

func (f *fakeDaemon) ReadFile(_ context.Context, p api.VMFileReadParams) (api.VMFileReadResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, ok := f.files[p.Path]
	if !ok {
		return api.VMFileReadResult{}, fmt.Errorf("open %s: no such file or directory", p.Path)
	}
	end := min(int64(len(data)), p.Offset+p.Limit)
	return api.VMFileReadResult{Data: data[p.Offset:end], Size: int64(len(data)), EOF: end == int64(len(data))}, nil
}

func (f *fakeDaemon) WriteFile(_ context.Context, p api.VMFileWriteParams) (api.VMFileWriteResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files == nil {
		f.files = map[string][]byte{}
	}
	f.files[p.Path] = p.Data
	f.writes = append(f.writes, p)
	return api.VMFileWriteResult{Path: p.Path, Size: int64(len(p.Data))}, nil
}

func (f *fakeDaemon) FS(_ context.Context, p api.VMFSParams) (api.VMFSResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fsCalls = append(f.fsCalls, p)
	switch p.Op {
	case api.FSSearch:
		return api.VMFSResult{Matches: []api.FileMatch{{Path: "/workspace/a.go", Line: 3, Text: "// TODO"}}, Truncated: true}, nil
	case api.FSStat, api.FSList, api.FSGlob:
		return api.VMFSResult{Entries: []api.FileEntry{{Path: p.Path, Type: "file", Mode: 0o644, Size: 7}}}, nil
	}
	return api.VMFSResult{}, nil
}

func (f *fakeDaemon) PrepareWorkspace(_ context.Context, p api.WorkspacePrepareParams, onProgress func(api.WorkspaceProgress)) (api.WorkspacePrepareResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prepared = append(f.prepared, p.Path)
	f.hostDir = p.Path
	v := f.vms[p.Name]
	v.Workspace = "/workspace"
	f.vms[p.Name] = v
	onProgress(api.WorkspaceProgress{Phase: "sending", Done: 1, Total: 1, Unit: "files"})
	return api.WorkspacePrepareResult{Name: p.Name, Dir: "/workspace", Files: 3}, nil
}

func (f *fakeDaemon) PushWorkspace(_ context.Context, p api.WorkspaceRefParams, _ func(api.WorkspaceProgress)) (api.WorkspaceSyncResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pushed = append(f.pushed, p.Dir)
	return api.WorkspaceSyncResult{Name: p.Name, Dir: "/workspace", Changes: api.WorkspaceChanges{Modified: []string{"main.go"}}}, nil
}

func (f *fakeDaemon) WorkspaceStatus(_ context.Context, p api.WorkspaceRefParams) (api.WorkspaceStatus, error) {
	return api.WorkspaceStatus{Name: p.Name, HostDir: f.hostDir, GuestDir: "/workspace"}, nil
}

const fakePatch = "diff --git a/main.go b/main.go\n--- a/main.go\n+++ b/main.go\n@@ -1 +1,2 @@\n-a\n+b\n+c\ndiff --git a/logo.png b/logo.png\nGIT binary patch\nliteral 3\nxx\n"

func (f *fakeDaemon) ExportWorkspace(_ context.Context, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error) {
	return api.WorkspaceExportResult{Base: "0123456789abcdef0123", Patch: fakePatch, Files: 2, SHA256: "feed"}, nil
}

func (f *fakeDaemon) ApplyWorkspace(_ context.Context, p api.WorkspaceApplyParams) (api.WorkspaceApplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, p)
	return api.WorkspaceApplyResult{Name: p.Name, Dir: f.hostDir, Files: []string{"main.go", "logo.png"}}, nil
}

func (f *fakeDaemon) ConfigShow(context.Context) (api.ConfigShowResult, error) {
	return api.ConfigShowResult{Values: []api.ConfigValue{{Key: "vm_defaults.memory_mib", Value: "1024"}}}, nil
}

// connect runs a server over d and returns a client session to it.
func connect(t *testing.T, d Daemon, o Options) *sdk.ClientSession {
	t.Helper()
	if o.Name == "" {
		o.Name = "agent"
	}
	s, err := New(d, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, ct := sdk.NewInMemoryTransports()
	go func() { _ = s.MCP().Run(ctx, st) }()
	c := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "0"}, nil)
	cs, err := c.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// call calls a tool and decodes its structured result into out; it
// returns the error text when the tool failed.
func call(t *testing.T, cs *sdk.ClientSession, tool string, args any, out any) string {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	if res.IsError {
		return res.Content[0].(*sdk.TextContent).Text
	}
	if out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: decoding %s: %v", tool, b, err)
		}
	}
	return ""
}

func TestToolsAndAnnotations(t *testing.T) {
	cs := connect(t, newFake(), Options{})
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*sdk.Tool{}
	for _, tool := range res.Tools {
		got[tool.Name] = tool
	}
	for name, want := range map[string]struct{ readOnly, destructive bool }{
		"sandbox_create": {false, false},
		"sandbox_list":   {true, false},
		"sandbox_info":   {true, false},
		"sandbox_delete": {false, true},
		"sandbox_exec":   {false, true},
	} {
		tool, ok := got[name]
		if !ok {
			t.Errorf("no tool %s", name)
			continue
		}
		a := tool.Annotations
		destructive := a.DestructiveHint == nil || *a.DestructiveHint
		if a.ReadOnlyHint != want.readOnly || (!a.ReadOnlyHint && destructive != want.destructive) {
			t.Errorf("%s annotations = %+v, want read-only %v, destructive %v", name, a, want.readOnly, want.destructive)
		}
		if tool.InputSchema == nil || tool.OutputSchema == nil {
			t.Errorf("%s lacks a schema", name)
		}
	}
}

// TestScope: a server sees and touches only the VMs it created, and
// says why it refuses another's; --all reaches every one.
func TestScope(t *testing.T) {
	d := newFake(api.VM{Name: "mine", Creator: "mcp:agent", State: api.VMRunning},
		api.VM{Name: "persons", State: api.VMRunning},
		api.VM{Name: "others", Creator: "mcp:other", State: api.VMRunning})
	cs := connect(t, d, Options{})
	var l ListOut
	call(t, cs, "sandbox_list", map[string]any{}, &l)
	if len(l.Sandboxes) != 1 || l.Sandboxes[0].Name != "mine" {
		t.Fatalf("list = %+v, want only mine", l)
	}
	for _, tc := range []struct {
		tool string
		args map[string]any
	}{
		{"sandbox_info", map[string]any{"name": "persons"}},
		{"sandbox_exec", map[string]any{"name": "others", "command": "true"}},
		{"sandbox_delete", map[string]any{"name": "persons", "confirm": true}},
	} {
		if msg := call(t, cs, tc.tool, tc.args, nil); !strings.Contains(msg, "permission denied") || !strings.Contains(msg, "touches only its own") {
			t.Errorf("%s on a foreign VM = %q", tc.tool, msg)
		}
	}
	if len(d.execs) != 0 || len(d.vms) != 3 {
		t.Fatalf("a refused call reached the daemon: execs %v, vms %d", d.execs, len(d.vms))
	}
	all := connect(t, d, Options{Name: "admin", All: true})
	call(t, all, "sandbox_list", map[string]any{}, &l)
	if len(l.Sandboxes) != 3 {
		t.Fatalf("--all list = %+v", l)
	}
}

func TestCreateAndLimits(t *testing.T) {
	d := newFake()
	cs := connect(t, d, Options{MaxSandboxes: 2, MaxMemoryMiB: 1536})
	var sb Sandbox
	if msg := call(t, cs, "sandbox_create", map[string]any{"name": "a", "memory": "512M", "network": "allow-list", "allow": []string{"pypi.org"}}, &sb); msg != "" {
		t.Fatal(msg)
	}
	if sb.Name != "a" || sb.Creator != "mcp:agent" {
		t.Fatalf("created %+v", sb)
	}
	if p := d.created[0]; p.Creator != "mcp:agent" || p.MemoryMiB != 512 || !slices.Equal(p.Allow, []string{"pypi.org"}) {
		t.Fatalf("create params = %+v", p)
	}
	// The default memory (1024 MiB) would pass 1536 in all.
	if msg := call(t, cs, "sandbox_create", map[string]any{"name": "b", "memory": "1100M"}, nil); !strings.Contains(msg, "limit exceeded") || !strings.Contains(msg, "--max-memory") {
		t.Fatalf("over the memory limit = %q", msg)
	}
	call(t, cs, "sandbox_create", map[string]any{"name": "b", "memory": "256M", "network": "none"}, nil)
	if msg := call(t, cs, "sandbox_create", map[string]any{"name": "c", "memory": "64M"}, nil); !strings.Contains(msg, "--max-sandboxes") {
		t.Fatalf("a third sandbox = %q", msg)
	}
	for _, tc := range []struct {
		args map[string]any
		says string
	}{
		{map[string]any{"network": "wide"}, "use none, nat or allow-list"},
		{map[string]any{"network": "allow-list"}, "needs allow"},
		{map[string]any{"network": "nat", "allow": []string{"x.org"}}, "allow goes with network allow-list"},
		{map[string]any{"memory": "lots"}, "give a size"},
		{map[string]any{"cpus": -1}, "positive count"},
	} {
		if msg := call(t, cs, "sandbox_create", tc.args, nil); !strings.Contains(msg, tc.says) {
			t.Errorf("create %v = %q, want it to say %q", tc.args, msg, tc.says)
		}
	}
	if len(d.created) != 2 {
		t.Fatalf("refused creates reached the daemon: %d creates", len(d.created))
	}
}

func TestDeleteNeedsConfirm(t *testing.T) {
	d := newFake(api.VM{Name: "mine", Creator: "mcp:agent"})
	cs := connect(t, d, Options{})
	if msg := call(t, cs, "sandbox_delete", map[string]any{"name": "mine"}, nil); !strings.Contains(msg, "confirm: true") {
		t.Fatalf("delete without confirm = %q", msg)
	}
	if len(d.vms) != 1 {
		t.Fatal("deleted without confirm")
	}
	if msg := call(t, cs, "sandbox_delete", map[string]any{"name": "mine", "confirm": true}, nil); msg != "" || len(d.vms) != 0 {
		t.Fatalf("delete with confirm = %q, %d left", msg, len(d.vms))
	}
}

func TestExec(t *testing.T) {
	d := newFake(api.VM{Name: "mine", Creator: "mcp:agent"})
	d.output = []api.VMExecEvent{{Stream: "stdout", Data: []byte("hello ")}, {Stream: "stdout", Data: []byte("world\n")}, {Stream: "stderr", Data: []byte("\xff\xfewarn")}}
	d.exit = 3
	cs := connect(t, d, Options{})
	var out ExecOut
	if msg := call(t, cs, "sandbox_exec", map[string]any{"name": "mine", "command": "echo hi", "dir": "/workspace", "env": map[string]string{"B": "2", "A": "1"}, "output_cap": 8, "stdin": "input"}, &out); msg != "" {
		t.Fatal(msg)
	}
	if out.ExitCode != 3 || out.Stdout != "hello wo" || out.StdoutBytes != 12 || !out.Truncated || out.StderrBytes != 6 || out.Stderr != "\uFFFDwarn" {
		t.Fatalf("exec = %+v", out)
	}
	p := d.execs[0]
	if !slices.Equal(p.Args, []string{"/bin/sh", "-c", "echo hi"}) || p.Dir != "/workspace" || !slices.Equal(p.Env, []string{"A=1", "B=2"}) || string(p.Stdin) != "input" {
		t.Fatalf("exec params = %+v", p)
	}
	for _, tc := range []struct {
		args map[string]any
		says string
	}{
		{map[string]any{"name": "mine"}, "nothing to run"},
		{map[string]any{"name": "mine", "command": "x", "argv": []string{"y"}}, "not both"},
		{map[string]any{"name": "mine", "argv": []string{""}}, "argv[0] is empty"},
		{map[string]any{"name": "mine", "command": "x", "dir": "src"}, "is relative"},
		{map[string]any{"name": "mine", "command": "x", "env": map[string]string{"A=B": "c"}}, "has no '='"},
		{map[string]any{"name": "mine", "command": "x", "timeout_seconds": 7200}, "timeout_seconds 7200"},
		{map[string]any{"name": "mine", "command": "x", "output_cap": 2 << 20}, "output_cap"},
	} {
		if msg := call(t, cs, "sandbox_exec", tc.args, nil); !strings.Contains(msg, tc.says) {
			t.Errorf("exec %v = %q, want it to say %q", tc.args, msg, tc.says)
		}
	}
	if len(d.execs) != 1 {
		t.Fatalf("refused execs reached the daemon: %d", len(d.execs))
	}
	// A command past its timeout is ended, and the result says so.
	d.block = true
	start := time.Now()
	call(t, cs, "sandbox_exec", map[string]any{"name": "mine", "argv": []string{"sleep", "100"}, "timeout_seconds": 1}, &out)
	if !out.TimedOut || out.ExitCode != -1 || time.Since(start) > 30*time.Second {
		t.Fatalf("timed-out exec = %+v", out)
	}
}

func TestServerName(t *testing.T) {
	for _, n := range []string{"", "Agent", "-x", "a b", "a\nb", strings.Repeat("a", 64)} {
		if _, err := New(newFake(), Options{Name: n}); err == nil {
			t.Errorf("name %q accepted", n)
		}
	}
}

// TestCreateProgress: a client that asks for progress hears the create's
// phases.
func TestCreateProgress(t *testing.T) {
	s, err := New(newFake(), Options{Name: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, ct := sdk.NewInMemoryTransports()
	go func() { _ = s.MCP().Run(ctx, st) }()
	heard := make(chan string, 8)
	c := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "0"}, &sdk.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
			heard <- req.Params.Message
		},
	})
	cs, err := c.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	p := &sdk.CallToolParams{Name: "sandbox_create", Arguments: map[string]any{"name": "p"}}
	p.SetProgressToken("create-1")
	if res, err := cs.CallTool(ctx, p); err != nil || res.IsError {
		t.Fatalf("create = %+v, %v", res, err)
	}
	select {
	case msg := <-heard:
		if msg != "booting" {
			t.Fatalf("progress = %q, want the operation's phase", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no progress notification")
	}
}

// TestStateTools: ports, egress, checkpoints and fork reach the daemon
// for this server's sandboxes only.
func TestStateTools(t *testing.T) {
	d := newFake(api.VM{Name: "mine", Creator: "mcp:agent", MemoryMiB: 512}, api.VM{Name: "persons"})
	d.egress = []api.EgressEvent{{Kind: api.EgressConnect, Verdict: api.EgressDenied, Dest: "151.101.0.223", Port: 443, Name: "pypi.org"}}
	cs := connect(t, d, Options{MaxSandboxes: 3})
	var ports PortsOut
	call(t, cs, "ports_list", map[string]any{"name": "mine"}, &ports)
	if len(ports.Ports) != 1 || ports.Ports[0].Label != "http" {
		t.Fatalf("ports = %+v", ports)
	}
	var fw ForwardOut
	if msg := call(t, cs, "port_forward", map[string]any{"name": "mine", "port": 8000}, &fw); msg != "" || fw.URL != "http://127.0.0.1:40123/" {
		t.Fatalf("forward = %+v, %q", fw, msg)
	}
	if msg := call(t, cs, "port_forward", map[string]any{"name": "mine", "port": 9}, nil); !strings.Contains(msg, "nothing listens") {
		t.Fatalf("forward of a closed port = %q", msg)
	}
	var eg EgressOut
	call(t, cs, "egress_log", map[string]any{"name": "mine"}, &eg)
	if len(eg.Events) != 1 || eg.Events[0].Name != "pypi.org" {
		t.Fatalf("egress = %+v", eg)
	}
	var sug SuggestOut
	call(t, cs, "egress_suggest", map[string]any{"name": "mine"}, &sug)
	if len(sug.Allow) != 1 {
		t.Fatalf("suggest = %+v", sug)
	}
	for _, tool := range []string{"ports_list", "egress_log", "egress_suggest", "checkpoint_list"} {
		if msg := call(t, cs, tool, map[string]any{"name": "persons"}, nil); !strings.Contains(msg, "touches only its own") {
			t.Errorf("%s on a person's VM = %q", tool, msg)
		}
	}
	var cp Checkpoint
	call(t, cs, "checkpoint_create", map[string]any{"name": "mine", "tag": "green"}, &cp)
	if cp.Tag != "green" {
		t.Fatalf("checkpoint = %+v", cp)
	}
	if msg := call(t, cs, "checkpoint_restore", map[string]any{"name": "mine"}, nil); !strings.Contains(msg, "tag is required") {
		t.Fatalf("restore without a tag = %q", msg)
	}
	call(t, cs, "checkpoint_restore", map[string]any{"name": "mine", "tag": "green"}, nil)

	// A fork reports each copy, a failed one with its own error; it asks
	// the daemon for a partial fork, within the server's limits.
	var fo ForkOut
	call(t, cs, "sandbox_fork", map[string]any{"name": "mine", "count": 2, "prefix": "try"}, &fo)
	if len(fo.Copies) != 2 || fo.Copies[0].Name != "try-1" || fo.Copies[1].Error != "restoring: out of memory" || !d.forks[0].Partial {
		t.Fatalf("fork = %+v (asked %+v)", fo, d.forks)
	}
	if msg := call(t, cs, "sandbox_fork", map[string]any{"name": "mine", "count": 2}, nil); !strings.Contains(msg, "--max-sandboxes") {
		t.Fatalf("a fork past the limit = %q", msg)
	}
}

// TestEgressAllowNeedsAPerson: without elicitation the change is refused
// (unless the server was told so ahead); with it, the person's answer
// decides.
func TestEgressAllowNeedsAPerson(t *testing.T) {
	d := newFake(api.VM{Name: "mine", Creator: "mcp:agent"})
	cs := connect(t, d, Options{})
	if msg := call(t, cs, "egress_allow", map[string]any{"name": "mine", "allow": []string{"pypi.org"}}, nil); !strings.Contains(msg, "needs a person's yes") || d.allowed != nil {
		t.Fatalf("egress_allow without a person = %q, allowed %v", msg, d.allowed)
	}
	ok := connect(t, d, Options{AllowEgressChanges: true})
	if msg := call(t, ok, "egress_allow", map[string]any{"name": "mine", "allow": []string{"pypi.org"}}, nil); msg != "" || len(d.allowed) != 1 {
		t.Fatalf("egress_allow with --allow-egress-changes = %q, allowed %v", msg, d.allowed)
	}
	for _, tc := range []struct {
		action  string
		approve bool
		changed bool
	}{{"accept", true, true}, {"accept", false, false}, {"decline", false, false}} {
		d.allowed = nil
		s, err := New(d, Options{Name: "agent"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		st, ct := sdk.NewInMemoryTransports()
		go func() { _ = s.MCP().Run(ctx, st) }()
		asked := ""
		c := sdk.NewClient(&sdk.Implementation{Name: "person", Version: "0"}, &sdk.ClientOptions{
			ElicitationHandler: func(_ context.Context, req *sdk.ElicitRequest) (*sdk.ElicitResult, error) {
				asked = req.Params.Message
				return &sdk.ElicitResult{Action: tc.action, Content: map[string]any{"approve": tc.approve}}, nil
			},
		})
		pcs, err := c.Connect(ctx, ct, nil)
		if err != nil {
			t.Fatal(err)
		}
		msg := call(t, pcs, "egress_allow", map[string]any{"name": "mine", "allow": []string{"github.com:443"}}, nil)
		if (d.allowed != nil) != tc.changed || !strings.Contains(asked, "github.com:443") || (!tc.changed && !strings.Contains(msg, "said no")) {
			t.Errorf("%s/%v: %q, asked %q, allowed %v", tc.action, tc.approve, msg, asked, d.allowed)
		}
		pcs.Close()
		cancel()
	}
}

// TestAnswerBoundToItsQuestion: a yes to one allow-list does not pass for
// another.
func TestAnswerBoundToItsQuestion(t *testing.T) {
	q := "Let sandbox mine reach only: pypi.org?"
	ask, err := askPerson(&sdk.CallToolRequest{Params: &sdk.CallToolParamsRaw{}}, q)
	if err != nil || ask == nil || ask.RequestState == "" {
		t.Fatalf("first call = %+v, %v", ask, err)
	}
	yes := sdk.InputResponseMap{"approve": &sdk.ElicitResult{Action: "accept", Content: map[string]any{"approve": true}}}
	if _, err := askPerson(&sdk.CallToolRequest{Params: &sdk.CallToolParamsRaw{InputResponses: yes, RequestState: ask.RequestState}}, q); err != nil {
		t.Fatalf("a yes to the question: %v", err)
	}
	other := "Let sandbox mine reach only: 0.0.0.0/0?"
	if _, err := askPerson(&sdk.CallToolRequest{Params: &sdk.CallToolParamsRaw{InputResponses: yes, RequestState: ask.RequestState}}, other); err == nil || !strings.Contains(err.Error(), "not to this question") {
		t.Fatalf("a yes to another question = %v", err)
	}
}

// TestResources: a sandbox's console and egress log read as resources,
// for this server's sandboxes only.
func TestResources(t *testing.T) {
	d := newFake(api.VM{Name: "mine", Creator: "mcp:agent"}, api.VM{Name: "persons"})
	d.egress = []api.EgressEvent{{Kind: api.EgressDNS, Verdict: api.EgressDenied, Name: "evil.example"}}
	cs := connect(t, d, Options{})
	ctx := context.Background()
	tpl, err := cs.ListResourceTemplates(ctx, nil)
	if err != nil || len(tpl.ResourceTemplates) != 2 {
		t.Fatalf("templates = %+v, %v", tpl, err)
	}
	r, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "banger://sandbox/mine/console"})
	if err != nil || r.Contents[0].Text != "banger-agent: boot: ready\n\uFFFD" {
		t.Fatalf("console = %+v, %v", r, err)
	}
	r, err = cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "banger://sandbox/mine/egress"})
	if err != nil || !strings.Contains(r.Contents[0].Text, `"name":"evil.example"`) {
		t.Fatalf("egress = %+v, %v", r, err)
	}
	if _, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "banger://sandbox/persons/console"}); err == nil || !strings.Contains(err.Error(), "touches only its own") {
		t.Fatalf("a person's console = %v", err)
	}
	if _, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "banger://sandbox/mine/../etc"}); err == nil {
		t.Fatal("a made-up resource was read")
	}
}

// TestFileTools: reads (text and bytes), writes (text, base64, a mode),
// listings and searches, and a recursive remove only with confirm; a
// person's VM is out of reach.
func TestFileTools(t *testing.T) {
	d := newFake(api.VM{Name: "mine", Creator: "mcp:agent"}, api.VM{Name: "persons"})
	cs := connect(t, d, Options{})
	var done Done
	if msg := call(t, cs, "file_write", map[string]any{"name": "mine", "path": "/workspace/run.sh", "content": "#!/bin/sh\necho hi\n", "mode": "0755", "parents": true}, &done); msg != "" {
		t.Fatal(msg)
	}
	if w := d.writes[0]; w.Mode != 0o755 || !w.Parents || done.Size != 18 {
		t.Fatalf("write = %+v, %+v", w, done)
	}
	call(t, cs, "file_write", map[string]any{"name": "mine", "path": "/bin.dat", "content": "AP8=", "encoding": "base64"}, nil)
	var rd ReadOut
	call(t, cs, "file_read", map[string]any{"name": "mine", "path": "/workspace/run.sh", "offset": 10, "limit": 4}, &rd)
	if rd.Content != "echo" || rd.Encoding != "utf-8" || rd.Size != 18 || rd.EOF {
		t.Fatalf("read = %+v", rd)
	}
	call(t, cs, "file_read", map[string]any{"name": "mine", "path": "/bin.dat"}, &rd)
	if rd.Encoding != "base64" || rd.Content != "AP8=" || !rd.EOF {
		t.Fatalf("binary read = %+v", rd)
	}
	var sr SearchOut
	call(t, cs, "file_search", map[string]any{"name": "mine", "pattern": "TODO", "include": "*.go"}, &sr)
	if len(sr.Matches) != 1 || !sr.Truncated {
		t.Fatalf("search = %+v", sr)
	}
	last := d.fsCalls[len(d.fsCalls)-1]
	if last.Path != "/workspace" || last.Max != defaultSearchMax || last.Include != "*.go" {
		t.Fatalf("search asked %+v", last)
	}
	var ls EntriesOut
	call(t, cs, "file_list", map[string]any{"name": "mine", "path": "/workspace", "depth": 2}, &ls)
	if len(ls.Entries) != 1 || d.fsCalls[len(d.fsCalls)-1].Max != defaultListMax {
		t.Fatalf("list = %+v", ls)
	}
	for _, tc := range []struct {
		tool string
		args map[string]any
		says string
	}{
		{"file_remove", map[string]any{"name": "mine", "path": "/workspace", "recursive": true}, "confirm: true"},
		{"file_write", map[string]any{"name": "mine", "path": "/x", "content": "x", "mode": "rwx"}, "octal"},
		{"file_write", map[string]any{"name": "mine", "path": "/x", "content": "%%%", "encoding": "base64"}, "not base64"},
		{"file_read", map[string]any{"name": "mine", "path": "/x", "limit": 2 << 20}, "at a time"},
		{"file_read", map[string]any{"name": "persons", "path": "/etc/shadow"}, "touches only its own"},
		{"file_write", map[string]any{"name": "persons", "path": "/root/.ssh/authorized_keys", "content": "x"}, "touches only its own"},
		{"file_search", map[string]any{"name": "persons", "pattern": "x"}, "touches only its own"},
	} {
		if msg := call(t, cs, tc.tool, tc.args, nil); !strings.Contains(msg, tc.says) {
			t.Errorf("%s %v = %q, want %q", tc.tool, tc.args, msg, tc.says)
		}
	}
	if len(d.writes) != 2 {
		t.Fatalf("refused writes reached the daemon: %d", len(d.writes))
	}
	call(t, cs, "file_remove", map[string]any{"name": "mine", "path": "/workspace", "recursive": true, "confirm": true}, nil)
	if last := d.fsCalls[len(d.fsCalls)-1]; last.Op != api.FSRemove || !last.Recursive {
		t.Fatalf("remove asked %+v", last)
	}
}

// TestBackground: a background command's output comes in pieces, each
// once; it is killed on request, and its end is said, then forgotten.
func TestBackground(t *testing.T) {
	d := newFake(api.VM{Name: "mine", Creator: "mcp:agent"})
	d.output = []api.VMExecEvent{{Stream: "stdout", Data: []byte("listening on :8000\n")}}
	d.block = true
	cs := connect(t, d, Options{})
	var ex ExecOut
	if msg := call(t, cs, "sandbox_exec", map[string]any{"name": "mine", "command": "python3 -m http.server", "background": true}, &ex); msg != "" || ex.Handle == "" {
		t.Fatalf("background exec = %+v, %q", ex, msg)
	}
	var st StatusOut
	for end := time.Now().Add(10 * time.Second); st.Stdout == "" && time.Now().Before(end); {
		call(t, cs, "process_status", map[string]any{"handle": ex.Handle}, &st)
	}
	if !st.Running || st.Stdout != "listening on :8000\n" || st.ExitCode != nil {
		t.Fatalf("status = %+v", st)
	}
	call(t, cs, "process_status", map[string]any{"handle": ex.Handle}, &st)
	if st.Stdout != "" {
		t.Fatalf("output given twice: %+v", st)
	}
	call(t, cs, "process_kill", map[string]any{"handle": ex.Handle}, &st)
	if st.Running || st.Error != "killed by process_kill" {
		t.Fatalf("after kill = %+v", st)
	}
	if msg := call(t, cs, "process_status", map[string]any{"handle": ex.Handle}, nil); !strings.Contains(msg, "no background command") {
		t.Fatalf("a read end is not forgotten: %q", msg)
	}
	// One that ends by itself gives its exit code.
	d.block, d.exit, d.output = false, 7, nil
	call(t, cs, "sandbox_exec", map[string]any{"name": "mine", "argv": []string{"false"}, "background": true}, &ex)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		call(t, cs, "process_status", map[string]any{"handle": ex.Handle}, &st)
		if !st.Running {
			break
		}
	}
	if st.ExitCode == nil || *st.ExitCode != 7 {
		t.Fatalf("ended = %+v", st)
	}
}

// TestWorkspaceTools: a project comes in only from under a root (a
// symlink out of one refused), goes again as a push, and comes back only
// as the diff shown, by its hash.
func TestWorkspaceTools(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	project := filepath.Join(root, "proj")
	if err := os.Mkdir(project, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	d := newFake(api.VM{Name: "mine", Creator: "mcp:agent"})
	if msg := call(t, connect(t, d, Options{}), "workspace_sync_in", map[string]any{"name": "mine", "path": project}, nil); !strings.Contains(msg, "without --root") {
		t.Fatalf("sync without roots = %q", msg)
	}
	cs := connect(t, d, Options{Roots: []string{root}})
	for _, p := range []string{outside, filepath.Join(root, "escape"), "proj"} {
		if msg := call(t, cs, "workspace_sync_in", map[string]any{"name": "mine", "path": p}, nil); msg == "" {
			t.Errorf("sync of %s was taken", p)
		}
	}
	var so SyncOut
	call(t, cs, "workspace_sync_in", map[string]any{"name": "mine", "path": project}, &so)
	call(t, cs, "workspace_sync_in", map[string]any{"name": "mine", "path": project}, &so)
	if len(d.prepared) != 1 || len(d.pushed) != 1 || len(so.Changed) != 1 {
		t.Fatalf("prepared %v, pushed %v, %+v", d.prepared, d.pushed, so)
	}
	if msg := call(t, cs, "workspace_accept", map[string]any{"name": "mine", "sha256": "feed"}, nil); !strings.Contains(msg, "call workspace_diff") {
		t.Fatalf("accept before a diff = %q", msg)
	}
	var df DiffOut
	call(t, cs, "workspace_diff", map[string]any{"name": "mine"}, &df)
	if df.SHA256 != "feed" || len(df.Files) != 2 || df.Files[0].Added != 2 || df.Files[0].Deleted != 1 || !df.Files[1].Binary {
		t.Fatalf("diff = %+v", df)
	}
	if msg := call(t, cs, "workspace_accept", map[string]any{"name": "mine", "sha256": "beef"}, nil); !strings.Contains(msg, "no diff") || len(d.applied) != 0 {
		t.Fatalf("accept of another hash = %q", msg)
	}
	var ac AcceptOut
	call(t, cs, "workspace_accept", map[string]any{"name": "mine", "sha256": "feed"}, &ac)
	if len(d.applied) != 1 || d.applied[0].Patch != fakePatch || d.applied[0].SHA256 != "feed" {
		t.Fatalf("applied %+v", d.applied)
	}
}

// TestCreateFromCheckpoint: a sandbox from another's checkpoint is a fork
// of that checkpoint, named as asked; its shape comes from it.
func TestCreateFromCheckpoint(t *testing.T) {
	d := newFake(api.VM{Name: "mine", Creator: "mcp:agent", MemoryMiB: 512}, api.VM{Name: "persons"})
	cs := connect(t, d, Options{})
	var sb Sandbox
	if msg := call(t, cs, "sandbox_create", map[string]any{"name": "again", "from_sandbox": "mine", "from_checkpoint": "green"}, &sb); msg != "" || sb.Name != "again" {
		t.Fatalf("create from a checkpoint = %+v, %q", sb, msg)
	}
	if f := d.forks[0]; f.Name != "mine" || f.Checkpoint != "green" || f.Prefix != "again" || f.Count != 1 {
		t.Fatalf("asked %+v", f)
	}
	for _, tc := range []struct {
		args map[string]any
		says string
	}{
		{map[string]any{"from_checkpoint": "green"}, "go together"},
		{map[string]any{"from_sandbox": "mine", "from_checkpoint": "green", "memory": "1G"}, "leave them out"},
		{map[string]any{"from_sandbox": "persons", "from_checkpoint": "green"}, "touches only its own"},
	} {
		if msg := call(t, cs, "sandbox_create", tc.args, nil); !strings.Contains(msg, tc.says) {
			t.Errorf("create %v = %q, want %q", tc.args, msg, tc.says)
		}
	}
}
