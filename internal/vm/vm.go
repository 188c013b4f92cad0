// Package vm is the VM service: a VM's record, its work disk, its VMM
// and the agent connection to its guest, through create, start, stop,
// delete, exec and logs, saved states and templates; and, when the daemon
// starts, taking back the VMs an earlier daemon left running.
//
// Service is a thin front with the API's verbs. Beside it, each job is a
// type of its own, with its own lock and maps: records (records, leases,
// the places of a VM's files, each VM's lock), vmms (running and adopting
// VMMs, taps, logs), identity (a guest's identity and known_hosts), saved
// (suspend, checkpoints, fork), templates (warm creates) and tracker (long
// verbs as operations).
package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/hostnet"
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
	NoShare   bool     // new VMs share no memory pages (vm_defaults.share = false)
}

// Config wires a Service.
type Config struct {
	Store    store.Access
	StateDir string // one directory per VM ID: its work disk
	RunDir   string // one directory per VM ID: sockets, console log
	Log      *slog.Logger
	Lifetime context.Context
	Images   Images
	// Kernel finds a kernel by name or ID.
	Kernel   func(ctx context.Context, name string) (api.Kernel, error)
	Driver   vmm.Driver
	Agent    string // the banger-agent binary, /init of the initramfs
	Emulated bool   // guests run under TCG: their kernel gets the host's TSC rate
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
	// ForkCarries names the files of a VM's state directory its forks'
	// copies inherit (a workspace's state: a copy's project comes back
	// with workspace pull and export as the original's would).
	ForkCarries []string
	ColdCreate  bool
	// Track shows a long verb (suspend, resume, fork, checkpoint,
	// rollback, image warm) as an operation until done; nil shows none.
	// Canceling ctx (`banger ops cancel`) ends the verb.
	Track func(kind, target string) (ctx context.Context, phase func(string), done func(error))
	// Event is told each VM's lifecycle: created, started, stopped (and
	// why), deleted; nil tells no one.
	Event func(api.Event)
}

// Images is what the service asks of the image service.
type Images interface {
	// Resolve finds an image by name or ID (api.ErrNotFound).
	Resolve(ctx context.Context, nameOrID string) (api.Image, error)
	// Pull pulls a reference Resolve does not know, for create, and
	// waits for it.
	Pull(ctx context.Context, ref string) (api.Image, error)
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

// Service manages VMs: the API's verbs, each over the types that do
// the work.
type Service struct {
	cfg   *Config
	recs  *records
	vmms  *vmms
	keys  *identity
	saved *saved
	tmpl  *templates
	ops   *tracker
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
	c := &cfg
	keys := &identity{knownHosts: cfg.SSH.KnownHostsFile}
	recs := &records{cfg: c, keys: keys}
	vmms := &vmms{cfg: c, recs: recs, keys: keys}
	return &Service{
		cfg: c, recs: recs, vmms: vmms, keys: keys,
		saved: &saved{cfg: c, recs: recs, vmms: vmms},
		tmpl:  &templates{cfg: c, recs: recs, vmms: vmms},
		ops:   &tracker{start: cfg.Track},
	}
}

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

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
