// Package vm is the VM service: a VM's record, its work disk, its VMM
// and the agent connection to its guest, through create, start, stop,
// delete, exec and logs; and, when the daemon starts, taking back the VMs
// an earlier daemon left running.
package vm

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/crashpoint"
	"github.com/bangerdev/banger/internal/diskspace"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/logcap"
	"github.com/bangerdev/banger/internal/proc"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// Defaults fill what a create leaves out.
type Defaults struct {
	Image     string
	Kernel    string
	VCPU      int
	MemoryMiB int
	DiskSize  int64
	Network   string
	NAT       bool
	Allow     []string // the allow-list of new bridge VMs that set neither NAT nor one
	Init      string   // api.InitAgent, InitImage or InitAuto ("": auto)
}

// Config wires a Service.
type Config struct {
	Store    store.Access
	StateDir string // one directory per VM ID: its work disk
	RunDir   string // one directory per VM ID: sockets, console log
	Log      *slog.Logger
	Lifetime context.Context
	// Image finds an image by name or ID; PullImage pulls a reference
	// that Image does not know, for create.
	Image     func(ctx context.Context, nameOrID string) (api.Image, error)
	PullImage func(ctx context.Context, ref string) (api.Image, error)
	Kernel    func(ctx context.Context, name string) (api.Kernel, error)
	Driver    vmm.Driver
	Agent     string // the banger-agent binary, /init of the initramfs
	Emulated  bool   // guests run under TCG: their kernel gets the host's TSC rate
	// BootTimeout bounds the wait for a booting guest's agent (default
	// 5m: a TCG boot on a busy host is slow).
	BootTimeout time.Duration
	// LogMaxBytes caps a VM's logs on the host in all (its console, its
	// VMM's output, each with its rotated half; default 16 MiB).
	LogMaxBytes int64
	Defaults    Defaults
	SSH         SSHConfig
	// Bridge is the root daemon's bridge network; nil when there is none,
	// and NoBridge then says why, for the error a bridge VM gets.
	Bridge   Bridge
	NoBridge string
	// PolicyChanged is told a running bridge VM's new allow-list once its
	// firewall has it (the DNS server gives back what its names still
	// resolve to); Removed the ID of a VM that is gone.
	PolicyChanged func(ctx context.Context, vmID string, allow allowlist.List)
	Removed       func(vmID string)
	// TemplateDir holds the templates creates restore from where the
	// driver saves VMs ("": none); ColdCreate boots every VM instead
	// (warm_create = false), `image warm` still making templates.
	TemplateDir string
	ColdCreate  bool
	// Track shows a long verb (suspend, resume, fork, checkpoint,
	// rollback, image warm) as an operation until done; nil shows none.
	// Canceling ctx (`banger ops cancel`) ends the verb.
	Track func(kind, target string) (ctx context.Context, phase func(string), done func(error))
	// Event is told each VM's lifecycle: created, started, stopped (and
	// why), deleted; nil tells no one.
	Event func(api.Event)
}

// Bridge is the host's side of the bridge network.
type Bridge interface {
	Prefix() netip.Prefix
	Gateway() netip.Addr
	Range() (first, last netip.Addr)
	// Attach makes the VM's tap, its anti-spoofing rules (its MAC and
	// address only) and its policy's, returning the tap's name; Detach
	// undoes it, whatever is left; SetPolicy replaces a running VM's
	// policy at once.
	Attach(a hostnet.Attachment) (string, error)
	SetPolicy(a hostnet.Attachment) error
	Detach(vmID string) error
	// Sync makes the running VMs' rules again and removes every tap and
	// rule of any other.
	Sync(running []hostnet.Attachment) ([]string, error)
}

// SSHConfig is banger's own SSH identity for its VMs.
type SSHConfig struct {
	Key            ssh.PublicKey // authorised in every guest at boot
	IdentityFile   string        // its private half, for OpenSSH
	KnownHostsFile string        // the guests' host keys, kept by the service
}

// Service manages VMs.
type Service struct {
	cfg Config

	mu    sync.Mutex
	live  map[string]*live       // running VMs by ID
	locks map[string]*sync.Mutex // one per VM name: its lifecycle verbs queue

	knownMu sync.Mutex // the known_hosts file

	templates map[string]*sync.RWMutex // by template name, under mu
	failed    map[string]failure       // template builds that failed, by name, under mu
	busy      map[string]string        // tracked verbs running, by target, under mu
	sums      vmm.Sums                 // the agent binary's digest, for its initramfs
	noModules map[string]bool          // bundles whose modules disk failed, by directory, under mu
}

// live is a running VM's VMM and the link to its agent.
type live struct {
	inst vmm.Instance
	// exited is closed once the record says the VM stopped.
	exited chan struct{}

	mu     sync.Mutex
	client *client.Client
	reason string // why it is stopping, set by whoever asked
	// suspending: its VMM ends because its state was saved; the record
	// says suspended, not stopped.
	suspending bool
}

// New makes a service; Reconcile takes back VMs that still run.
func New(cfg Config) *Service {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = DefaultLogMaxBytes
	}
	if cfg.BootTimeout <= 0 {
		cfg.BootTimeout = 5 * time.Minute
	}
	return &Service{
		cfg:   cfg,
		live:  map[string]*live{},
		locks: map[string]*sync.Mutex{},
	}
}

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// lock serializes the lifecycle verbs of one VM.
func (s *Service) lock(name string) func() {
	m := s.mutex(name)
	m.Lock()
	return m.Unlock
}

// tryLock takes name's lock only if no verb holds it.
func (s *Service) tryLock(name string) (func(), bool) {
	m := s.mutex(name)
	if !m.TryLock() {
		return nil, false
	}
	return m.Unlock, true
}

func (s *Service) mutex(name string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.locks[name]
	if !ok {
		m = &sync.Mutex{}
		s.locks[name] = m
	}
	return m
}

func (s *Service) runDir(id string) string   { return filepath.Join(s.cfg.RunDir, id) }
func (s *Service) stateDir(id string) string { return filepath.Join(s.cfg.StateDir, id) }
func (s *Service) workDisk(id string) string { return filepath.Join(s.stateDir(id), "work.ext4") }

// find reads a VM's record; a missing one is api.ErrNotFound.
func (s *Service) find(ctx context.Context, name string) (store.VM, error) {
	if name == "" {
		return store.VM{}, fmt.Errorf("%w: a VM name is required (see `banger vm list`)", api.ErrInvalidArgument)
	}
	var rec store.VM
	err := s.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		rec, err = tx.VM(ctx, name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return store.VM{}, fmt.Errorf("vm %q: %w (see `banger vm list`)", name, api.ErrNotFound)
	}
	return rec, err
}

// locked takes the lock of the VM named name and reads its record;
// unlock releases the lock.
func (s *Service) locked(ctx context.Context, name string) (rec store.VM, unlock func(), err error) {
	unlock = s.lock(name)
	if rec, err = s.find(ctx, name); err != nil {
		unlock()
		return store.VM{}, nil, err
	}
	return rec, unlock, nil
}

// running reads the record of the running VM named name and its agent
// link: api.ErrNotFound or api.ErrNotRunning otherwise.
func (s *Service) running(ctx context.Context, name string) (store.VM, *client.Client, error) {
	rec, err := s.find(ctx, name)
	if err != nil {
		return store.VM{}, nil, err
	}
	c, err := s.client(ctx, rec)
	return rec, c, err
}

func (s *Service) put(ctx context.Context, rec store.VM) error {
	return s.cfg.Store.Update(ctx, func(tx *store.Tx) error { return tx.PutVM(ctx, rec) })
}

// Creation is a VM recorded as creating, whose phases Build runs.
type Creation struct {
	rec     store.VM
	noStart bool
	cold    bool   // boot it, even where a template would do
	init    string // as asked: api.InitAgent, InitImage or InitAuto
}

// Name is the VM's name, generated when the params left it out.
func (c Creation) Name() string { return c.rec.Name }

// Create validates p and records the VM as creating, before any work: a
// taken name is api.ErrAlreadyExists, a bad value api.ErrInvalidArgument.
// Build then runs its phases (the daemon runs them as the vm.create
// operation). A workspace is the caller's to place once the VM is up.
func (s *Service) Create(ctx context.Context, p api.VMCreateParams) (Creation, error) {
	rec, err := s.newRecord(p)
	if err != nil {
		return Creation{}, err
	}
	err = s.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		if err := s.insert(ctx, tx, &rec); err != nil {
			return err
		}
		if rec.Network != api.NetworkBridge {
			return nil
		}
		first, last := s.cfg.Bridge.Range()
		var err error
		rec.Addr, err = tx.AllocateLease(ctx, rec.ID, first, last)
		if errors.Is(err, store.ErrExhausted) {
			return fmt.Errorf("%w: the bridge network %s has no free address; delete a VM (`banger vm prune`) or widen network.cidr in config.toml", api.ErrInvalidArgument, s.cfg.Bridge.Prefix())
		}
		return err
	})
	if errors.Is(err, store.ErrAlreadyExists) {
		return Creation{}, fmt.Errorf("vm %q %w; pick another --name, or delete it (`banger vm delete %s`)", rec.Name, api.ErrAlreadyExists, rec.Name)
	}
	if err != nil {
		return Creation{}, err
	}
	init := cmp.Or(p.Init, s.cfg.Defaults.Init, api.InitAuto)
	return Creation{rec: rec, noStart: p.NoStart, cold: p.Cold, init: init}, nil
}

// newRecord is the record p asks for, defaults filled and checked.
func (s *Service) newRecord(p api.VMCreateParams) (store.VM, error) {
	d := s.cfg.Defaults
	rec := store.VM{
		Name: p.Name, ID: newID(), State: api.VMCreating, Image: p.Image, Kernel: p.Kernel,
		VCPU: p.VCPU, MemoryMiB: p.MemoryMiB, DiskSize: p.DiskSize, Network: p.Network,
		MAC: newMAC(), VMM: s.cfg.Driver.Name(), CreatedAt: time.Now(),
	}
	for _, f := range []struct {
		v   *string
		def string
	}{{&rec.Image, d.Image}, {&rec.Kernel, d.Kernel}, {&rec.Network, d.Network}} {
		if *f.v == "" {
			*f.v = f.def
		}
	}
	for _, f := range []struct {
		v   *int
		def int
	}{{&rec.VCPU, d.VCPU}, {&rec.MemoryMiB, d.MemoryMiB}} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if rec.DiskSize == 0 {
		rec.DiskSize = d.DiskSize
	}
	rec.Isolate = p.Isolate
	switch p.Init {
	case "", api.InitAgent, api.InitImage, api.InitAuto:
	default:
		return store.VM{}, fmt.Errorf("%w: --init %q: use %s (banger's agent as PID 1), %s (the image's systemd) or %s", api.ErrInvalidArgument, p.Init, api.InitAgent, api.InitImage, api.InitAuto)
	}
	given, err := applyEgress(&rec, p.Allow, p.NAT)
	switch {
	case err != nil:
		return store.VM{}, err
	case given:
	case rec.Network == api.NetworkBridge && len(d.Allow) > 0:
		rec.NAT, rec.Allow = true, d.Allow
	default:
		rec.NAT = d.NAT
	}
	if err := canonAllow(&rec); err != nil {
		return store.VM{}, err
	}
	if err := validate(rec); err != nil {
		return store.VM{}, err
	}
	if rec.Network == api.NetworkBridge && s.cfg.Bridge == nil {
		return store.VM{}, fmt.Errorf("%w: --network bridge: %s; use --network user", api.ErrInvalidArgument, s.cfg.NoBridge)
	}
	if err := s.cfg.Driver.Available(); err != nil {
		return store.VM{}, fmt.Errorf("%w: %v", api.ErrInvalidArgument, err)
	}
	return rec, nil
}

// Build runs a creation's phases under the VM's lock, reporting each to
// phase. A failure keeps the VM, failed, with its console log for `vm
// logs`; a canceled build leaves nothing.
func (s *Service) Build(ctx context.Context, phase func(string), c Creation) (api.VM, error) {
	unlock := s.lock(c.rec.Name)
	defer unlock()
	start := time.Now()
	v, err := s.create(ctx, phase, c)
	if err != nil {
		s.cfg.Log.Warn("vm create failed", "vm", c.rec.Name, "err", err)
		return api.VM{}, err
	}
	s.cfg.Log.Info("vm created", "vm", c.rec.Name, "state", v.State, "took", time.Since(start).Round(time.Millisecond))
	s.event(api.EventVMCreated, v.Name, v.Image, "")
	if v.State == api.VMRunning {
		s.event(api.EventVMStarted, v.Name, v.Image, "")
	}
	return v, nil
}

// insert adds rec, named now if it has no name.
func (s *Service) insert(ctx context.Context, tx *store.Tx, rec *store.VM) error {
	if rec.Name != "" {
		return tx.InsertVM(ctx, *rec)
	}
	for range 20 {
		rec.Name = newName()
		if err := tx.InsertVM(ctx, *rec); !errors.Is(err, store.ErrAlreadyExists) {
			return err
		}
	}
	return errors.New("generating a free VM name: 20 tries taken; pass --name")
}

func validate(rec store.VM) error {
	switch {
	case rec.Name != "" && !validName.MatchString(rec.Name):
		return fmt.Errorf("%w: VM name %q: use lower-case letters, digits and '-', starting with a letter or digit, at most 64", api.ErrInvalidArgument, rec.Name)
	case rec.Image == "":
		return fmt.Errorf("%w: no image: pass --image, or set default_image_name in config.toml", api.ErrInvalidArgument)
	case rec.VCPU < 1 || rec.VCPU > 255:
		return fmt.Errorf("%w: --cpus %d: use 1 to 255", api.ErrInvalidArgument, rec.VCPU)
	case rec.MemoryMiB < 128:
		return fmt.Errorf("%w: --memory %d MiB: a guest needs at least 128 MiB", api.ErrInvalidArgument, rec.MemoryMiB)
	case rec.DiskSize < 64<<20:
		return fmt.Errorf("%w: --disk %d bytes: the work disk needs at least 64M", api.ErrInvalidArgument, rec.DiskSize)
	case rec.Network != api.NetworkBridge && rec.Network != api.NetworkUser && rec.Network != api.NetworkNone:
		return fmt.Errorf("%w: --network %q: use %s, %s or %s", api.ErrInvalidArgument, rec.Network, api.NetworkBridge, api.NetworkUser, api.NetworkNone)
	case len(rec.Allow) > 0 && rec.Network != api.NetworkBridge:
		return fmt.Errorf("%w: --allow needs the bridge network: on the %s network the guest's connections leave %s, where no firewall tells VMs apart; use --network bridge (a root daemon), or --nat for every destination",
			api.ErrInvalidArgument, rec.Network, map[bool]string{true: "nowhere", false: "from the VMM's own sockets"}[rec.Network == api.NetworkNone])
	case rec.NAT && rec.Network == api.NetworkNone:
		return fmt.Errorf("%w: --nat needs a network; --network none has none", api.ErrInvalidArgument)
	}
	if rec.AutoStop != "" && rec.AutoStop != "0" {
		if d, err := time.ParseDuration(rec.AutoStop); err != nil || d <= 0 {
			return fmt.Errorf("%w: --auto-stop %q: use a duration such as 30m, 0 for never, or default", api.ErrInvalidArgument, rec.AutoStop)
		}
	}
	return nil
}

// applyEgress sets rec's way out from a call's --allow and --nat, and
// says whether either was given: a list implies NAT, --nat (either way)
// replaces a list.
func applyEgress(rec *store.VM, allow []string, nat *bool) (bool, error) {
	switch {
	case len(allow) > 0:
		if nat != nil && !*nat {
			return true, fmt.Errorf("%w: --allow opens the way out to what it names; --nat=false closes it: pass one", api.ErrInvalidArgument)
		}
		rec.NAT, rec.Allow = true, allow
	case nat != nil:
		rec.NAT, rec.Allow = *nat, nil
	default:
		return false, nil
	}
	return true, nil
}

// canonAllow puts a record's allow-list in canonical form.
func canonAllow(rec *store.VM) error {
	if len(rec.Allow) == 0 {
		rec.Allow = nil
		return nil
	}
	l, err := allowlist.ParseList(rec.Allow)
	if err != nil {
		return fmt.Errorf("%w: --allow: %w", api.ErrInvalidArgument, err)
	}
	rec.Allow = l.Strings()
	return nil
}

// egressOf is what rec may reach beyond the host (api.VM.Egress).
func egressOf(rec store.VM) string {
	switch {
	case rec.Network == api.NetworkNone:
		return api.EgressNone
	case rec.NAT && len(rec.Allow) > 0:
		return api.EgressAllowList
	case rec.NAT:
		return api.EgressNAT
	}
	return api.EgressSandbox
}

// attachment is a bridge VM as its firewall sees it.
func attachment(rec store.VM) (hostnet.Attachment, error) {
	mac, err := net.ParseMAC(rec.MAC)
	if err != nil {
		return hostnet.Attachment{}, fmt.Errorf("vm %s: MAC %q: %w", rec.Name, rec.MAC, err)
	}
	allow, err := allowlist.ParseList(rec.Allow)
	if err != nil {
		return hostnet.Attachment{}, fmt.Errorf("vm %s: its allow-list: %w", rec.Name, err)
	}
	return hostnet.Attachment{ID: rec.ID, MAC: mac, Addr: rec.Addr,
		Policy: hostnet.Policy{NAT: rec.NAT, Allow: allow, Isolate: rec.Isolate}}, nil
}

// create runs the phases of vm.create. A failure keeps the VM, failed,
// with its console log for `vm logs`; a canceled create leaves nothing,
// and nor does one that ran out of space: it has nothing to read, its
// record may not fit, and the retry once space is freed takes the name.
func (s *Service) create(ctx context.Context, phase func(string), cr Creation) (api.VM, error) {
	rec, noStart := cr.rec, cr.noStart
	fail := func(err error) (api.VM, error) {
		err = diskspace.Explain(err)
		if ctx.Err() != nil || errors.Is(err, api.ErrNoSpace) {
			if rerr := s.remove(context.WithoutCancel(ctx), rec); rerr != nil {
				s.cfg.Log.Error("removing a create that did not finish", "vm", rec.Name, "err", rerr)
			}
			return api.VM{}, err
		}
		rec.State, rec.Reason, rec.StoppedAt, rec.PID, rec.PIDStart = api.VMFailed, err.Error(), time.Now(), 0, 0
		if perr := s.put(context.WithoutCancel(ctx), rec); perr != nil {
			s.cfg.Log.Error("recording a failed create", "vm", rec.Name, "err", perr)
		}
		return api.VM{}, err
	}
	phase("resolving image")
	img, err := s.cfg.Image(ctx, rec.Image)
	if errors.Is(err, api.ErrNotFound) && s.cfg.PullImage != nil {
		phase("pulling image")
		img, err = s.cfg.PullImage(ctx, rec.Image)
	}
	if err != nil {
		return fail(fmt.Errorf("image %s: %w", rec.Image, err))
	}
	rec.Image, rec.ImageID = img.Name, img.ID
	if rec.Init, err = initOf(cr.init, img); err != nil {
		// Refused as asked, before anything was made: nothing is kept.
		if rerr := s.remove(context.WithoutCancel(ctx), rec); rerr != nil {
			s.cfg.Log.Error("removing a refused VM", "vm", rec.Name, "err", rerr)
		}
		return api.VM{}, err
	}
	phase("resolving kernel")
	k, err := s.cfg.Kernel(ctx, rec.Kernel)
	if err != nil {
		return fail(err)
	}
	rec.Kernel, rec.KernelID = k.Name, k.ID
	// Templates hold agent-init VMs: a booted systemd keeps the
	// identity it started with (journal, hostname) where a restore
	// would give the copy another.
	if !noStart && !cr.cold && s.warm() && rec.Init == "" {
		warm, err := s.createWarm(ctx, phase, rec, img, k)
		if err == nil {
			return s.toAPI(warm), nil
		}
		if ctx.Err() != nil {
			return fail(err)
		}
		// The VM is still owed a start: booted, from a fresh disk.
		s.cfg.Log.Warn("starting from a template failed; booting instead", "vm", rec.Name, "err", err)
		_ = os.Remove(s.workDisk(rec.ID))
	}
	phase("preparing work disk")
	if err := boot.WorkDisk(ctx, s.workDisk(rec.ID), rec.DiskSize); err != nil {
		return fail(err)
	}
	if noStart {
		rec.State = api.VMStopped
		if err := s.put(ctx, rec); err != nil {
			return fail(err)
		}
		return s.toAPI(rec), nil
	}
	if err := s.put(ctx, rec); err != nil {
		return fail(err)
	}
	rec, err = s.boot(ctx, phase, rec, img, k)
	if err != nil {
		return fail(err)
	}
	return s.toAPI(rec), nil
}

// boot starts rec's VMM and waits for its agent; on success the record
// says running. A failed boot leaves no process behind.
func (s *Service) boot(ctx context.Context, phase func(string), rec store.VM, img api.Image, k api.Kernel) (store.VM, error) {
	phase("network")
	tap, err := s.attach(rec)
	if err != nil {
		return rec, err
	}
	detach := func() { s.detach(rec) }
	spec, err := s.spec(rec, img, k, tap)
	if err != nil {
		detach()
		return rec, err
	}
	phase("booting")
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		detach()
		return rec, err
	}
	in, err := s.cfg.Driver.Start(ctx, spec)
	if err != nil {
		detach()
		return rec, err
	}
	crashpoint.At("vm.boot", "vmm started")
	kill := func() {
		_ = in.Process().Kill()
		<-in.Done()
		detach()
	}
	id := in.ID()
	rec.PID, rec.PIDStart, rec.StartedAt, rec.StoppedAt, rec.Reason = id.PID, id.StartTime, time.Now(), time.Time{}, ""
	// Recorded before waiting, so a daemon that dies now can find and
	// end the process.
	if err := s.put(ctx, rec); err != nil {
		kill()
		return rec, err
	}
	phase("waiting for the agent")
	wctx, cancel := context.WithTimeout(ctx, s.cfg.BootTimeout)
	defer cancel()
	c, err := boot.WaitAgent(wctx, in.DialAgent, in.Done())
	if err != nil {
		kill()
		return rec, fmt.Errorf("booting: %w; %s", err, boot.Failure(in, s.cfg.Driver.Name()))
	}
	crashpoint.At("vm.boot", "agent answered")
	if s.cfg.SSH.KnownHostsFile != "" {
		if err := s.learnHostKey(ctx, rec.Name, c); err != nil {
			c.Close()
			kill()
			return rec, err
		}
	}
	rec.State = api.VMRunning
	if err := s.put(ctx, rec); err != nil {
		c.Close()
		kill()
		return rec, err
	}
	s.watch(rec, in, c)
	return rec, nil
}

// initOf is what a create asking for init runs as PID 1 with img: the
// record's Init ("" the agent, api.InitImage the image's systemd).
func initOf(init string, img api.Image) (string, error) {
	switch {
	case init == api.InitImage && img.Init == "":
		return "", fmt.Errorf("%w: --init image: image %s has no systemd (banger looks for it at /sbin/init, /lib/systemd/systemd and /usr/lib/systemd/systemd when it builds the image; one built by an older banger was not looked at: delete and pull it again); use --init agent", api.ErrInvalidArgument, img.Name)
	case init == api.InitImage, init == api.InitAuto && img.Init != "":
		return api.InitImage, nil
	}
	return "", nil
}

// attach gives a bridge VM its tap; other VMs need nothing of the host.
func (s *Service) attach(rec store.VM) (string, error) {
	if rec.Network != api.NetworkBridge {
		return "", nil
	}
	if s.cfg.Bridge == nil {
		return "", fmt.Errorf("vm %s uses the bridge network: %s", rec.Name, s.cfg.NoBridge)
	}
	if !rec.Addr.IsValid() {
		return "", fmt.Errorf("vm %s has no address lease; delete it and create it again", rec.Name)
	}
	a, err := attachment(rec)
	if err != nil {
		return "", err
	}
	return s.cfg.Bridge.Attach(a)
}

// detach removes a bridge VM's tap and rules, once its VMM is gone.
func (s *Service) detach(rec store.VM) {
	if rec.Network != api.NetworkBridge || s.cfg.Bridge == nil {
		return
	}
	if err := s.cfg.Bridge.Detach(rec.ID); err != nil {
		s.cfg.Log.Error("removing a VM's tap and rules", "vm", rec.Name, "err", err)
	}
}

// spec is how the driver runs rec, on tap if it has one.
func (s *Service) spec(rec store.VM, img api.Image, k api.Kernel, tap string) (vmm.Spec, error) {
	initrd, err := boot.CachedInitramfs(k.Dir, s.cfg.Agent, &s.sums)
	if err != nil {
		return vmm.Spec{}, err
	}
	params, nic, err := s.bootParams(rec, tap)
	if err != nil {
		return vmm.Spec{}, err
	}
	if rec.Init == api.InitImage {
		if params.Init = img.Init; params.Init == "" {
			return vmm.Spec{}, fmt.Errorf("vm %s runs its image's init, and image %s has no systemd; recreate it with --init agent", rec.Name, img.Name)
		}
	}
	return vmm.Spec{
		Kernel: bundle.Vmlinux(k.Dir), Initrd: initrd, Cmdline: boot.Cmdline(params, s.cfg.Emulated),
		MemoryMiB: rec.MemoryMiB, VCPU: rec.VCPU, Dir: s.runDir(rec.ID), NIC: nic,
		Disks: s.disks(img, k, s.workDisk(rec.ID)),
	}, nil
}

// disks are a VM's block devices: the image, its work disk, and its
// kernel's module tree when the bundle has one (built on first use;
// without it the guest has the initramfs's modules alone).
func (s *Service) disks(img api.Image, k api.Kernel, work string) []vmm.Disk {
	d := []vmm.Disk{{Path: img.Rootfs, ReadOnly: true, Serial: proto.RootSerial}, {Path: work, Serial: proto.WorkSerial}}
	// A bundle whose disk could not be made is not tried again on every
	// start (a build reads the whole tree); its VMs keep one disk set
	// until the daemon restarts.
	s.mu.Lock()
	failed := s.noModules[k.Dir]
	s.mu.Unlock()
	if failed {
		return d
	}
	mods, err := boot.ModulesDisk(context.Background(), k.Dir, k.Version)
	if err != nil {
		s.cfg.Log.Warn("VMs of this kernel get the initramfs's modules alone until the daemon restarts", "kernel", k.Name, "err", err)
		s.mu.Lock()
		if s.noModules == nil {
			s.noModules = map[string]bool{}
		}
		s.noModules[k.Dir] = true
		s.mu.Unlock()
	}
	if mods != "" {
		d = append(d, vmm.Disk{Path: mods, ReadOnly: true, Serial: proto.ModulesSerial})
	}
	return d
}

// bootParams are what rec's agent is told (at boot, or after a restore)
// and its NIC, on tap if it has one.
func (s *Service) bootParams(rec store.VM, tap string) (proto.BootParams, *vmm.NIC, error) {
	params := proto.BootParams{Hostname: rec.Name, MachineID: rec.ID}
	if s.cfg.SSH.Key != nil {
		params.SSHKeys = []ssh.PublicKey{s.cfg.SSH.Key}
	}
	var nic *vmm.NIC
	if rec.Network != api.NetworkNone {
		mac, err := net.ParseMAC(rec.MAC)
		if err != nil {
			return params, nil, fmt.Errorf("vm %s: MAC %q: %w", rec.Name, rec.MAC, err)
		}
		if rec.Network == api.NetworkBridge {
			gw := s.cfg.Bridge.Gateway()
			nic = &vmm.NIC{Tap: tap, MAC: rec.MAC}
			params.Net = &proto.NetParams{MAC: mac, Address: netip.PrefixFrom(rec.Addr, s.cfg.Bridge.Prefix().Bits()),
				Gateway: gw, DNS: []netip.Addr{gw}}
		} else {
			nic = &vmm.NIC{User: true, MAC: rec.MAC, Outbound: rec.NAT}
			params.Net = &proto.NetParams{MAC: mac, Address: netip.MustParsePrefix(userAddr + "/24"),
				Gateway: netip.MustParseAddr("10.0.2.2"), DNS: []netip.Addr{netip.MustParseAddr("10.0.2.3")}}
		}
	}
	return params, nic, nil
}

// userAddr is a guest's address on QEMU's user-mode network.
const userAddr = "10.0.2.15"

// watch tracks a running VM until its VMM exits, then records it
// stopped, with the reason whoever stopped it gave, or the exit's.
func (s *Service) watch(rec store.VM, in vmm.Instance, c *client.Client) {
	l := &live{inst: in, client: c, exited: make(chan struct{})}
	s.mu.Lock()
	s.live[rec.ID] = l
	s.mu.Unlock()
	go s.capLogs(rec, in)
	go func() {
		<-in.Done()
		l.mu.Lock()
		reason, suspended := l.reason, l.suspending
		if l.client != nil {
			l.client.Close()
		}
		l.mu.Unlock()
		state := api.VMStopped
		if suspended {
			state = api.VMSuspended
		}
		if reason == "" {
			reason = exitReason(rec.Name, rec.VMM, in.ExitState())
		}
		// Before the record says stopped: a start that follows makes a
		// new tap, which this must not remove.
		s.detach(rec)
		ctx := context.WithoutCancel(s.cfg.Lifetime)
		err := s.cfg.Store.Update(ctx, func(tx *store.Tx) error {
			cur, err := tx.VM(ctx, rec.Name)
			if err != nil || cur.ID != rec.ID {
				return err // deleted meanwhile
			}
			cur.State, cur.Reason, cur.PID, cur.PIDStart, cur.StoppedAt = state, reason, 0, 0, time.Now()
			return tx.PutVM(ctx, cur)
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.cfg.Log.Error("recording a stopped VM", "vm", rec.Name, "err", err)
		}
		s.mu.Lock()
		delete(s.live, rec.ID)
		s.mu.Unlock()
		if suspended {
			s.event(api.EventVMSuspended, rec.Name, rec.Image, reason)
		} else {
			s.cfg.Log.Info("vm stopped", "vm", rec.Name, "reason", reason)
			s.event(api.EventVMStopped, rec.Name, rec.Image, reason)
		}
		close(l.exited)
	}()
}

// exitReason says why a VM stopped that no one asked to stop, from its
// VMM's exit: a VMM exits 0 when its guest powers off, anything else is
// a crash. An adopted VMM's exit is not ours to read.
func exitReason(name, vmmName string, st *os.ProcessState) string {
	switch {
	case st == nil:
		return "the VM stopped on its own (powered off from inside, or its VMM died; see `banger vm logs " + name + "`)"
	case st.Success():
		return "the guest powered off"
	}
	return fmt.Sprintf("its VMM (%s) crashed: %s; see `banger vm logs %s`", vmmName, st, name)
}

// event tells cfg.Event of a VM's lifecycle.
func (s *Service) event(typ, name, image, reason string) {
	if s.cfg.Event != nil {
		s.cfg.Event(api.Event{Type: typ, VM: name, Image: image, Reason: reason})
	}
}

// DefaultLogMaxBytes is a VM's console cap by default (log_max_size).
const DefaultLogMaxBytes = 16 << 20

// logSweep is how often a running VM's logs are measured: a guest that
// floods its console overshoots the cap by at most what it writes in
// that time.
const logSweep = 100 * time.Millisecond

// capLogs keeps in's logs within the cap while it runs.
func (s *Service) capLogs(rec store.VM, in vmm.Instance) {
	t := time.NewTicker(logSweep)
	defer t.Stop()
	// The cap is for the VM in all: the console gets three quarters of
	// it, the VMM's own output (QEMU's errors: little) the rest, unless
	// both are one file.
	type capped struct {
		path string
		max  int64
	}
	logs := []capped{{in.ConsoleLog(), s.cfg.LogMaxBytes}}
	if v := in.VMMLog(); v != "" && v != in.ConsoleLog() {
		logs = []capped{{in.ConsoleLog(), s.cfg.LogMaxBytes / 4 * 3}, {v, s.cfg.LogMaxBytes / 4}}
	}
	for {
		select {
		case <-in.Done():
			return
		case <-t.C:
		}
		for i := 0; i < len(logs); i++ {
			f := logs[i]
			cut, err := logcap.Rotate(f.path, f.max)
			switch {
			case errors.Is(err, logcap.ErrNotAppending):
				// A VMM started by an older banger: its log stays uncut
				// until the VM restarts.
				s.cfg.Log.Warn("a VM's log cannot be capped; restart the VM to cap it", "vm", rec.Name, "file", f.path)
				logs = slices.Delete(logs, i, i+1)
				i--
			case err != nil:
				s.cfg.Log.Warn("capping a VM's log", "vm", rec.Name, "file", f.path, "err", err)
			case cut:
				s.cfg.Log.Debug("rotated a VM's log", "vm", rec.Name, "file", f.path)
			}
		}
	}
}

// client is the agent link of a running VM, dialed again when a daemon
// restart or a broken link left none.
func (s *Service) client(ctx context.Context, rec store.VM) (*client.Client, error) {
	s.mu.Lock()
	l := s.live[rec.ID]
	s.mu.Unlock()
	if l == nil || rec.State != api.VMRunning {
		return nil, fmt.Errorf("vm %s is %s: %w; start it with `banger vm start %s`", rec.Name, rec.State, api.ErrNotRunning, rec.Name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client != nil {
		select {
		case <-l.client.Done():
			l.client = nil
		default:
			return l.client, nil
		}
	}
	wctx, cancel := context.WithTimeout(ctx, min(time.Minute, s.cfg.BootTimeout))
	defer cancel()
	c, err := boot.WaitAgent(wctx, l.inst.DialAgent, l.inst.Done())
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// The VM runs and its agent did not answer in time.
		return nil, fmt.Errorf("reaching the agent of vm %s: %w: %w; see `banger vm logs %s`", rec.Name, api.ErrUnresponsive, err, rec.Name)
	}
	if errors.Is(err, proto.ErrOldAgent) {
		return nil, fmt.Errorf("vm %s runs the agent it booted with: %w; restart it to give it this release's agent (`banger vm restart %s`)", rec.Name, err, rec.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("reaching the agent of vm %s: %w", rec.Name, err)
	}
	l.client = c
	return c, nil
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newMAC is a random address in QEMU's locally administered range.
func newMAC() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}

// nameWords are what generated names are made of: adjectives, nouns.
func nameWords() (adjectives, nouns []string) {
	return []string{"amber", "brisk", "calm", "dusty", "eager", "fuzzy", "gentle", "happy", "icy", "jolly", "keen", "lucky", "mellow", "nimble", "odd", "plucky", "quiet", "rusty", "sunny", "tidy", "urban", "vivid", "witty", "young", "zesty"},
		[]string{"otter", "badger", "comet", "delta", "ember", "falcon", "gecko", "harbor", "island", "jaguar", "koala", "lagoon", "meadow", "nebula", "orchid", "pebble", "quartz", "raven", "summit", "tundra", "umber", "valley", "walrus", "yak", "zephyr"}
}

// newName is a readable name, as Docker makes them.
func newName() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	adjectives, nouns := nameWords()
	return adjectives[int(b[0])%len(adjectives)] + "-" + nouns[int(b[1])%len(nouns)]
}

// adoptedID identifies a recorded VMM for Reconcile.
func adoptedID(rec store.VM) proc.ID { return proc.ID{PID: rec.PID, StartTime: rec.PIDStart} }
