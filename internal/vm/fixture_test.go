package vm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/sshkey"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

// The VM service against vmmtest's driver: real stand-in VMM processes
// (pids, signals, exits, adoption) and the real agent server over pipes,
// so every lifecycle verb and failure path runs without QEMU. Booting
// itself is test/vmtest's and the smoke suite's to prove.

// logsOf is what a vm.logs call sends, chunks and answer together.
func logsOf(t *testing.T, f *fixture, p api.VMLogsParams) string {
	t.Helper()
	var b strings.Builder
	r, err := f.svc.Logs(context.Background(), p, func(r api.VMLogsResult) error { b.WriteString(r.Console); return nil })
	if err != nil {
		t.Fatalf("logs %+v: %v", p, err)
	}
	return b.String() + r.Console
}

// fixture is a VM service on a temporary store and directories.
type fixture struct {
	t      *testing.T
	dir    string
	db     string
	drv    *vmmtest.Driver
	bridge *fakeBridge
	svc    *Service
	st     *store.Store
	cfg    Config
}

func newFixture(t *testing.T, change ...func(*Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, dir: dir, db: filepath.Join(dir, "banger.db"), drv: &vmmtest.Driver{}}
	t.Cleanup(f.drv.Close)
	agentBin := filepath.Join(dir, "banger-agent")
	if err := os.WriteFile(agentBin, []byte("not really an agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	kernelDir := filepath.Join(dir, "kernel") // no modules: all built in
	rootfs := filepath.Join(dir, "rootfs.ext4")
	if err := os.MkdirAll(kernelDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rootfs, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	key, err := sshkey.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = Config{
		StateDir: filepath.Join(dir, "state"),
		RunDir:   filepath.Join(dir, "run"),
		Lifetime: context.Background(),
		Images: imageFunc(func(_ context.Context, name string) (api.Image, error) {
			if name != "debian" && name != "sha256:img" {
				return api.Image{}, fmt.Errorf("image %q: %w", name, api.ErrNotFound)
			}
			return api.Image{Name: "debian", ID: "sha256:img", Rootfs: rootfs}, nil
		}),
		Kernel: func(_ context.Context, name string) (api.Kernel, error) {
			return api.Kernel{Name: "6.1", ID: "sha256:k", Dir: kernelDir}, nil
		},
		Driver:      f.drv,
		Agent:       agentBin,
		BootTimeout: 3 * time.Second,
		Defaults:    Defaults{Image: "debian", Kernel: "default", VCPU: 1, MemoryMiB: 256, DiskSize: 64 << 20, Network: api.NetworkNone},
		SSH: SSHConfig{Key: key.PublicKey(), IdentityFile: filepath.Join(dir, "id"),
			KnownHostsFile: filepath.Join(dir, "known_hosts")},
	}
	for _, c := range change {
		c(&f.cfg)
	}
	if b, ok := f.cfg.Bridge.(*fakeBridge); ok {
		f.bridge = b
	}
	f.open()
	return f
}

// open starts a service (again, as a restarted daemon) on the store.
func (f *fixture) open() {
	f.t.Helper()
	st, err := store.Open(context.Background(), f.db)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { st.Close() })
	f.st = st
	cfg := f.cfg
	cfg.Store = st
	cfg.Log = slog.New(slog.DiscardHandler)
	f.svc = New(cfg)
}

// create runs a whole create, as the daemon's vm.create operation does.
func (f *fixture) create(p api.VMCreateParams) (api.VM, error) {
	f.t.Helper()
	c, err := f.svc.Create(context.Background(), p)
	if err != nil {
		return api.VM{}, err
	}
	return f.svc.Build(context.Background(), func(string) {}, c)
}

func (f *fixture) mustCreate(name string) api.VM {
	f.t.Helper()
	v, err := f.create(api.VMCreateParams{Name: name})
	if err != nil {
		f.t.Fatalf("create %s: %v", name, err)
	}
	return v
}

func (f *fixture) show(name string) api.VM {
	f.t.Helper()
	v, err := f.svc.Show(context.Background(), api.VMRefParams{Name: name})
	if err != nil {
		f.t.Fatalf("show %s: %v", name, err)
	}
	return v
}

// waitState waits for the record to say state.
func (f *fixture) waitState(name, state string) api.VM {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v := f.show(name)
		if v.State == state {
			return v
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("vm %s is %s (%s), want %s", name, v.State, v.Reason, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// waitGone waits for a stand-in VMM to have exited (and been reaped).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the VMM (pid %d) still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (f *fixture) exec(name string, args ...string) (string, int, error) {
	var out strings.Builder
	r, err := f.svc.Exec(context.Background(), api.VMExecParams{Name: name, Args: args}, func(ev api.VMExecEvent) error {
		out.Write(ev.Data)
		return nil
	})
	return out.String(), r.ExitCode, err
}

// dropLink breaks the VM's agent link and waits until the service sees
// it broken: its next call dials again, meeting the guest's fault.
func (f *fixture) dropLink(id string, g *vmmtest.Guest) {
	l := f.svc.vmms.of(id)
	l.mu.Lock()
	old := l.client
	l.mu.Unlock()
	g.DropLinks()
	<-old.Done()
}

func knownHosts(t *testing.T, f *fixture) string {
	t.Helper()
	b, err := os.ReadFile(f.cfg.SSH.KnownHostsFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// fakeBridge stands in for hostnet: it records what the service asks.
type fakeBridge struct {
	prefix netip.Prefix

	mu       sync.Mutex
	attaches map[string]string
	synced   [][]string
	fail     error // SetPolicy's answer
}

func policyString(p hostnet.Policy) string {
	return fmt.Sprintf("nat=%v allow=%v isolate=%v", p.NAT, p.Allow.Strings(), p.Isolate)
}

// record is a VM's record in the store.
func (f *fixture) record(name string) store.VM {
	f.t.Helper()
	rec, err := f.svc.recs.find(context.Background(), name)
	if err != nil {
		f.t.Fatal(err)
	}
	return rec
}

func sshAuthorized(k ssh.PublicKey) []byte { return ssh.MarshalAuthorizedKey(k) }

func withTemplates(c *Config) { c.TemplateDir = filepath.Join(filepath.Dir(c.StateDir), "templates") }

// countingHandler passes every record to fn.
type countingHandler struct{ fn func(slog.Record) }

func (b *fakeBridge) Prefix() netip.Prefix { return b.prefix }

func (b *fakeBridge) Gateway() netip.Addr { return b.prefix.Addr().Next() }

func (b *fakeBridge) Range() (netip.Addr, netip.Addr) {
	return b.Gateway().Next(), netip.MustParseAddr("10.77.0.6")
}

func (b *fakeBridge) Attach(a hostnet.Attachment) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.attaches == nil {
		b.attaches = map[string]string{}
	}
	b.attaches[a.ID] = fmt.Sprintf("%s %s %s", a.ID, a.Addr, policyString(a.Policy))
	return "tap-" + a.ID[:8], nil
}

func (b *fakeBridge) SetPolicy(a hostnet.Attachment) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	b.attaches[a.ID] = fmt.Sprintf("%s %s %s", a.ID, a.Addr, policyString(a.Policy))
	return nil
}

// policy is what the firewall holds for the VM id; "" when not attached.
func (b *fakeBridge) policy(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, p, _ := strings.Cut(b.attaches[id], " ")
	_, p, _ = strings.Cut(p, " ")
	return p
}

func (b *fakeBridge) Detach(vmID string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.attaches, vmID)
	return nil
}

func (b *fakeBridge) Sync(running []hostnet.Attachment) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for _, a := range running {
		ids = append(ids, a.ID)
	}
	b.synced = append(b.synced, ids)
	return nil, nil
}

func (b *fakeBridge) attached() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := slices.Collect(func(yield func(string) bool) {
		for _, v := range b.attaches {
			if !yield(v) {
				return
			}
		}
	})
	slices.Sort(out)
	return out
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(_ context.Context, r slog.Record) error { h.fn(r); return nil }

func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h countingHandler) WithGroup(string) slog.Handler { return h }

// imageFunc is an image service of one function: Resolve, and a Pull
// that finds no more than Resolve does.
type imageFunc func(ctx context.Context, nameOrID string) (api.Image, error)

func (f imageFunc) Resolve(ctx context.Context, nameOrID string) (api.Image, error) {
	return f(ctx, nameOrID)
}

func (f imageFunc) Pull(ctx context.Context, ref string) (api.Image, error) { return f(ctx, ref) }
