package e2b

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	fspb "github.com/bangerdev/banger/internal/e2b/envd/filesystempb"
	pb "github.com/bangerdev/banger/internal/e2b/envd/processpb"
)

// fakeVMs stands in for the daemon's VMs: the tests here prove the API's
// own rules (keys, scope, limits, the sandbox plane's checks); the smoke
// scenario e2b-sdk proves it against real VMs and the real SDK.
type fakeVMs struct {
	mu      sync.Mutex
	vms     map[string]api.VMCreateParams
	deleted []string
	guest   *fakeGuest
	// checkpoints are each VM's checkpoint tags; forks "FROM>TO".
	checkpoints map[string]map[string]bool
	forks       []string
	sets        []api.VMSetParams
	states      map[string]string // a VM's when not running
	lifecycle   []string
	// hold, when set, keeps the next Delete from returning until it is
	// closed, after saying on entered that it began.
	hold, entered chan struct{}
	// notRunning, when set, runs (once, then cleared) right after
	// Running said a VM is not running: a resume that lands then.
	notRunning func(name string)
}

func (f *fakeVMs) Create(_ context.Context, p api.VMCreateParams) (api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vms[p.Name] = p
	return api.VM{Name: p.Name}, nil
}
func (f *fakeVMs) Show(_ context.Context, p api.VMRefParams) (api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.vms[p.Name]
	if !ok {
		return api.VM{}, api.ErrNotFound
	}
	return api.VM{Name: p.Name, VCPU: 2, MemoryMiB: max(c.MemoryMiB, 256), Network: cmp.Or(c.Network, "bridge")}, nil
}
func (f *fakeVMs) Set(_ context.Context, p api.VMSetParams) (api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets = append(f.sets, p)
	return api.VM{Name: p.Name}, nil
}
func (f *fakeVMs) Delete(_ context.Context, p api.VMDeleteParams) (api.VM, error) {
	f.mu.Lock()
	hold := f.hold
	f.hold = nil
	f.mu.Unlock()
	if hold != nil {
		f.entered <- struct{}{}
		<-hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.vms, p.Name)
	delete(f.checkpoints, p.Name)
	f.deleted = append(f.deleted, p.Name)
	return api.VM{}, nil
}
func (f *fakeVMs) Suspend(_ context.Context, p api.VMRefParams) (api.VM, error) {
	if g := f.guest; g != nil {
		g.breakLink()
	}
	return f.did("suspend", p.Name)
}
func (f *fakeVMs) Resume(_ context.Context, p api.VMRefParams) (api.VM, error) {
	return f.did("resume", p.Name)
}
func (f *fakeVMs) Stop(_ context.Context, p api.VMStopParams) (api.VM, error) {
	return f.did("stop", p.Name)
}
func (f *fakeVMs) Start(_ context.Context, p api.VMRefParams) (api.VM, error) {
	return f.did("start", p.Name)
}

// did records a lifecycle change ("stop NAME").
func (f *fakeVMs) did(what, name string) (api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lifecycle = append(f.lifecycle, what+" "+name)
	return api.VM{Name: name}, nil
}

// Fork makes copies of a VM, from one of its checkpoints when named
// (each stopped copy holding it); running copies only from one.
func (f *fakeVMs) Fork(_ context.Context, p api.VMForkParams) (api.VMForkResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	src, ok := f.vms[p.Name]
	if !ok {
		return api.VMForkResult{}, api.ErrNotFound
	}
	if p.Checkpoint == "" || !f.checkpoints[p.Name][p.Checkpoint] {
		return api.VMForkResult{}, errors.New("the fake forks only from a checkpoint")
	}
	count := max(p.Count, 1)
	var res api.VMForkResult
	for i := range count {
		name := p.Prefix
		if count > 1 {
			name = fmt.Sprintf("%s-%d", p.Prefix, i+1)
		}
		f.vms[name] = src
		state := api.VMRunning
		if p.Stopped {
			state = api.VMStopped
			f.checkpoints[name] = map[string]bool{p.Checkpoint: true}
		}
		f.states[name] = state
		f.forks = append(f.forks, p.Name+">"+name)
		res.VMs = append(res.VMs, api.VM{Name: name, State: state, MemoryMiB: max(src.MemoryMiB, 256), VCPU: 2})
	}
	return res, nil
}
func (f *fakeVMs) SnapshotCreate(_ context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vms[p.Name]; !ok {
		return api.Snapshot{}, api.ErrNotFound
	}
	if f.checkpoints[p.Name] == nil {
		f.checkpoints[p.Name] = map[string]bool{}
	}
	f.checkpoints[p.Name][p.Tag] = true
	return api.Snapshot{VM: p.Name, Tag: p.Tag}, nil
}
func (f *fakeVMs) List(context.Context) (api.VMListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var l api.VMListResult
	for name, p := range f.vms {
		l.VMs = append(l.VMs, api.VM{Name: name, Creator: p.Creator, State: cmp.Or(f.states[name], api.VMRunning)})
	}
	return l, nil
}
func (f *fakeVMs) SnapshotList(_ context.Context, p api.VMRefParams) (api.SnapshotListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var l api.SnapshotListResult
	for tag := range f.checkpoints[p.Name] {
		l.Snapshots = append(l.Snapshots, api.Snapshot{VM: p.Name, Tag: tag})
	}
	return l, nil
}
func (f *fakeVMs) SnapshotDelete(_ context.Context, p api.VMSnapshotParams) (api.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.checkpoints[p.Name][p.Tag] {
		return api.Snapshot{}, api.ErrNotFound
	}
	delete(f.checkpoints[p.Name], p.Tag)
	return api.Snapshot{VM: p.Name, Tag: p.Tag}, nil
}
func (f *fakeVMs) Warm(context.Context, api.ImageWarmParams) (api.Template, error) {
	return api.Template{}, nil
}
func (f *fakeVMs) Guest(context.Context, string) (Guest, error) { return f.guest, nil }

// Running is the guest unless the test says the VM is suspended.
func (f *fakeVMs) Running(_ context.Context, name string) (Guest, error) {
	f.mu.Lock()
	if f.states[name] == api.VMSuspended {
		hook := f.notRunning
		f.notRunning = nil
		f.mu.Unlock()
		if hook != nil {
			hook(name)
		}
		return nil, api.ErrNotRunning
	}
	f.mu.Unlock()
	return f.guest, nil
}

// fakeGuest answers exec by echoing its arguments and stdin, and fs from
// a map; a hostile one can be swapped in per test.
type fakeGuest struct {
	mu    sync.Mutex
	execs []proto.ExecParams
	files map[string]string
	block chan struct{} // an exec waits on it (or its context)
	watch []proto.WatchEvent
	dirs  map[string]bool
	// makesUser: the image can make E2B's default user; fsOps and
	// writes are what fs and write_file were asked.
	makesUser bool
	fsOps     []proto.FSParams
	writes    []proto.FileParams
	// signals: the agent has the signal method; sent is what it got.
	signals bool
	sent    []proto.SignalParams
	// web answers the guest's ports; dialed is what was asked.
	web    string
	dialed []string
	// link closes when a suspend breaks the agent's link; kills end a
	// blocked exec by its handle (a SIGKILL); attached are the handles
	// attached to again.
	link     chan struct{}
	kills    map[string]chan struct{}
	attached []string
}

// breakLink ends the blocked calls, as a suspend breaks the link.
func (g *fakeGuest) breakLink() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.link != nil {
		close(g.link)
	}
	g.link = make(chan struct{})
}

// wait blocks a kept exec until the test lets it go, its link breaks,
// its caller goes, or a SIGKILL.
func (g *fakeGuest) wait(ctx context.Context, handle string) (proto.ExecResult, error) {
	g.mu.Lock()
	if g.link == nil {
		g.link = make(chan struct{})
	}
	if g.kills == nil {
		g.kills = map[string]chan struct{}{}
	}
	link, kill := g.link, g.kills[handle]
	if kill == nil {
		kill = make(chan struct{})
		g.kills[handle] = kill
	}
	g.mu.Unlock()
	select {
	case <-g.block:
		return proto.ExecResult{ExitCode: 3}, nil
	case <-kill:
		return proto.ExecResult{ExitCode: 137, Signal: "SIGKILL"}, nil
	case <-link:
		return proto.ExecResult{}, errors.New("agent: link closed")
	case <-ctx.Done():
		return proto.ExecResult{}, ctx.Err()
	}
}

func (g *fakeGuest) Attach(ctx context.Context, handle string, stdin io.Reader, stdout, _ io.Writer, _ <-chan proto.Winsize) (proto.ExecResult, error) {
	g.mu.Lock()
	g.attached = append(g.attached, handle)
	g.mu.Unlock()
	fmt.Fprintln(stdout, "attached")
	if g.block == nil {
		return proto.ExecResult{ExitCode: 3}, nil
	}
	return g.wait(ctx, handle)
}

func (g *fakeGuest) Signal(_ context.Context, handle string, sig int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.signals {
		return errors.New(`agent: unknown method "signal"`)
	}
	g.sent = append(g.sent, proto.SignalParams{Handle: handle, Signal: sig})
	if kill := g.kills[handle]; sig == 9 && kill != nil {
		close(kill)
		delete(g.kills, handle)
	}
	return nil
}

func (g *fakeGuest) Exec(ctx context.Context, p proto.ExecParams, stdin io.Reader, stdout, stderr io.Writer) (proto.ExecResult, error) {
	g.mu.Lock()
	g.execs = append(g.execs, p)
	makes := g.makesUser
	g.mu.Unlock()
	if len(p.Args) == 3 && p.Args[2] == makeUser {
		if !makes {
			fmt.Fprint(stdout, strings.Repeat("useradd: not found\n", 1000))
			return proto.ExecResult{ExitCode: 127}, nil
		}
		return proto.ExecResult{}, nil
	}
	fmt.Fprintln(stdout, strings.Join(p.Args, " "))
	fmt.Fprintln(stderr, "err")
	if stdin != nil {
		_, _ = io.Copy(stdout, stdin)
	}
	if g.block != nil {
		return g.wait(ctx, p.Handle)
	}
	return proto.ExecResult{ExitCode: 3}, nil
}
func (g *fakeGuest) ExecTTY(ctx context.Context, p proto.ExecParams, stdin io.Reader, stdout io.Writer, _ <-chan proto.Winsize) (proto.ExecResult, error) {
	fmt.Fprintf(stdout, "tty %dx%d\r\n", p.Cols, p.Rows)
	return proto.ExecResult{}, nil
}
func (g *fakeGuest) FS(_ context.Context, p proto.FSParams) (proto.FSResult, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fsOps = append(g.fsOps, p)
	if p.Op == proto.FSMkdir {
		g.files[p.Path] = ""
		if g.dirs == nil {
			g.dirs = map[string]bool{}
		}
		g.dirs[p.Path] = true
		return proto.FSResult{}, nil
	}
	if _, ok := g.files[p.Path]; !ok {
		return proto.FSResult{}, fmt.Errorf("agent: stat %s: no such file or directory", p.Path)
	}
	typ := "f"
	if g.dirs[p.Path] {
		typ = "d"
	}
	return proto.FSResult{Entries: []proto.FSEntry{{Path: p.Path, Type: typ, Mode: 0o644, Size: int64(len(g.files[p.Path]))}}}, nil
}
func (g *fakeGuest) ReadFileRange(_ context.Context, p proto.FileParams, w io.Writer) (proto.FileResult, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, _ := io.WriteString(w, g.files[p.Path])
	return proto.FileResult{Size: int64(n)}, nil
}
func (g *fakeGuest) WriteFileWith(_ context.Context, p proto.FileParams, r io.Reader) (int64, error) {
	b, err := io.ReadAll(r)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes = append(g.writes, p)
	g.files[p.Path] = string(b)
	return int64(len(b)), err
}

// Dial reaches g.web (a server of the test standing in for the guest's
// port) whatever address is asked, and records it.
func (g *fakeGuest) Dial(ctx context.Context, addr string) (net.Conn, error) {
	g.mu.Lock()
	web := g.web
	g.dialed = append(g.dialed, addr)
	g.mu.Unlock()
	if web == "" {
		return nil, errors.New("no ports")
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", web)
}

// Watch sends the events of g.watch, then waits for the end.
func (g *fakeGuest) Watch(ctx context.Context, p proto.WatchParams, ready func(), emit func(proto.WatchEvent) error) error {
	ready()
	for _, e := range g.watch {
		if err := emit(e); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}
func (g *fakeGuest) Stats(context.Context) (proto.StatsResult, error) {
	return proto.StatsResult{NumCPU: 2, MemTotal: 1 << 30, MemAvailable: 1 << 29, CPUBusy: 1, CPUTotal: 4}, nil
}

type fixture struct {
	s     *Service
	vms   *fakeVMs
	srv   *httptest.Server
	key   string
	other string
	now   time.Time
	mu    sync.Mutex
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{vms: &fakeVMs{vms: map[string]api.VMCreateParams{}, checkpoints: map[string]map[string]bool{}, states: map[string]string{}, guest: &fakeGuest{files: map[string]string{}}}, now: time.Unix(1_800_000_000, 0)}
	s, err := New(Options{Dir: t.TempDir(), Listen: "127.0.0.1:0", Domain: "localhost", BaseImage: "debian", VMs: f.vms,
		Now: func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	k, err := s.CreateKey(context.Background(), api.E2BKeyCreateParams{Name: "ci", MaxSandboxes: 2})
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.CreateKey(context.Background(), api.E2BKeyCreateParams{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	f.key, f.other = k.Secret, o.Secret
	f.srv = httptest.NewServer(s.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) do(t *testing.T, method, path, key string, body any, hdr ...string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, rd)
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (f *fixture) create(t *testing.T, key string, body map[string]any) created {
	t.Helper()
	code, b := f.do(t, "POST", "/sandboxes", key, body)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, b)
	}
	var c created
	if err := json.Unmarshal([]byte(b), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestKeysScopeAndOrigin(t *testing.T) {
	f := newFixture(t)
	sb := f.create(t, f.key, map[string]any{"templateID": "base", "metadata": map[string]string{"app": "x"}})
	if !strings.HasPrefix(f.key, "e2b_") || len(f.key) != 44 {
		t.Fatalf("key %q: want e2b_ and 40 hex digits (the SDKs check the shape)", f.key)
	}
	if f.vms.vms[sb.SandboxID].Creator != "e2b:ci" || f.vms.vms[sb.SandboxID].Image != "debian" {
		t.Fatalf("the VM asked for: %+v", f.vms.vms[sb.SandboxID])
	}
	for _, tc := range []struct {
		name, method, path, key string
		hdr                     []string
		code                    int
		says                    string
	}{
		{"no key", "GET", "/v2/sandboxes", "", nil, 401, "no API key"},
		{"unknown key", "GET", "/v2/sandboxes", "e2b_00", nil, 401, "unknown or revoked"},
		{"another key's sandbox", "GET", "/sandboxes/" + sb.SandboxID, f.other, nil, 404, "not found"},
		{"another key kills it", "DELETE", "/sandboxes/" + sb.SandboxID, f.other, nil, 404, "not found"},
		{"another key's timeout", "POST", "/sandboxes/" + sb.SandboxID + "/timeout", f.other, nil, 400, "timeout"},
		{"rebinding Host", "GET", "/v2/sandboxes", f.key, []string{"Host", "attacker.example"}, 403, "DNS rebinding"},
		{"Host of another IP", "GET", "/v2/sandboxes", f.key, []string{"Host", "10.1.2.3:3000"}, 403, "DNS rebinding"},
		{"page Origin", "GET", "/v2/sandboxes", f.key, []string{"Origin", "https://attacker.example"}, 403, "web pages"},
		{"envd without token", "POST", "/process.Process/List", "", []string{"E2b-Sandbox-Id", sb.SandboxID, "Content-Type", "application/json"}, 401, "X-Access-Token"},
		{"envd with the wrong token", "POST", "/process.Process/List", "", []string{"E2b-Sandbox-Id", sb.SandboxID, "X-Access-Token", f.s.envdToken("iother"), "Content-Type", "application/json"}, 401, "X-Access-Token"},
		{"envd of no sandbox", "GET", "/health", "", []string{"E2b-Sandbox-Id", "inone"}, 502, "not found"},
		{"a port without the traffic token", "GET", "/", "", []string{"Host", "8080-" + sb.SandboxID + ".localhost"}, 401, "traffic"},
		{"an unknown path", "GET", "/teams", f.key, nil, 404, "not an E2B API path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, b := f.do(t, tc.method, tc.path, tc.key, nil, tc.hdr...)
			if code != tc.code || !strings.Contains(b, tc.says) {
				t.Fatalf("HTTP %d %s; want %d saying %q", code, b, tc.code, tc.says)
			}
		})
	}
	if code, b := f.do(t, "GET", "/v2/sandboxes", f.other, nil); code != 200 || strings.TrimSpace(b) != "[]" {
		t.Fatalf("another key lists %d %s", code, b)
	}
	if code, b := f.do(t, "GET", "/v2/sandboxes?metadata=app%3Dx", f.key, nil); code != 200 || !strings.Contains(b, sb.SandboxID) {
		t.Fatalf("list by metadata: %d %s", code, b)
	}
	if code, b := f.do(t, "GET", "/v2/sandboxes?metadata=app%3Dy", f.key, nil); code != 200 || strings.Contains(b, sb.SandboxID) {
		t.Fatalf("list by other metadata: %d %s", code, b)
	}
	if code, _ := f.do(t, "GET", "/health", "", nil, "E2b-Sandbox-Id", sb.SandboxID, "X-Access-Token", sb.EnvdAccessToken); code != 204 {
		t.Fatalf("envd health with its token: %d", code)
	}
	keys, _ := f.s.ListKeys(context.Background())
	if _, err := f.s.RevokeKey(context.Background(), api.E2BKeyRevokeParams{ID: keys.Keys[0].ID}); err != nil {
		t.Fatal(err)
	}
	if code, _ := f.do(t, "GET", "/v2/sandboxes", f.key, nil); code != 401 {
		t.Fatalf("a revoked key: %d", code)
	}
}

func TestCreateRules(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		body map[string]any
		code int
		says string
	}{
		{"unknown template", map[string]any{"templateID": "nope"}, 404, "banger e2b template set nope"},
		{"timeout past a day", map[string]any{"templateID": "base", "timeout": 90000}, 400, "timeout"},
		{"deny of a name", map[string]any{"network": map[string]any{"denyOut": []string{"github.com"}}}, 400, "names are allowed only in allowOut"},
		{"deny in allowOut", map[string]any{"network": map[string]any{"allowOut": []string{"!10.0.0.0/8"}}}, 400, "goes in denyOut"},
		{"rules", map[string]any{"network": map[string]any{"rules": map[string]any{"a.com": []any{map[string]any{}}}}}, 400, "not supported"},
		{"volumes", map[string]any{"volumeMounts": []any{map[string]any{"name": "v", "path": "/v"}}}, 400, "volume"},
		{"env with =", map[string]any{"envVars": map[string]string{"A=B": "c"}}, 400, "envVars"},
		{"auto resume", map[string]any{"autoPause": true, "autoResume": map[string]bool{"enabled": true}}, 400, "autoResume"},
		{"not JSON", nil, 400, "request body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var code int
			var b string
			if tc.body == nil {
				req, _ := http.NewRequest("POST", f.srv.URL+"/sandboxes", strings.NewReader("{"))
				req.Header.Set("X-API-Key", f.key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				bb, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				code, b = resp.StatusCode, string(bb)
			} else {
				code, b = f.do(t, "POST", "/sandboxes", f.key, tc.body)
			}
			if code != tc.code || !strings.Contains(b, tc.says) {
				t.Fatalf("HTTP %d %s; want %d saying %q", code, b, tc.code, tc.says)
			}
		})
	}
	if len(f.vms.vms) != 0 {
		t.Fatalf("refused creates made VMs: %v", f.vms.vms)
	}
	// Networks: none without internet, an allow-list, NAT by default.
	off := f.create(t, f.key, map[string]any{"allow_internet_access": false})
	allow := f.create(t, f.key, map[string]any{"network": map[string]any{"allowOut": []string{"github.com"}, "denyOut": []string{"0.0.0.0/0"}}})
	if p := f.vms.vms[off.SandboxID]; p.Network != "none" || *p.NAT {
		t.Fatalf("no internet: %+v", p)
	}
	if p := f.vms.vms[allow.SandboxID]; p.Network != "" || p.NAT != nil || len(p.Allow) != 1 {
		t.Fatalf("allowOut: %+v", p)
	}
	// The key's limit of two.
	if code, b := f.do(t, "POST", "/sandboxes", f.key, map[string]any{}); code != 429 || !strings.Contains(b, "may have 2 sandboxes") {
		t.Fatalf("a third sandbox: %d %s", code, b)
	}
	if len(f.vms.vms) != 2 {
		t.Fatalf("the refused create made a VM: %v", f.vms.vms)
	}
}

func TestTimeoutKills(t *testing.T) {
	f := newFixture(t)
	sb := f.create(t, f.key, map[string]any{"timeout": 5})
	ctx := context.Background()
	f.mu.Lock()
	f.now = f.now.Add(4 * time.Second)
	f.mu.Unlock()
	if code, _ := f.do(t, "POST", "/sandboxes/"+sb.SandboxID+"/timeout", f.key, map[string]int{"timeout": 10}); code != 204 {
		t.Fatalf("set timeout: %d", code)
	}
	f.mu.Lock()
	f.now = f.now.Add(8 * time.Second) // past the first end, not the second
	f.mu.Unlock()
	f.s.sweepOnce(ctx)
	if code, _ := f.do(t, "GET", "/sandboxes/"+sb.SandboxID, f.key, nil); code != 200 {
		t.Fatalf("killed before its new end: %d", code)
	}
	f.mu.Lock()
	f.now = f.now.Add(3 * time.Second)
	f.mu.Unlock()
	f.s.sweepOnce(ctx)
	if code, _ := f.do(t, "GET", "/sandboxes/"+sb.SandboxID, f.key, nil); code != 404 {
		t.Fatalf("not killed at its end: %d", code)
	}
	f.vms.mu.Lock()
	defer f.vms.mu.Unlock()
	if len(f.vms.deleted) != 1 || f.vms.deleted[0] != sb.SandboxID {
		t.Fatalf("deleted %v", f.vms.deleted)
	}
}

// TestKillIsAtOnce: from the moment a sandbox's end begins it is gone to
// its key (get, connect, list) though its VM is still being deleted, so
// a client that saw it stop cannot bring it back (the CI race of
// 498cc37: a connect in that window answered 201).
func TestKillIsAtOnce(t *testing.T) {
	f := newFixture(t)
	sb := f.create(t, f.key, map[string]any{"timeout": 5})
	hold := make(chan struct{})
	f.vms.mu.Lock()
	f.vms.hold, f.vms.entered = hold, make(chan struct{}, 1)
	f.vms.mu.Unlock()
	f.mu.Lock()
	f.now = f.now.Add(6 * time.Second)
	f.mu.Unlock()
	done := make(chan struct{})
	go func() { f.s.sweepOnce(context.Background()); close(done) }()
	<-f.vms.entered
	for _, c := range []struct{ method, path string }{
		{"GET", "/sandboxes/" + sb.SandboxID},
		{"POST", "/sandboxes/" + sb.SandboxID + "/connect"},
		{"POST", "/sandboxes/" + sb.SandboxID + "/timeout"},
		{"DELETE", "/sandboxes/" + sb.SandboxID},
	} {
		if code, body := f.do(t, c.method, c.path, f.key, map[string]int{"timeout": 60}); code != 404 {
			t.Errorf("%s %s while it is being killed: %d %s, want 404", c.method, c.path, code, body)
		}
	}
	if code, body := f.do(t, "GET", "/v2/sandboxes", f.key, nil); code != 200 || strings.Contains(string(body), sb.SandboxID) {
		t.Errorf("list while it is being killed: %d %s", code, body)
	}
	close(hold)
	<-done
}

func TestProcesses(t *testing.T) {
	f := newFixture(t)
	sb := f.create(t, f.key, map[string]any{"envVars": map[string]string{"A": "sandbox", "B": "b"}})
	hc := &http.Client{Transport: headers{"E2b-Sandbox-Id": sb.SandboxID, "X-Access-Token": sb.EnvdAccessToken}}
	for _, codec := range []string{"json", "proto"} {
		t.Run(codec, func(t *testing.T) {
			var opts []connect.ClientOption
			if codec == "json" {
				opts = append(opts, connect.WithProtoJSON())
			}
			c := pb.NewProcessClient(hc, f.srv.URL, opts...)
			req := connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", "x"}, Envs: map[string]string{"A": "cmd"}}})
			req.Header().Set("Authorization", "Basic dXNlcjo=") // user:
			st, err := c.Start(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			var out, errOut string
			var end *pb.ProcessEvent_EndEvent
			var pid uint32
			for st.Receive() {
				ev := st.Msg().GetEvent()
				switch {
				case ev.GetStart() != nil:
					pid = ev.GetStart().GetPid()
				case ev.GetData() != nil:
					out += string(ev.GetData().GetStdout())
					errOut += string(ev.GetData().GetStderr())
				case ev.GetEnd() != nil:
					end = ev.GetEnd()
				}
			}
			if err := st.Err(); err != nil {
				t.Fatal(err)
			}
			if pid < firstPID || out != "/bin/bash -c x\n" || errOut != "err\n" || end == nil || end.ExitCode != 3 || !end.Exited {
				t.Fatalf("pid %d out %q err %q end %+v", pid, out, errOut, end)
			}
			f.vms.guest.mu.Lock()
			last := f.vms.guest.execs[len(f.vms.guest.execs)-1]
			f.vms.guest.mu.Unlock()
			if last.User != "user" || strings.Join(last.Env, " ") != "A=cmd B=b" {
				t.Fatalf("exec params %+v", last)
			}
		})
	}
	c := pb.NewProcessClient(hc, f.srv.URL)
	for _, tc := range []struct {
		name string
		req  *pb.StartRequest
		auth string
		code connect.Code
	}{
		{"no command", &pb.StartRequest{Process: &pb.ProcessConfig{}}, "", connect.CodeInvalidArgument},
		{"relative cwd", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "ls", Cwd: ptr("tmp")}}, "", connect.CodeInvalidArgument},
		{"a user that is an option", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "ls"}}, "Basic LXJvb3Q6", connect.CodeInvalidArgument},
		{"env name with =", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "ls", Envs: map[string]string{"X=Y": "1"}}}, "", connect.CodeInvalidArgument},
	} {
		req := connect.NewRequest(tc.req)
		if tc.auth != "" {
			req.Header().Set("Authorization", tc.auth)
		}
		st, err := c.Start(context.Background(), req)
		if err == nil {
			for st.Receive() {
			}
			err = st.Err()
		}
		if connect.CodeOf(err) != tc.code {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	// A background process outlives its client; kill ends it.
	f.vms.guest.block = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	st, err := c.Start(ctx, connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep"}, Tag: ptr("t1")}))
	if err != nil || !st.Receive() {
		t.Fatal(err, st.Err())
	}
	pid := st.Msg().GetEvent().GetStart().GetPid()
	cancel()
	list, err := c.List(context.Background(), connect.NewRequest(&pb.ListRequest{}))
	if err != nil || len(list.Msg.Processes) != 1 || list.Msg.Processes[0].GetPid() != pid || list.Msg.Processes[0].GetTag() != "t1" {
		t.Fatalf("list %v %v", list, err)
	}
	if _, err := c.SendInput(context.Background(), connect.NewRequest(&pb.SendInputRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("x")}}})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("input to a process without stdin: %v", err)
	}
	// SIGTERM goes to the exec's process group in the guest, by the
	// handle it was started with; the process may trap it, so it runs on.
	g := f.vms.guest
	g.mu.Lock()
	g.signals = true
	g.mu.Unlock()
	if _, err := c.SendSignal(context.Background(), connect.NewRequest(&pb.SendSignalRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}, Signal: pb.Signal_SIGNAL_SIGTERM})); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	sent, handle := g.sent, g.execs[len(g.execs)-1].Handle
	g.mu.Unlock()
	if len(sent) != 1 || sent[0].Signal != 15 || handle == "" || sent[0].Handle != handle {
		t.Fatalf("SIGTERM sent %+v, the exec's handle %q", sent, handle)
	}
	if list, _ := c.List(context.Background(), connect.NewRequest(&pb.ListRequest{})); len(list.Msg.Processes) != 1 {
		t.Fatalf("a process sent SIGTERM (which it may trap) is gone: %v", list.Msg.Processes)
	}
	if _, err := c.SendSignal(context.Background(), connect.NewRequest(&pb.SendSignalRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: "t1"}}, Signal: pb.Signal_SIGNAL_SIGKILL})); err != nil {
		t.Fatal(err)
	}
	list, _ = c.List(context.Background(), connect.NewRequest(&pb.ListRequest{}))
	if len(list.Msg.Processes) != 0 {
		t.Fatalf("a killed process is listed: %v", list.Msg.Processes)
	}
	if _, err := c.SendSignal(context.Background(), connect.NewRequest(&pb.SendSignalRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: 9}}, Signal: pb.Signal_SIGNAL_SIGKILL})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("kill of no process: %v", err)
	}
	// An agent without signals: SIGTERM ends the process as SIGKILL does.
	g.mu.Lock()
	g.signals = false
	g.mu.Unlock()
	st, err = c.Start(context.Background(), connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep"}, Tag: ptr("t2")}))
	if err != nil || !st.Receive() {
		t.Fatal(err)
	}
	if _, err := c.SendSignal(context.Background(), connect.NewRequest(&pb.SendSignalRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: "t2"}}, Signal: pb.Signal_SIGNAL_SIGTERM})); err != nil {
		t.Fatal(err)
	}
	if list, _ := c.List(context.Background(), connect.NewRequest(&pb.ListRequest{})); len(list.Msg.Processes) != 0 {
		t.Fatalf("SIGTERM with an agent without signals left %v", list.Msg.Processes)
	}
	// Killing the sandbox ends what still runs in it.
	st, err = c.Start(context.Background(), connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep"}}))
	if err != nil || !st.Receive() {
		t.Fatal(err)
	}
	if code, _ := f.do(t, "DELETE", "/sandboxes/"+sb.SandboxID, f.key, nil); code != 204 {
		t.Fatalf("kill: %d", code)
	}
	var end *pb.ProcessEvent_EndEvent
	for st.Receive() {
		if e := st.Msg().GetEvent().GetEnd(); e != nil {
			end = e
		}
	}
	// Its stream is cut, not ended, as a killed sandbox's is.
	if end != nil || st.Err() == nil {
		t.Fatalf("a process of a killed sandbox: end %+v, %v", end, st.Err())
	}
}

// TestProcessesAcrossPause: a pause (a suspend, which breaks the agent's
// link) leaves a sandbox's processes running, listed after it; the connect
// attaches to each again by its handle, their streams going on; a kill
// is then the agent's SIGKILL. A filesystem-only pause ends them.
func TestProcessesAcrossPause(t *testing.T) {
	f := newFixture(t)
	sb := f.create(t, f.key, map[string]any{})
	g := f.vms.guest
	g.signals = true
	g.block = make(chan struct{})
	hc := &http.Client{Transport: headers{"E2b-Sandbox-Id": sb.SandboxID, "X-Access-Token": sb.EnvdAccessToken}}
	c := pb.NewProcessClient(hc, f.srv.URL)
	st, err := c.Start(context.Background(), connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep", Args: []string{"3600"}}, Tag: ptr("bg")}))
	if err != nil || !st.Receive() {
		t.Fatal(err)
	}
	pid := st.Msg().GetEvent().GetStart().GetPid()
	g.mu.Lock()
	started := g.execs[len(g.execs)-1]
	g.mu.Unlock()
	if !started.Keep || started.Handle == "" {
		t.Fatalf("the exec is not kept: %+v", started)
	}
	if code, body := f.do(t, "POST", "/sandboxes/"+sb.SandboxID+"/pause", f.key, nil); code != 204 {
		t.Fatalf("pause: %d %s", code, body)
	}
	list := func() []uint32 {
		l, err := c.List(context.Background(), connect.NewRequest(&pb.ListRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var pids []uint32
		for _, p := range l.Msg.Processes {
			pids = append(pids, p.GetPid())
		}
		return pids
	}
	if code, body := f.do(t, "POST", "/sandboxes/"+sb.SandboxID+"/connect", f.key, map[string]int{"timeout": 60}); code != 201 {
		t.Fatalf("connect: %d %s", code, body)
	}
	if pids := list(); !slices.Equal(pids, []uint32{pid}) {
		t.Fatalf("resumed, the processes are %v; want %d", pids, pid)
	}
	// Its stream from before the pause goes on with what the attach
	// brings.
	var out strings.Builder
	for st.Receive() {
		if d := st.Msg().GetEvent().GetData(); d != nil {
			out.Write(d.GetStdout())
			if strings.Contains(out.String(), "attached") {
				break
			}
		}
	}
	g.mu.Lock()
	attached := slices.Clone(g.attached)
	g.mu.Unlock()
	if !slices.Equal(attached, []string{started.Handle}) || !strings.Contains(out.String(), "attached") {
		t.Fatalf("after the connect: attached %v, output %q", attached, out.String())
	}
	if _, err := c.SendSignal(context.Background(), connect.NewRequest(&pb.SendSignalRequest{Process: &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}, Signal: pb.Signal_SIGNAL_SIGKILL})); err != nil {
		t.Fatal(err)
	}
	var end *pb.ProcessEvent_EndEvent
	for st.Receive() {
		if e := st.Msg().GetEvent().GetEnd(); e != nil {
			end = e
		}
	}
	if end == nil || end.GetStatus() != "signal: kill" {
		t.Fatalf("killed after the resume: end %v, %v", end, st.Err())
	}
	if pids := list(); len(pids) != 0 {
		t.Fatalf("a killed process is listed: %v", pids)
	}

	// A filesystem-only pause stops the VM: what ran is gone.
	st, err = c.Start(context.Background(), connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep"}}))
	if err != nil || !st.Receive() {
		t.Fatal(err)
	}
	if code, body := f.do(t, "POST", "/sandboxes/"+sb.SandboxID+"/pause", f.key, map[string]bool{"memory": false}); code != 204 {
		t.Fatalf("pause: %d %s", code, body)
	}
	for st.Receive() {
	}
	if code, body := f.do(t, "POST", "/sandboxes/"+sb.SandboxID+"/connect", f.key, map[string]int{"timeout": 60}); code != 201 {
		t.Fatalf("connect: %d %s", code, body)
	}
	if pids := list(); len(pids) != 0 {
		t.Fatalf("after a filesystem-only pause: %v", pids)
	}
}

// TestOutsideSuspend: a sandbox's VM suspended outside the API (banger
// vm suspend, the idle sweep) breaks its processes' calls; they wait for
// its resume event and attach again, and never wake it themselves.
func TestOutsideSuspend(t *testing.T) {
	f := newFixture(t)
	sb := f.create(t, f.key, map[string]any{})
	g := f.vms.guest
	g.block = make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(g.block) }) }
	ctx, cancel := context.WithCancel(context.Background())
	// Before the server's Close, which waits for the call.
	t.Cleanup(func() { cancel(); unblock() })
	hc := &http.Client{Transport: headers{"E2b-Sandbox-Id": sb.SandboxID, "X-Access-Token": sb.EnvdAccessToken}}
	c := pb.NewProcessClient(hc, f.srv.URL)
	st, err := c.Start(ctx, connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep"}}))
	if err != nil || !st.Receive() {
		t.Fatal(err)
	}
	attached := func() int {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.attached)
	}
	f.vms.mu.Lock()
	f.vms.states[sb.SandboxID] = api.VMSuspended
	f.vms.mu.Unlock()
	g.breakLink()
	// Its call broke; it must wait, not attach (nor wake the VM).
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if attached() != 0 {
			t.Fatal("a process of a suspended VM attached again before its resume")
		}
		time.Sleep(20 * time.Millisecond) // nothing to wait on: it must not happen
	}
	resume := func(string) {
		f.vms.mu.Lock()
		f.vms.states[sb.SandboxID] = api.VMRunning
		f.vms.mu.Unlock()
		f.s.VMEvent(api.Event{Type: api.EventVMResumed, VM: sb.SandboxID})
	}
	resume("")
	for end := time.Now().Add(10 * time.Second); attached() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the resume event did not attach the process again")
		}
	}
	// Suspended again, and resumed just after the process was told its
	// VM does not run, before it waits: the resume must not be lost.
	f.vms.mu.Lock()
	f.vms.states[sb.SandboxID] = api.VMSuspended
	f.vms.notRunning = resume
	f.vms.mu.Unlock()
	g.breakLink()
	for end := time.Now().Add(10 * time.Second); attached() < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("a resume landing between the process's question and its wait was lost")
		}
	}
	unblock()
	for st.Receive() {
	}
}

func TestFilesAndSignatures(t *testing.T) {
	f := newFixture(t)
	sb := f.create(t, f.key, map[string]any{})
	f.vms.guest.files["/root/a.txt"] = "hello"
	hc := &http.Client{Transport: headers{"E2b-Sandbox-Id": sb.SandboxID, "X-Access-Token": sb.EnvdAccessToken}}
	fs := fspb.NewFilesystemClient(hc, f.srv.URL, connect.WithProtoJSON())
	st, err := fs.Stat(context.Background(), connect.NewRequest(&fspb.StatRequest{Path: "a.txt"}))
	if err != nil || st.Msg.Entry.Path != "/root/a.txt" || st.Msg.Entry.Permissions != "-rw-r--r--" || st.Msg.Entry.Size != 5 {
		t.Fatalf("stat of a relative path: %v %v", st, err)
	}
	if _, err := fs.Stat(context.Background(), connect.NewRequest(&fspb.StatRequest{Path: "/none"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("stat of nothing: %v", err)
	}
	if _, err := fs.Stat(context.Background(), connect.NewRequest(&fspb.StatRequest{Path: "/a\x00b"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a path with NUL: %v", err)
	}
	// A signed download URL, as the SDK makes one; then forged and
	// expired ones.
	sig := func(path, op, exp string) string {
		raw := path + ":" + op + "::" + sb.EnvdAccessToken
		if exp != "" {
			raw += ":" + exp
		}
		return url.QueryEscape(signature(raw))
	}
	exp := fmt.Sprint(f.now.Add(time.Minute).Unix())
	for _, tc := range []struct {
		name, query string
		code        int
	}{
		{"signed", "path=/root/a.txt&signature=" + sig("/root/a.txt", "read", exp) + "&signature_expiration=" + exp, 200},
		{"signed for write", "path=/root/a.txt&signature=" + sig("/root/a.txt", "write", exp) + "&signature_expiration=" + exp, 401},
		{"another path", "path=/etc/shadow&signature=" + sig("/root/a.txt", "read", exp) + "&signature_expiration=" + exp, 401},
		{"expired", "path=/root/a.txt&signature=" + sig("/root/a.txt", "read", "1") + "&signature_expiration=1", 401},
		{"forged", "path=/root/a.txt&signature=v1_AAAA", 401},
	} {
		code, b := f.do(t, "GET", "/files?"+tc.query, "", nil, "E2b-Sandbox-Id", sb.SandboxID)
		if tc.name == "expired" && !strings.Contains(b, `"message":"signature is already expired"`) {
			t.Fatalf("expired: %s, want envd's words", b)
		}
		if code != tc.code || (code == 200 && b != "hello") {
			t.Fatalf("%s: %d %s, want %d", tc.name, code, b, tc.code)
		}
	}
	// A signed URL with no sandbox named (E2B_SANDBOX_URL set) finds the
	// one whose token signed it; a forged one finds none.
	signed := "path=/root/a.txt&signature=" + sig("/root/a.txt", "read", exp) + "&signature_expiration=" + exp
	if code, b := f.do(t, "GET", "/files?"+signed, "", nil); code != 200 || b != "hello" {
		t.Fatalf("a signed URL naming no sandbox: %d %s", code, b)
	}
	if code, _ := f.do(t, "GET", "/files?path=/root/a.txt&signature=v1_AAAA", "", nil); code != 401 {
		t.Fatalf("a forged signature naming no sandbox: %d", code)
	}
	// Expired, naming no sandbox: its sandbox says so, in envd's exact
	// words (the SDK's test compares the whole body); an expired forgery
	// is only invalid.
	old := "path=/root/a.txt&signature=" + sig("/root/a.txt", "read", "1") + "&signature_expiration=1"
	if code, b := f.do(t, "GET", "/files?"+old, "", nil); code != 401 || b != `{"code":401,"message":"signature is already expired"}`+"\n" {
		t.Fatalf("an expired signature naming no sandbox: %d %q", code, b)
	}
	if code, b := f.do(t, "GET", "/files?path=/etc/shadow&signature="+sig("/root/a.txt", "read", "1")+"&signature_expiration=1", "", nil); code != 401 || strings.Contains(b, "expired") {
		t.Fatalf("an expired forgery: %d %s", code, b)
	}
	// A multipart upload's parts are written at the paths they name.
	var mb bytes.Buffer
	mw := multipart.NewWriter(&mb)
	for _, name := range []string{"/0/x.txt", "nested/dir/y.txt"} {
		fw, _ := mw.CreateFormFile("file", name)
		_, _ = fw.Write([]byte(name))
	}
	_ = mw.Close()
	mreq, _ := http.NewRequest("POST", f.srv.URL+"/files", &mb)
	mreq.Header.Set("Content-Type", mw.FormDataContentType())
	mresp, err := hc.Do(mreq)
	if err != nil || mresp.StatusCode != 200 {
		t.Fatalf("a multipart upload: %v %v", mresp, err)
	}
	mbody, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(mbody), `"path":"/0/x.txt"`) || !strings.Contains(string(mbody), `"path":"/root/nested/dir/y.txt"`) {
		t.Fatalf("multipart paths: %s", mbody)
	}
	// A gzip upload is inflated.
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	_, _ = zw.Write([]byte("inflated"))
	_ = zw.Close()
	req, _ := http.NewRequest("POST", f.srv.URL+"/files?path=/tmp/z", &zb)
	req.Header.Set("Content-Encoding", "gzip")
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a gzip upload: %v %v", resp, err)
	}
	if got := f.vms.guest.files["/tmp/z"]; got != "inflated" {
		t.Fatalf("a gzip upload wrote %q", got)
	}
	// Upload: the octet-stream body, then a multipart form.
	code, b := f.do(t, "POST", "/files?path=/tmp/x", "", nil, "E2b-Sandbox-Id", sb.SandboxID, "X-Access-Token", sb.EnvdAccessToken)
	if code != 200 || !strings.Contains(b, `"path":"/tmp/x"`) {
		t.Fatalf("upload: %d %s", code, b)
	}
}

type headers map[string]string

func (h headers) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func ptr[T any](v T) *T { return &v }

// TestSlowListenerIsDropped: a client that stops reading a process's
// output is dropped once its queue stays full, and holds up neither the
// command nor a listener that reads.
func TestSlowListenerIsDropped(t *testing.T) {
	p := &process{pid: firstPID, wait: 20 * time.Millisecond, subs: map[chan *pb.ProcessEvent]struct{}{}, done: make(chan struct{})}
	stalled := p.subscribe()
	reader := p.subscribe()
	got := make(chan int)
	go func() {
		n := 0
		for range reader {
			n++
		}
		got <- n
	}()
	start := time.Now()
	out := output{p, "stdout"}
	for range 1000 {
		if _, err := out.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the output was held up %v by a stalled listener", took)
	}
	n := 0
	for range stalled {
		n++
	}
	if n != subscriberQueue {
		t.Fatalf("the stalled listener got %d events before it was dropped, want its queue of %d", n, subscriberQueue)
	}
	p.finish(&pb.ProcessEvent_EndEvent{Exited: true})
	if n := <-got; n != 1001 {
		t.Fatalf("the reading listener got %d events, want 1000 and the end", n)
	}
}

// TestVMEvents: a sandbox follows its VM when the owner deletes or
// suspends it with banger's CLI.
func TestVMEvents(t *testing.T) {
	f := newFixture(t)
	a := f.create(t, f.key, map[string]any{})
	b := f.create(t, f.key, map[string]any{})
	f.s.VMEvent(api.Event{Type: api.EventVMSuspended, VM: a.SandboxID})
	if code, body := f.do(t, "GET", "/sandboxes/"+a.SandboxID, f.key, nil); code != 200 || !strings.Contains(body, `"state":"paused"`) {
		t.Fatalf("after a suspend: %d %s", code, body)
	}
	f.s.VMEvent(api.Event{Type: api.EventVMResumed, VM: a.SandboxID})
	if _, body := f.do(t, "GET", "/sandboxes/"+a.SandboxID, f.key, nil); !strings.Contains(body, `"state":"running"`) {
		t.Fatalf("after a resume: %s", body)
	}
	f.s.VMEvent(api.Event{Type: api.EventVMDeleted, VM: b.SandboxID})
	if code, _ := f.do(t, "GET", "/sandboxes/"+b.SandboxID, f.key, nil); code != 404 {
		t.Fatalf("a sandbox whose VM was deleted: %d", code)
	}
	f.s.VMEvent(api.Event{Type: api.EventVMDeleted, VM: "not-a-sandbox"})
}

func TestWatch(t *testing.T) {
	f := newFixture(t)
	sb := f.create(t, f.key, map[string]any{})
	f.vms.guest.files["/root/dir"] = ""
	f.vms.guest.watch = []proto.WatchEvent{{Name: "a", Op: proto.WatchCreate}, {Name: "b/c", Op: proto.WatchRename}}
	hc := &http.Client{Transport: headers{"E2b-Sandbox-Id": sb.SandboxID, "X-Access-Token": sb.EnvdAccessToken}}
	fs := fspb.NewFilesystemClient(hc, f.srv.URL)
	// The fake's stat says every path is a file: a watch of one is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := fs.WatchDir(ctx, connect.NewRequest(&fspb.WatchDirRequest{Path: "dir"}))
	if err == nil {
		for st.Receive() {
		}
		err = st.Err()
	}
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a watch of a file: %v", err)
	}
	f.vms.guest.dirs = map[string]bool{"/root/dir": true}
	wctx, stop := context.WithCancel(ctx)
	st, err = fs.WatchDir(wctx, connect.NewRequest(&fspb.WatchDirRequest{Path: "dir", Recursive: true}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 && st.Receive() {
		if e := st.Msg().GetFilesystem(); e != nil {
			got = append(got, e.Name+":"+e.Type.String())
		}
	}
	stop()
	if strings.Join(got, " ") != "a:EVENT_TYPE_CREATE b/c:EVENT_TYPE_RENAME" {
		t.Fatalf("events %v (%v)", got, st.Err())
	}
	w, err := fs.CreateWatcher(ctx, connect.NewRequest(&fspb.CreateWatcherRequest{Path: "/root/dir"}))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for deadline := time.Now().Add(5 * time.Second); n < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		ev, err := fs.GetWatcherEvents(ctx, connect.NewRequest(&fspb.GetWatcherEventsRequest{WatcherId: w.Msg.WatcherId}))
		if err != nil {
			t.Fatal(err)
		}
		n += len(ev.Msg.Events)
	}
	if n != 2 {
		t.Fatalf("the watcher kept %d events, want 2", n)
	}
	if _, err := fs.RemoveWatcher(ctx, connect.NewRequest(&fspb.RemoveWatcherRequest{WatcherId: w.Msg.WatcherId})); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.GetWatcherEvents(ctx, connect.NewRequest(&fspb.GetWatcherEventsRequest{WatcherId: w.Msg.WatcherId})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("a removed watcher: %v", err)
	}
	// Another sandbox's watcher is not found.
	other := f.create(t, f.key, map[string]any{})
	w2, err := fs.CreateWatcher(ctx, connect.NewRequest(&fspb.CreateWatcherRequest{Path: "/root/dir"}))
	if err != nil {
		t.Fatal(err)
	}
	fs2 := fspb.NewFilesystemClient(&http.Client{Transport: headers{"E2b-Sandbox-Id": other.SandboxID, "X-Access-Token": other.EnvdAccessToken}}, f.srv.URL)
	if _, err := fs2.GetWatcherEvents(ctx, connect.NewRequest(&fspb.GetWatcherEventsRequest{WatcherId: w2.Msg.WatcherId})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("another sandbox's watcher: %v", err)
	}
}

// TestSnapshots: a snapshot outlives its sandbox, makes sandboxes of its
// key only, is named as E2B names templates, and goes with its VM.
func TestSnapshots(t *testing.T) {
	f := newFixture(t)
	src := f.create(t, f.key, map[string]any{"envVars": map[string]string{"A": "1"}})
	code, body := f.do(t, "POST", "/sandboxes/"+src.SandboxID+"/snapshots", f.key, map[string]any{})
	if code != 201 {
		t.Fatalf("snapshot: %d %s", code, body)
	}
	var sn snapshotInfo
	if err := json.Unmarshal([]byte(body), &sn); err != nil || !strings.HasSuffix(sn.SnapshotID, ":default") || len(sn.Names) != 1 {
		t.Fatalf("snapshot info %s: %v", body, err)
	}
	f.vms.mu.Lock()
	left := len(f.vms.checkpoints[src.SandboxID])
	f.vms.mu.Unlock()
	if left != 0 {
		t.Fatalf("the sandbox keeps %d checkpoints after its snapshot", left)
	}
	if code, _ := f.do(t, "DELETE", "/sandboxes/"+src.SandboxID, f.key, nil); code != 204 {
		t.Fatalf("kill the source: %d", code)
	}
	for _, q := range []string{"", "?sandboxID=" + src.SandboxID, "?name=" + url.QueryEscape(sn.SnapshotID)} {
		if code, body := f.do(t, "GET", "/snapshots"+q, f.key, nil); code != 200 || !strings.Contains(body, sn.SnapshotID) {
			t.Errorf("list%s: %d %s", q, code, body)
		}
	}
	if code, body := f.do(t, "GET", "/snapshots?sandboxID=inope", f.key, nil); code != 200 || body != "[]\n" {
		t.Errorf("list of another sandbox's: %d %q", code, body)
	}
	// Another key sees, uses and deletes none of it.
	if code, body := f.do(t, "GET", "/snapshots", f.other, nil); code != 200 || strings.Contains(body, sn.SnapshotID) {
		t.Errorf("another key's list: %d %s", code, body)
	}
	if code, _ := f.do(t, "POST", "/sandboxes", f.other, map[string]any{"templateID": sn.SnapshotID}); code != 404 {
		t.Errorf("another key's create from it: %d", code)
	}
	if code, _ := f.do(t, "DELETE", "/templates/"+url.PathEscape(sn.SnapshotID), f.other, nil); code != 404 {
		t.Errorf("another key's delete: %d", code)
	}
	if code, body := f.do(t, "POST", "/sandboxes", f.key, map[string]any{"templateID": sn.SnapshotID, "allow_internet_access": false}); code != 400 || !strings.Contains(body, "network") {
		t.Errorf("a create from it with another network: %d %s", code, body)
	}
	got := f.create(t, f.key, map[string]any{"templateID": sn.SnapshotID, "envVars": map[string]string{"B": "2"}})
	if got.TemplateID != sn.SnapshotID {
		t.Errorf("a sandbox from a snapshot has template %q", got.TemplateID)
	}
	f.s.mu.Lock()
	env := f.s.sandboxes[got.SandboxID].Env
	f.s.mu.Unlock()
	if env["A"] != "1" || env["B"] != "2" {
		t.Errorf("its environment: %v", env)
	}
	// Named: the name takes the tag, and a second of the name replaces
	// the first.
	code, body = f.do(t, "POST", "/sandboxes/"+got.SandboxID+"/snapshots", f.key, map[string]any{"name": "golden"})
	if code != 201 || !strings.Contains(body, `"golden:default"`) {
		t.Fatalf("named snapshot: %d %s", code, body)
	}
	if code, _ := f.do(t, "POST", "/sandboxes/"+got.SandboxID+"/snapshots", f.key, map[string]any{"name": "golden"}); code != 201 {
		t.Fatalf("named again: %d", code)
	}
	if code, body := f.do(t, "GET", "/snapshots?name=golden", f.key, nil); code != 200 || strings.Count(body, "golden:default") != 2 { // its ID and its one name
		t.Errorf("by name after a replace: %d %s", code, body)
	}
	for _, c := range []struct {
		name string
		code int
	}{{"base", 409}, {"../x", 400}, {strings.Repeat("a", 101), 400}} {
		if code, body := f.do(t, "POST", "/sandboxes/"+got.SandboxID+"/snapshots", f.key, map[string]any{"name": c.name}); code != c.code {
			t.Errorf("snapshot named %.20q: %d %s, want %d", c.name, code, body, c.code)
		}
	}
	if code, _ := f.do(t, "DELETE", "/templates/base", f.key, nil); code != 403 {
		t.Errorf("deleting the base template: %d", code)
	}
	if code, _ := f.do(t, "DELETE", "/templates/"+url.PathEscape(sn.SnapshotID), f.key, nil); code != 204 {
		t.Errorf("delete: %d", code)
	}
	if code, _ := f.do(t, "DELETE", "/templates/"+url.PathEscape(sn.SnapshotID), f.key, nil); code != 404 {
		t.Errorf("delete again: %d", code)
	}
	// `banger vm delete` of a snapshot's VM is the snapshot's end.
	f.s.mu.Lock()
	var vm string
	for _, s := range f.s.snapshots {
		vm = s.VM
	}
	n := len(f.s.snapshots)
	f.s.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d snapshots left, want the one named", n)
	}
	f.s.VMEvent(api.Event{Type: api.EventVMDeleted, VM: vm})
	if code, body := f.do(t, "GET", "/snapshots", f.key, nil); body != "[]\n" {
		t.Errorf("after its VM was deleted: %d %s", code, body)
	}
}

// TestDefaultUser: a sandbox runs what names no user as E2B's "user"
// (made at create, as root), relative paths start at /home/user, and
// what it writes and makes is that user's; a user named is taken as
// named; an image that cannot make the user keeps its own (root).
func TestDefaultUser(t *testing.T) {
	f := newFixture(t)
	f.vms.guest.makesUser = true
	sb := f.create(t, f.key, map[string]any{})
	g := f.vms.guest
	g.mu.Lock()
	made := g.execs[len(g.execs)-1]
	g.mu.Unlock()
	if made.User != "root" || made.Args[2] != makeUser {
		t.Fatalf("the user was made by %+v", made)
	}
	g.files["/home/user/a.txt"] = "x"
	hc := &http.Client{Transport: headers{"E2b-Sandbox-Id": sb.SandboxID, "X-Access-Token": sb.EnvdAccessToken}}
	fs := fspb.NewFilesystemClient(hc, f.srv.URL, connect.WithProtoJSON())
	ctx := context.Background()
	if st, err := fs.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "a.txt"})); err != nil || st.Msg.Entry.Path != "/home/user/a.txt" {
		t.Fatalf("a relative stat: %v %v", st, err)
	}
	if _, err := fs.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: "d"})); err != nil {
		t.Fatal(err)
	}
	asRoot := connect.NewRequest(&fspb.MakeDirRequest{Path: "e"})
	asRoot.Header().Set("Authorization", "Basic cm9vdDo=") // root:
	if _, err := fs.MakeDir(ctx, asRoot); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	var ops []proto.FSParams
	for _, o := range g.fsOps {
		if o.Op == proto.FSMkdir {
			ops = append(ops, o)
		}
	}
	g.mu.Unlock()
	if len(ops) != 2 || ops[0].Path != "/home/user/d" || ops[0].Owner != "user" || ops[1].Path != "/root/e" || ops[1].Owner != "" {
		t.Fatalf("mkdirs: %+v", ops)
	}
	for _, c := range []struct{ query, path, owner string }{
		{"path=b.txt", "/home/user/b.txt", "user"},
		{"path=b.txt&username=root", "/root/b.txt", ""},
	} {
		req, _ := http.NewRequest("POST", f.srv.URL+"/files?"+c.query, strings.NewReader("hi"))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := hc.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("upload %s: %v %v", c.query, resp, err)
		}
		resp.Body.Close()
		g.mu.Lock()
		w := g.writes[len(g.writes)-1]
		g.mu.Unlock()
		if w.Path != c.path || w.Owner != c.owner {
			t.Errorf("upload %s wrote %+v, want %s owned by %q", c.query, w, c.path, c.owner)
		}
	}
	pc := pb.NewProcessClient(hc, f.srv.URL)
	st, err := pc.Start(ctx, connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "id"}}))
	if err != nil {
		t.Fatal(err)
	}
	for st.Receive() {
	}
	g.mu.Lock()
	last := g.execs[len(g.execs)-1]
	g.makesUser = false
	g.mu.Unlock()
	if last.User != "user" {
		t.Errorf("a process naming no user ran as %q", last.User)
	}
	// An image without useradd or adduser: its own user, logged.
	other := f.create(t, f.key, map[string]any{})
	if u := f.s.userIn(other.SandboxID, ""); u != "" {
		t.Errorf("the default user where none could be made: %q", u)
	}
}

// TestLogsAndMetrics: a sandbox's log holds what the API did for it and
// answers E2B's filters; metrics come for the key's running sandboxes
// only, on the control plane and as envd's /metrics.
func TestLogsAndMetrics(t *testing.T) {
	f := newFixture(t)
	sb := f.create(t, f.key, map[string]any{})
	theirs := f.create(t, f.other, map[string]any{})
	hc := &http.Client{Transport: headers{"E2b-Sandbox-Id": sb.SandboxID, "X-Access-Token": sb.EnvdAccessToken}}
	st, err := pb.NewProcessClient(hc, f.srv.URL).Start(context.Background(), connect.NewRequest(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "make", Args: []string{"test"}}}))
	if err != nil {
		t.Fatal(err)
	}
	for st.Receive() {
	}
	req, _ := http.NewRequest("POST", f.srv.URL+"/files?path=/tmp/x", strings.NewReader("hi"))
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("upload: %v %v", resp, err)
	}
	f.mu.Lock()
	f.now = f.now.Add(time.Second)
	f.mu.Unlock()
	if code, _ := f.do(t, "POST", "/sandboxes/"+sb.SandboxID+"/timeout", f.key, map[string]int{"timeout": 60}); code != 204 {
		t.Fatal("timeout")
	}
	logs := func(query string) []logEntry {
		t.Helper()
		code, body := f.do(t, "GET", "/v2/sandboxes/"+sb.SandboxID+"/logs"+query, f.key, nil)
		var r struct{ Logs []logEntry }
		if err := json.Unmarshal([]byte(body), &r); code != 200 || err != nil {
			t.Fatalf("logs%s: %d %s", query, code, body)
		}
		return r.Logs
	}
	msgs := func(l []logEntry) string {
		var m []string
		for _, e := range l {
			m = append(m, e.Message)
		}
		return strings.Join(m, ", ")
	}
	if got := msgs(logs("")); got != "sandbox created, process started, process ended, file written, timeout set" {
		t.Errorf("the log: %s", got)
	}
	all := logs("")
	if all[1].Fields["cmd"] != "make test" || all[2].Fields["exitCode"] != "3" || all[3].Fields["path"] != "/tmp/x" {
		t.Errorf("fields: %+v", all)
	}
	later := strconv.FormatInt(f.now.UnixMilli(), 10)
	for q, want := range map[string]string{
		"?direction=backward&limit=1":              "timeout set",
		"?search=process":                          "process started, process ended",
		"?cursor=" + later:                         "timeout set",
		"?cursor=" + later + "&direction=backward": "timeout set, file written, process ended, process started, sandbox created",
	} {
		if got := msgs(logs(q)); got != want {
			t.Errorf("logs%s: %s, want %s", q, got, want)
		}
	}
	for _, q := range []string{"?direction=up", "?level=loud", "?limit=1001", "?cursor=-1"} {
		if code, _ := f.do(t, "GET", "/v2/sandboxes/"+sb.SandboxID+"/logs"+q, f.key, nil); code != 400 {
			t.Errorf("logs%s: %d, want 400", q, code)
		}
	}
	if code, body := f.do(t, "GET", "/sandboxes/"+sb.SandboxID+"/logs", f.key, nil); code != 200 || !strings.Contains(body, `"line":"info: sandbox created"`) || !strings.Contains(body, `"logEntries"`) {
		t.Errorf("v1 logs: %d %s", code, body)
	}
	if code, _ := f.do(t, "GET", "/v2/sandboxes/"+sb.SandboxID+"/logs", f.other, nil); code != 404 {
		t.Errorf("another key's logs: %d", code)
	}
	// A sandbox's log goes with it, and nothing said of it after (a
	// process's end) brings it back.
	f.s.forget(theirs.SandboxID)
	f.s.logf(theirs.SandboxID, "info", "process ended")
	f.s.mu.Lock()
	_, kept := f.s.logs[theirs.SandboxID]
	f.s.mu.Unlock()
	if kept {
		t.Error("a gone sandbox's log came back")
	}
	code, body := f.do(t, "GET", "/sandboxes/metrics?sandbox_ids="+sb.SandboxID+","+theirs.SandboxID, f.key, nil)
	if code != 200 || !strings.Contains(body, sb.SandboxID) || strings.Contains(body, theirs.SandboxID) || !strings.Contains(body, `"cpuCount":2`) {
		t.Errorf("metrics of many: %d %s", code, body)
	}
	if code, _ := f.do(t, "GET", "/sandboxes/metrics", f.key, nil); code != 400 {
		t.Errorf("metrics of none: %d", code)
	}
	resp, err := hc.Get(f.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"cpu_count":2`) || !strings.Contains(string(b), `"mem_total_mib":1024`) {
		t.Errorf("envd /metrics: %d %s", resp.StatusCode, b)
	}
}

// TestEgress: E2B's network settings onto banger's egress: NAT, a
// closed list, or an open one (denyOut's CIDRs, allowOut's exceptions).
func TestEgress(t *testing.T) {
	no := false
	for _, tc := range []struct {
		name     string
		n        *networkConfig
		internet *bool
		nat      bool
		rules    []string
		err      string
	}{
		{name: "default", nat: true},
		{name: "no internet", internet: &no},
		{name: "deny all", n: &networkConfig{DenyOut: []string{"0.0.0.0/0"}}},
		{name: "deny all but", n: &networkConfig{DenyOut: []string{"0.0.0.0/0", "10.0.0.0/8"}, AllowOut: []string{"github.com:443"}},
			nat: true, rules: []string{"github.com:443"}},
		{name: "no internet but", internet: &no, n: &networkConfig{AllowOut: []string{"1.1.1.1"}}, nat: true, rules: []string{"1.1.1.1"}},
		{name: "deny some", n: &networkConfig{DenyOut: []string{"10.1.2.3/8", "192.0.2.7"}}, nat: true, rules: []string{"!10.0.0.0/8", "!192.0.2.7"}},
		{name: "deny some but", n: &networkConfig{DenyOut: []string{"10.0.0.0/8"}, AllowOut: []string{"10.1.0.0/16", "internal.example"}},
			nat: true, rules: []string{"!10.0.0.0/8", "10.1.0.0/16", "internal.example"}},
		{name: "allow only", n: &networkConfig{AllowOut: []string{"pypi.org"}}, nat: true, rules: []string{"pypi.org"}},
		{name: "deny a name", n: &networkConfig{DenyOut: []string{"evil.example"}}, err: "names are allowed only in allowOut"},
		{name: "deny IPv6", n: &networkConfig{DenyOut: []string{"::/0"}}, err: "IPv4 address or CIDR"},
		{name: "deny a port", n: &networkConfig{DenyOut: []string{"10.0.0.0/8:22"}}, err: "IPv4 address or CIDR"},
		{name: "deny in allowOut", n: &networkConfig{AllowOut: []string{" !10.0.0.0/8"}}, err: "goes in denyOut"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nat, rules, err := tc.n.egress(tc.internet)
			if tc.err != "" {
				if err == nil || !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v; want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || nat != tc.nat || !slices.Equal(rules, tc.rules) {
				t.Fatalf("= %v %q %v; want %v %q", nat, rules, err, tc.nat, tc.rules)
			}
		})
	}
}

// TestUpdateNetwork: PUT …/network replaces a running sandbox's egress
// (an allow-list, the internet, or nothing); what banger cannot do is
// refused by name, and a sandbox made without a network device says so.
func TestUpdateNetwork(t *testing.T) {
	f := newFixture(t)
	sb := f.create(t, f.key, map[string]any{})
	path := "/sandboxes/" + sb.SandboxID + "/network"
	for _, c := range []struct {
		body  map[string]any
		allow []string
		nat   *bool
	}{
		{map[string]any{"allowOut": []string{"pypi.org", "10.0.0.0/8"}}, []string{"pypi.org", "10.0.0.0/8"}, nil},
		{map[string]any{}, nil, ptr(true)},
		{map[string]any{"allow_internet_access": false}, nil, ptr(false)},
		{map[string]any{"denyOut": []string{"0.0.0.0/0"}}, nil, ptr(false)},
		{map[string]any{"denyOut": []string{"10.0.0.0/8"}, "allowOut": []string{"10.1.0.0/16"}}, []string{"!10.0.0.0/8", "10.1.0.0/16"}, nil},
	} {
		if code, body := f.do(t, "PUT", path, f.key, c.body); code != 204 {
			t.Fatalf("PUT %v: %d %s", c.body, code, body)
		}
		f.vms.mu.Lock()
		got := f.vms.sets[len(f.vms.sets)-1]
		f.vms.mu.Unlock()
		if !slices.Equal(got.Allow, c.allow) || (got.NAT == nil) != (c.nat == nil) || got.NAT != nil && *got.NAT != *c.nat {
			t.Errorf("PUT %v set %+v", c.body, got)
		}
	}
	for _, body := range []map[string]any{{"denyOut": []string{"github.com"}}, {"denyOut": []string{"fd00::/8"}}, {"egressProxy": map[string]any{"url": "http://p"}}, {"rules": map[string]any{"a.com": []any{}}}} {
		if code, _ := f.do(t, "PUT", path, f.key, body); code != 400 {
			t.Errorf("PUT %v: %d, want 400", body, code)
		}
	}
	if code, _ := f.do(t, "PUT", path, f.other, map[string]any{}); code != 404 {
		t.Errorf("another key's PUT: %d", code)
	}
	closed := f.create(t, f.key, map[string]any{"allow_internet_access": false})
	if code, body := f.do(t, "PUT", "/sandboxes/"+closed.SandboxID+"/network", f.key, map[string]any{}); code != 409 || !strings.Contains(body, "no network device") {
		t.Errorf("PUT on a sandbox without a NIC: %d %s", code, body)
	}
	f.vms.mu.Lock()
	n := len(f.vms.sets)
	f.vms.mu.Unlock()
	if n != 5 {
		t.Errorf("%d VM changes, want the 5 accepted", n)
	}
}

// TestPauseKinds: a pause keeps the memory (a suspend) unless asked not
// to (memory false, or autoPauseMemory false at the timeout: the VM
// stopped, booted again from its disk by a connect); onResume "reboot"
// of a suspended one boots it from its disk; a VM stopped outside the
// API is a paused sandbox.
func TestPauseKinds(t *testing.T) {
	f := newFixture(t)
	a := f.create(t, f.key, map[string]any{})
	b := f.create(t, f.key, map[string]any{"timeout": 5, "autoPause": true, "autoPauseMemory": false})
	steps := func() string {
		f.vms.mu.Lock()
		defer f.vms.mu.Unlock()
		out := strings.Join(f.vms.lifecycle, ", ")
		f.vms.lifecycle = nil
		return out
	}
	state := func(id string) string {
		code, body := f.do(t, "GET", "/sandboxes/"+id, f.key, nil)
		var d struct{ State string }
		if err := json.Unmarshal([]byte(body), &d); code != 200 || err != nil {
			t.Fatalf("get %s: %d %s", id, code, body)
		}
		return d.State
	}
	for _, c := range []struct {
		method, path string
		body         map[string]any
		want         string
	}{
		{"POST", "/sandboxes/" + a.SandboxID + "/pause", map[string]any{"memory": false}, "stop " + a.SandboxID},
		{"POST", "/sandboxes/" + a.SandboxID + "/connect", map[string]any{"timeout": 60}, "start " + a.SandboxID},
		{"POST", "/sandboxes/" + a.SandboxID + "/pause", map[string]any{"memory": true}, "suspend " + a.SandboxID},
		{"POST", "/sandboxes/" + a.SandboxID + "/connect", map[string]any{"timeout": 60, "memory": false}, "stop " + a.SandboxID + ", start " + a.SandboxID},
		{"POST", "/sandboxes/" + a.SandboxID + "/pause", nil, "suspend " + a.SandboxID},
		{"POST", "/v2/sandboxes/" + a.SandboxID + "/connect", map[string]any{"timeout": 60}, "resume " + a.SandboxID},
	} {
		if code, body := f.do(t, c.method, c.path, f.key, c.body); code >= 300 {
			t.Fatalf("%s %s: %d %s", c.method, c.path, code, body)
		}
		if got := steps(); got != c.want {
			t.Errorf("%s %s %v: %s, want %s", c.method, c.path, c.body, got, c.want)
		}
	}
	f.mu.Lock()
	f.now = f.now.Add(6 * time.Second)
	f.mu.Unlock()
	f.s.sweepOnce(context.Background())
	if got := steps(); got != "stop "+b.SandboxID {
		t.Errorf("the timeout of an autoPauseMemory false sandbox: %s", got)
	}
	if st := state(b.SandboxID); st != "paused" {
		t.Errorf("after its timeout: %s", st)
	}
	f.s.VMEvent(api.Event{Type: api.EventVMStopped, VM: a.SandboxID})
	if st := state(a.SandboxID); st != "paused" {
		t.Errorf("after `banger vm stop`: %s", st)
	}
	if code, _ := f.do(t, "POST", "/sandboxes/"+a.SandboxID+"/connect", f.key, map[string]any{"timeout": 60}); code != 201 || steps() != "start "+a.SandboxID {
		t.Errorf("connect after `banger vm stop`: %d", code)
	}
}

func TestEntryOf(t *testing.T) {
	for _, c := range []struct {
		e      proto.FSEntry
		target string
	}{
		{proto.FSEntry{Path: "/home/user/l", Type: "l", Link: "b.txt", Owner: "user", Group: "user"}, "/home/user/b.txt"},
		{proto.FSEntry{Path: "/home/user/l", Type: "l", Link: "../x/../y"}, "/home/y"},
		{proto.FSEntry{Path: "/l", Type: "l", Link: "/etc/os-release"}, "/etc/os-release"},
	} {
		info := entryOf(c.e)
		if info.GetSymlinkTarget() != c.target || info.GetOwner() != c.e.Owner || info.GetGroup() != c.e.Group {
			t.Errorf("entryOf(%+v) = target %q owner %q group %q", c.e, info.GetSymlinkTarget(), info.GetOwner(), info.GetGroup())
		}
	}
}

// TestPortProxy: a sandbox's port is reached through its agent, by the
// E2B headers or a <port>-<id> Host, with its traffic token unless it is
// public; what reaches the guest carries none of the API's secrets.
func TestPortProxy(t *testing.T) {
	f := newFixture(t)
	var seen http.Header
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		fmt.Fprintf(w, "guest says %s", r.URL.Path)
	}))
	defer web.Close()
	f.vms.guest.web = strings.TrimPrefix(web.URL, "http://")
	sb := f.create(t, f.key, map[string]any{})
	pub := f.create(t, f.key, map[string]any{"network": map[string]any{"allowPublicTraffic": true}})
	for _, c := range []struct {
		name string
		hdr  []string
		code int
	}{
		{"headers and token", []string{"E2b-Sandbox-Id", sb.SandboxID, "E2b-Sandbox-Port", "8080", "E2b-Traffic-Access-Token", *sb.TrafficAccessToken, "X-Access-Token", sb.EnvdAccessToken}, 200},
		{"a host and token", []string{"Host", "8080-" + sb.SandboxID + ".localhost", "E2b-Traffic-Access-Token", *sb.TrafficAccessToken}, 200},
		{"no token", []string{"E2b-Sandbox-Id", sb.SandboxID, "E2b-Sandbox-Port", "8080"}, 401},
		{"another sandbox's token", []string{"E2b-Sandbox-Id", sb.SandboxID, "E2b-Sandbox-Port", "8080", "E2b-Traffic-Access-Token", *pub.TrafficAccessToken}, 401},
		{"a public sandbox", []string{"E2b-Sandbox-Id", pub.SandboxID, "E2b-Sandbox-Port", "8080"}, 200},
	} {
		seen = nil
		code, body := f.do(t, "GET", "/app", "", nil, c.hdr...)
		if code != c.code {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.code)
			continue
		}
		if code != 200 {
			continue
		}
		if body != "guest says /app" {
			t.Errorf("%s: %q", c.name, body)
		}
		for _, h := range []string{"X-Access-Token", "E2b-Traffic-Access-Token", "E2b-Sandbox-Id", "X-Api-Key"} {
			if seen.Get(h) != "" {
				t.Errorf("%s: the guest got %s", c.name, h)
			}
		}
	}
	f.vms.guest.mu.Lock()
	defer f.vms.guest.mu.Unlock()
	for _, a := range f.vms.guest.dialed {
		if a != "127.0.0.1:8080" {
			t.Errorf("dialed %q in the guest", a)
		}
	}
}

// TestReconcile: what a daemon ending in the middle of a snapshot left
// is cleared before the API serves again (the sandbox's way-station
// checkpoint, a snapshot VM no snapshot names), records whose VMs went
// are dropped, and what is whole is kept: a snapshot's VM and its
// checkpoint, a sandbox's own checkpoints.
func TestReconcile(t *testing.T) {
	f := newFixture(t)
	sb := f.create(t, f.key, map[string]any{})
	ghost := f.create(t, f.key, map[string]any{})
	code, body := f.do(t, "POST", "/sandboxes/"+sb.SandboxID+"/snapshots", f.key, map[string]any{"name": "kept"})
	if code != 201 {
		t.Fatalf("snapshot: %d %s", code, body)
	}
	f.vms.mu.Lock()
	f.vms.checkpoints[sb.SandboxID] = map[string]bool{"e2b-left": true, "mine": true}
	orphan := newSnapshotID()
	f.vms.vms[orphan] = api.VMCreateParams{Creator: "e2b:ci"}
	f.vms.states[orphan] = api.VMStopped
	delete(f.vms.vms, ghost.SandboxID)
	f.vms.mu.Unlock()
	f.s.reconcile(context.Background())
	f.vms.mu.Lock()
	defer f.vms.mu.Unlock()
	if cps := f.vms.checkpoints[sb.SandboxID]; len(cps) != 1 || !cps["mine"] {
		t.Errorf("the sandbox's checkpoints after: %v", cps)
	}
	if _, ok := f.vms.vms[orphan]; ok {
		t.Error("a snapshot VM no snapshot names was kept")
	}
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if len(f.s.snapshots) != 1 {
		t.Fatalf("snapshots after: %v", f.s.snapshots)
	}
	for _, sn := range f.s.snapshots {
		if _, ok := f.vms.vms[sn.VM]; !ok || len(f.vms.checkpoints[sn.VM]) != 1 {
			t.Errorf("the snapshot's VM or its checkpoint went: %v", f.vms.checkpoints[sn.VM])
		}
	}
	if _, ok := f.s.sandboxes[ghost.SandboxID]; ok {
		t.Error("a sandbox whose VM is gone is still recorded")
	}
}
