package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/blobcache"
	"github.com/bangerdev/banger/internal/bootcheck"
	"github.com/bangerdev/banger/internal/crashpoint"
	"github.com/bangerdev/banger/internal/e2b"
	"github.com/bangerdev/banger/internal/egress"
	"github.com/bangerdev/banger/internal/events"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/image"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/kvm"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/peer"
	"github.com/bangerdev/banger/internal/rootfs"
	"github.com/bangerdev/banger/internal/sshkey"
	"github.com/bangerdev/banger/internal/stats"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vm"
	"github.com/bangerdev/banger/internal/vmdns"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/firecracker"
	"github.com/bangerdev/banger/internal/vmm/qemu"
	"github.com/bangerdev/banger/internal/workspace"
)

// services are the wired services; the method table (rpcMethods) is a
// function of them.
type services struct {
	daemon    *Daemon // its own methods: version, info, config, shutdown
	ops       *operations
	images    *image.Service
	kernels   *kernel.Service
	bootCheck *bootcheck.Service
	vms       *vm.Service
	files     *vm.Files
	creates   *creator
	stats     *stats.Service
	workspace *workspace.Service
	egress    *egress.Service
	dns       *vmdns.Server // nil without a bridge network
	events    *events.Bus
	e2b       *e2b.Service
}

// wire builds the services layer by layer, each from what the layers
// below it returned, so none can be used before it exists: content
// (images, kernels), the network, the VMs, the services over the VMs
// (stats, workspaces, creates), then the operations of them all. What a
// service needs of another it gets as a small interface it declares (or
// one function); a step that spans two (placing a workspace after a
// create, an image's templates going with it) is orchestrated here, or is
// a subscriber of the event bus, not a call from either.
func (d *Daemon) wire(opts Options) (*services, error) {
	if d.cfg.FirecrackerJailer != "" && os.Geteuid() != 0 {
		// The jailer chroots and changes user: root's alone. Refused
		// rather than dropped, so no one believes their VMs jailed.
		return nil, fmt.Errorf("firecracker_jailer is set, and the jailer needs root, which this daemon (uid %d) is not: an installed daemon runs Firecracker as its owner already; remove firecracker_jailer from config.toml, or run the daemon as root", os.Geteuid())
	}
	// What callers other than root and the daemon's own user may have it
	// touch on the host (an installed daemon shared with --group).
	host := peer.Host{Self: uint32(os.Geteuid())}
	bus := events.New(events.Config{Store: d.store, Log: d.log.With("service", "events")})
	c, err := d.wireContent(opts, host, bus)
	if err != nil {
		return nil, err
	}
	n, err := d.wireNetwork(bus)
	if err != nil {
		return nil, err
	}
	m, err := d.wireVMs(opts, c, n, bus)
	if err != nil {
		return nil, err
	}
	p, err := d.wirePeers(opts, host, m)
	if err != nil {
		return nil, err
	}
	ops := d.wireOperations(opts, c, m, p, bus)
	e2bAPI, err := d.wireE2B(m, p, bus)
	if err != nil {
		return nil, err
	}
	return &services{daemon: d, ops: ops, images: c.images, kernels: c.kernels, bootCheck: m.bootCheck,
		vms: m.vms, files: m.vms.Files(), creates: p.creates, stats: p.stats, workspace: p.workspace, egress: n.egress, dns: n.dns, events: bus,
		e2b: e2bAPI}, nil
}

// content is the first layer: images and kernels.
type content struct {
	images  *image.Service
	kernels *kernel.Service
}

// kernel finds a kernel by name or ID.
func (c content) kernel(ctx context.Context, name string) (api.Kernel, error) {
	return c.kernels.Show(ctx, api.KernelRefParams{Name: name})
}

func (d *Daemon) wireContent(opts Options, host peer.Host, bus *events.Bus) (content, error) {
	images, err := image.New(image.Config{
		HostFile:    host.File,
		Credentials: host.Credentials,
		Store:       d.store,
		Cache:       blobcache.New(d.layout.OCICacheDir()),
		Dir:         filepath.Join(d.layout.StateDir, "images"),
		Log:         d.log.With("service", "image"),
		Limits:      rootfs.Limits{MaxBytes: d.cfg.Images.MaxUnpackedSize, MaxEntries: d.cfg.Images.MaxEntries},
		Lifetime:    d.lifetime,
		Retention:   opts.OpRetention,
		UsedBy: func(ctx context.Context, tx *store.Tx, id string) (int, int, error) {
			return tx.VMsUsing(ctx, "image_id", id)
		},
		Event: bus.Publish,
	})
	if err != nil {
		return content{}, fmt.Errorf("starting the image service: %w", err)
	}
	kernels, err := kernel.New(kernel.Config{
		HostFile:    host.File,
		Credentials: host.Credentials,
		Store:       d.store,
		Dir:         filepath.Join(d.layout.StateDir, "kernels"),
		Log:         d.log.With("service", "kernel"),
		Lifetime:    d.lifetime,
		Retention:   opts.OpRetention,
		UsedBy: func(ctx context.Context, tx *store.Tx, id string) (int, error) {
			running, other, err := tx.VMsUsing(ctx, "kernel_id", id)
			return running + other, err
		},
	})
	if err != nil {
		return content{}, fmt.Errorf("starting the kernel service: %w", err)
	}
	return content{images: images, kernels: kernels}, nil
}

// network is the second layer: the .vm names, the egress log, and the
// bridge network with its DNS server where there is one.
type network struct {
	names    vm.Names
	egress   *egress.Service
	br       *bridge   // nil without a bridge network
	bridge   vm.Bridge // br's, or a nil interface (never a nil *hostnet.Network)
	dns      *vmdns.Server
	noBridge string // why there is none
}

func (d *Daemon) wireNetwork(bus *events.Bus) (network, error) {
	prefix := d.cfg.Network.CIDR.Masked()
	n := network{names: vm.Names{Store: d.store, Prefix: prefix, Gateway: hostnet.GatewayOf(prefix)}}
	n.egress = d.egressService(n.names, bus.Publish)
	n.br, n.noBridge = d.bridgeNetwork(n.names, n.egress)
	if n.br != nil {
		n.bridge, n.dns = n.br.net, n.br.dns
	}
	if d.cfg.Network.Mode == api.NetworkBridge && n.bridge == nil {
		return n, fmt.Errorf("network.mode is bridge in config.toml, but %s; set it to user", n.noBridge)
	}
	return n, nil
}

// policyChanged tells the DNS server a running VM's new allow-list.
func (n network) policyChanged(ctx context.Context, vmID string, allow allowlist.List) {
	if n.dns != nil {
		n.dns.Reallow(ctx, vmID, allow)
	}
}

// removed forgets a deleted VM in the egress log and the DNS server.
func (n network) removed(vmID string) {
	n.egress.Forget(vmID)
	if n.dns != nil {
		n.dns.Forget(vmID)
	}
}

// machines is the third layer: the VMs, and the boot test.
type machines struct {
	vms       *vm.Service
	bootCheck *bootcheck.Service
	driver    vmm.Driver
	verbs     *opstate.Registry[api.VM] // long VM verbs shown as operations
}

func (d *Daemon) wireVMs(opts Options, c content, n network, bus *events.Bus) (machines, error) {
	agentBin := opts.AgentBin
	if agentBin == "" {
		if exe, err := os.Executable(); err == nil {
			agentBin = filepath.Join(filepath.Dir(exe), "banger-agent")
		}
	}
	m := machines{driver: d.driver(), verbs: opstate.NewRegistry[api.VM](opts.OpRetention, time.Now)}
	m.bootCheck = &bootcheck.Service{Image: c.images.Resolve, Kernel: c.kernel, Driver: m.driver, Agent: agentBin,
		WorkDir: filepath.Join(d.layout.RuntimeDir, "vms"), Log: d.log.With("service", "boot-test")}
	sshDir := filepath.Join(d.layout.StateDir, "ssh")
	key, err := sshkey.LoadOrCreate(filepath.Join(sshDir, "id_ed25519"))
	if err != nil {
		return m, fmt.Errorf("loading banger's SSH key: %w", err)
	}
	emulated := kvm.KVMUsable() != nil
	m.vms = vm.New(vm.Config{
		Store:       d.store,
		StateDir:    filepath.Join(d.layout.StateDir, "vms"),
		RunDir:      filepath.Join(d.layout.RuntimeDir, "vms"),
		Log:         d.log.With("service", "vm"),
		Lifetime:    d.lifetime,
		Images:      vmImages{c.images},
		Kernel:      c.kernel,
		Driver:      m.driver,
		Agent:       agentBin,
		Emulated:    emulated,
		LogMaxBytes: d.cfg.LogMaxSize,
		Defaults: vm.Defaults{
			Image: d.cfg.DefaultImageName, Kernel: d.cfg.DefaultKernel, VCPU: d.cfg.VMDefaults.VCPU,
			MemoryMiB: d.cfg.VMDefaults.MemoryMiB, DiskSize: d.cfg.VMDefaults.DiskSize, Network: d.cfg.Network.Mode,
			NAT: d.cfg.Network.NAT, Allow: d.cfg.Network.Allow, Init: d.cfg.VMDefaults.Init,
			NoShare: !d.cfg.VMDefaults.Share,
		},
		SSH: vm.SSHConfig{Key: key.PublicKey(), IdentityFile: filepath.Join(sshDir, "id_ed25519"),
			KnownHostsFile: filepath.Join(sshDir, "known_hosts")},
		Bridge:        n.bridge,
		NoBridge:      n.noBridge,
		PolicyChanged: n.policyChanged,
		Event:         bus.Publish,
		Removed:       n.removed,
		TemplateDir:   filepath.Join(d.layout.StateDir, "templates"),
		ForkCarries:   []string{workspace.StateFile},
		Track:         trackIn(m.verbs, d.lifetime),
		ColdCreate:    !d.cfg.WarmCreate,
	})
	// An image's templates go with it.
	bus.On(api.EventImageDeleted, func(api.Event) { m.vms.DropTemplates(d.lifetime) })
	if err := m.vms.Reconcile(d.lifetime); err != nil {
		return m, fmt.Errorf("taking back running VMs: %w", err)
	}
	if n.br != nil && n.br.net.Ours() {
		d.bridgeUp(n.br, n.br.net.Gateway()) // the bridge a previous daemon made
	}
	return m, nil
}

// peers is the fourth layer: the services over the VMs.
type peers struct {
	stats     *stats.Service
	workspace *workspace.Service
	creates   *creator
}

func (d *Daemon) wirePeers(opts Options, host peer.Host, m machines) (peers, error) {
	_, suspends := m.driver.(vmm.Snapshotter)
	st := stats.New(stats.Config{
		VMs: statsVMs{vms: m.vms, autoStop: d.cfg.AutoStopStaleAfter, idle: d.cfg.AutoIdleAction},
		// A driver that cannot save a VM's memory stops idle VMs instead.
		Suspends: suspends,
		Forwards: storeForwards{d.store},
		Self:     host.Self,
		Interval: d.cfg.StatsPollInterval,
		Log:      d.log.With("service", "stats"),
	})
	ws := workspace.New(workspace.Config{
		HostTree: host.Tree,
		VMs:      workspaceVMs{m.vms},
		MaxBytes: d.cfg.Workspace.MaxBytes, MaxEntries: d.cfg.Workspace.MaxEntries,
		Log: d.log.With("service", "workspace"),
	})
	if list, err := m.vms.List(d.lifetime); err == nil {
		names := make([]string, len(list.VMs))
		for i, v := range list.VMs {
			names[i] = v.Name
		}
		if err := ws.Reconcile(d.lifetime, names); err != nil {
			return peers{}, fmt.Errorf("finishing workspaces: %w", err)
		}
	}
	creates := &creator{vms: m.vms, place: ws.Prepare, session: st.Session, hostTree: host.Tree,
		ops: opstate.NewRegistry[api.VM](opts.OpRetention, time.Now), lifetime: d.lifetime}
	return peers{stats: st, workspace: ws, creates: creates}, nil
}

// wireOperations is the last layer: every service's operations, each
// failure an event and each phase a crash point.
func (d *Daemon) wireOperations(opts Options, c content, m machines, p peers, bus *events.Bus) *operations {
	ops := &operations{log: d.log, sources: append([]opSource{c.images.Operations(), c.kernels.Operations(), p.creates.ops, m.verbs}, opts.extraOps...)}
	for _, src := range ops.sources {
		src.OnFailed(func(st opstate.Status) { bus.Publish(opFailed(st)) })
		// Every phase is a crash point of the reliability campaign (a
		// no-op outside a crashpoints build).
		src.OnPhase(crashpoint.At)
	}
	return ops
}

// trackIn shows a VM service verb as an operation of reg while it runs.
func trackIn(reg *opstate.Registry[api.VM], lifetime context.Context) func(kind, target string) (context.Context, func(string), func(error)) {
	return func(kind, target string) (context.Context, func(string), func(error)) {
		op := reg.Insert(lifetime, kind, target)
		return op.Context(), op.SetPhase, func(err error) { op.Finish(api.VM{}, err) }
	}
}

// opFailed is the event of a failed operation: what it was on, why, and
// which it was (for `banger ops show`).
func opFailed(st opstate.Status) api.Event {
	e := api.Event{Type: api.EventOperationFailed, Time: st.Finished, Detail: st.Kind + " " + st.ID}
	if st.Err != nil {
		e.Reason = st.Err.Error()
	}
	switch st.Kind {
	case api.OpKindVMCreate:
		e.VM = st.Target
	case api.OpKindImagePull, api.OpKindImageImport:
		e.Image = st.Target
	default:
		e.Detail += " " + st.Target
	}
	return e
}

// driver picks the VMM: the configured one, or under "auto" Firecracker
// where it can run and QEMU elsewhere.
func (d *Daemon) driver() vmm.Driver {
	fc := &firecracker.Driver{Binary: d.cfg.FirecrackerBin}
	if d.cfg.FirecrackerJailer != "" {
		fc.Jailer = &firecracker.Jailer{Binary: d.cfg.FirecrackerJailer, UID: d.cfg.JailerUID, GID: d.cfg.JailerGID,
			BaseDir: filepath.Join(d.layout.StateDir, "jail")}
	}
	q := &qemu.Driver{Log: d.log.With("vmm", "qemu")}
	switch d.cfg.VMM {
	case "firecracker":
		return fc
	case "qemu":
		return q
	}
	if fc.Available() == nil {
		return fc
	}
	return q
}
