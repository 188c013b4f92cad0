package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/blobcache"
	"github.com/bangerdev/banger/internal/bootcheck"
	"github.com/bangerdev/banger/internal/crashpoint"
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

// services are the wired services; the handler table (rpcHandlers) is a
// function of them.
type services struct {
	daemon    *Daemon // its own methods: version, info, config, shutdown
	ops       *operations
	images    *image.Service
	kernels   *kernel.Service
	bootCheck *bootcheck.Service
	vms       *vm.Service
	creates   *creator
	stats     *stats.Service
	workspace *workspace.Service
	egress    *egress.Service
	dns       *vmdns.Server // nil without a bridge network
	events    *events.Bus
}

// wire builds the services in dependency order into local values, each
// from those below it, so none can be used before it exists. What a
// service needs of another it gets as function-typed fields or a small
// interface; a step that spans two (placing a workspace after a create)
// is orchestrated here, not by either.
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
	// The VM service's, once it exists (before any request): an image's
	// templates go with it.
	var dropTemplates func(context.Context)
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
		Event: func(e api.Event) {
			bus.Publish(e)
			if e.Type == api.EventImageDeleted && dropTemplates != nil {
				dropTemplates(d.lifetime)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("starting the image service: %w", err)
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
		return nil, fmt.Errorf("starting the kernel service: %w", err)
	}
	kernelByName := func(ctx context.Context, name string) (api.Kernel, error) {
		return kernels.Show(ctx, api.KernelRefParams{Name: name})
	}

	agentBin := opts.AgentBin
	if agentBin == "" {
		if exe, err := os.Executable(); err == nil {
			agentBin = filepath.Join(filepath.Dir(exe), "banger-agent")
		}
	}
	driver := d.driver()
	bootCheck := &bootcheck.Service{
		Image:   images.Resolve,
		Kernel:  kernelByName,
		Driver:  driver,
		Agent:   agentBin,
		WorkDir: filepath.Join(d.layout.RuntimeDir, "vms"),
		Log:     d.log.With("service", "boot-test"),
	}

	sshDir := filepath.Join(d.layout.StateDir, "ssh")
	key, err := sshkey.LoadOrCreate(filepath.Join(sshDir, "id_ed25519"))
	if err != nil {
		return nil, fmt.Errorf("loading banger's SSH key: %w", err)
	}
	prefix := d.cfg.Network.CIDR.Masked()
	names := vm.Names{Store: d.store, Prefix: prefix, Gateway: hostnet.GatewayOf(prefix)}
	eg := d.egressService(names, bus.Publish)
	br, noBridge := d.bridgeNetwork(names, eg)
	var bridge vm.Bridge // a nil *hostnet.Network must stay a nil interface
	var dns *vmdns.Server
	policyChanged := func(context.Context, string, allowlist.List) {}
	if br != nil {
		bridge, dns, policyChanged = br.net, br.dns, br.dns.Reallow
	}
	if d.cfg.Network.Mode == api.NetworkBridge && bridge == nil {
		return nil, fmt.Errorf("network.mode is bridge in config.toml, but %s; set it to user", noBridge)
	}
	// Long VM verbs (suspend, fork, checkpoints, image warm) shown as
	// operations while they run.
	verbs := opstate.NewRegistry[api.VM](opts.OpRetention, time.Now)
	emulated := kvm.KVMUsable() != nil
	if emulated {
		// Emulated guests' RAM without transparent huge pages (this
		// process's children inherit it): a restore writes the saved
		// pages all over the guest's RAM, and each first write to a
		// 2 MiB region had the host clear a whole huge page, most of a
		// restore's time here (370 ms of QEMU's system time against
		// 120 ms without). TCG gains nothing from them; KVM guests keep
		// them.
		if err := unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
			d.log.Warn("guests keep transparent huge pages", "err", err)
		}
	}
	vms := vm.New(vm.Config{
		Store:       d.store,
		StateDir:    filepath.Join(d.layout.StateDir, "vms"),
		RunDir:      filepath.Join(d.layout.RuntimeDir, "vms"),
		Log:         d.log.With("service", "vm"),
		Lifetime:    d.lifetime,
		Image:       images.Resolve,
		PullImage:   pullAndWait(images.Pull),
		Kernel:      kernelByName,
		Driver:      driver,
		Agent:       agentBin,
		Emulated:    emulated,
		LogMaxBytes: d.cfg.LogMaxSize,
		Defaults: vm.Defaults{
			Image: d.cfg.DefaultImageName, Kernel: d.cfg.DefaultKernel, VCPU: d.cfg.VMDefaults.VCPU,
			MemoryMiB: d.cfg.VMDefaults.MemoryMiB, DiskSize: d.cfg.VMDefaults.DiskSize, Network: d.cfg.Network.Mode,
			NAT: d.cfg.Network.NAT, Allow: d.cfg.Network.Allow, Init: d.cfg.VMDefaults.Init,
		},
		SSH: vm.SSHConfig{Key: key.PublicKey(), IdentityFile: filepath.Join(sshDir, "id_ed25519"),
			KnownHostsFile: filepath.Join(sshDir, "known_hosts")},
		Bridge:        bridge,
		NoBridge:      noBridge,
		PolicyChanged: policyChanged,
		Event:         bus.Publish,
		Removed: func(id string) {
			eg.Forget(id)
			if dns != nil {
				dns.Forget(id)
			}
		},
		TemplateDir: filepath.Join(d.layout.StateDir, "templates"),
		Track:       trackIn(verbs, d.lifetime),
		ColdCreate:  !d.cfg.WarmCreate,
	})
	dropTemplates = vms.DropTemplates
	if err := vms.Reconcile(d.lifetime); err != nil {
		return nil, fmt.Errorf("taking back running VMs: %w", err)
	}
	if br != nil && br.net.Ours() {
		d.bridgeUp(br, br.net.Gateway()) // the bridge a previous daemon made
	}

	targets := statsTargets{list: vms.List, show: vms.Show, autoStop: d.cfg.AutoStopStaleAfter, idle: d.cfg.AutoIdleAction}
	st := stats.New(stats.Config{
		Running:  targets.Running,
		Target:   targets.Target,
		Agent:    agentAs(vms.Agent, func(c *client.Client) stats.Agent { return c }),
		AutoStop: vms.AutoStop,
		// A driver that cannot save a VM's memory stops idle VMs instead.
		AutoSuspend: autoSuspend(vms, driver),
		Suspended:   targets.Suspended,
		Wake:        agentAs(vms.Awake, func(c *client.Client) stats.Agent { return c }),
		Forwards:    storeForwards{d.store},
		Self:        host.Self,
		Interval:    d.cfg.StatsPollInterval,
		Log:         d.log.With("service", "stats"),
	})

	ws := workspace.New(workspace.Config{
		HostTree: host.Tree,
		Agent:    agentAs(vms.Awake, func(c *client.Client) workspace.Agent { return c }),
		StateDir: vms.StateDirOf,
		Placed:   vms.SetWorkspace,
		MaxBytes: d.cfg.Workspace.MaxBytes, MaxEntries: d.cfg.Workspace.MaxEntries,
		Log: d.log.With("service", "workspace"),
	})

	if list, err := vms.List(d.lifetime); err == nil {
		names := make([]string, len(list.VMs))
		for i, v := range list.VMs {
			names[i] = v.Name
		}
		if err := ws.Reconcile(d.lifetime, names); err != nil {
			return nil, fmt.Errorf("finishing workspaces: %w", err)
		}
	}

	creates := &creator{
		create: vms.Create, build: vms.Build, show: vms.Show, place: ws.Prepare, session: st.Session, hostTree: host.Tree,
		ops: opstate.NewRegistry[api.VM](opts.OpRetention, time.Now), lifetime: d.lifetime,
	}
	ops := &operations{log: d.log, sources: append([]opSource{images.Operations(), kernels.Operations(), creates.ops, verbs}, opts.extraOps...)}
	for _, src := range ops.sources {
		src.OnFailed(func(st opstate.Status) { bus.Publish(opFailed(st)) })
		// Every phase is a crash point of the reliability campaign (a
		// no-op outside a crashpoints build).
		src.OnPhase(crashpoint.At)
	}
	return &services{daemon: d, ops: ops, images: images, kernels: kernels, bootCheck: bootCheck,
		vms: vms, creates: creates, stats: st, workspace: ws, egress: eg, dns: dns, events: bus}, nil
}

// trackIn shows a VM service verb as an operation of reg while it runs.
func trackIn(reg *opstate.Registry[api.VM], lifetime context.Context) func(kind, target string) (context.Context, func(string), func(error)) {
	return func(kind, target string) (context.Context, func(string), func(error)) {
		op := reg.Insert(lifetime, kind, target)
		return op.Context(), op.SetPhase, func(err error) { op.Finish(api.VM{}, err) }
	}
}

// autoSuspend is the VM service's AutoSuspend where the driver can save
// a VM's memory, nil (idle VMs are stopped) where it cannot.
func autoSuspend(vms *vm.Service, driver vmm.Driver) func(context.Context, string, string) (bool, error) {
	if _, ok := driver.(vmm.Snapshotter); !ok {
		return nil
	}
	return vms.AutoSuspend
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

// agentAs gives a service the VM service's agent links as the small
// interface I it declares; as is the conversion (checked by the
// compiler), and a failed lookup stays a nil interface.
func agentAs[I any](agent func(context.Context, string) (*client.Client, error), as func(*client.Client) I) func(context.Context, string) (I, error) {
	return func(ctx context.Context, name string) (I, error) {
		c, err := agent(ctx, name)
		if err != nil {
			var none I
			return none, err
		}
		return as(c), nil
	}
}

// pullAndWait pulls an image and waits for it, for a create whose image
// is not here yet.
func pullAndWait(pull func(context.Context, api.ImagePullParams) (image.Started, error)) func(context.Context, string) (api.Image, error) {
	return func(ctx context.Context, ref string) (api.Image, error) {
		op, err := pull(ctx, api.ImagePullParams{Ref: ref})
		if err != nil {
			return api.Image{}, err
		}
		select {
		case <-op.Done():
			return op.Result()
		case <-ctx.Done():
			return api.Image{}, ctx.Err()
		}
	}
}

// driver picks the VMM: the configured one, or under "auto" Firecracker
// where it can run and QEMU elsewhere.
func (d *Daemon) driver() vmm.Driver {
	fc := &firecracker.Driver{Binary: d.cfg.FirecrackerBin}
	if d.cfg.FirecrackerJailer != "" {
		fc.Jailer = &firecracker.Jailer{Binary: d.cfg.FirecrackerJailer, UID: d.cfg.JailerUID, GID: d.cfg.JailerGID,
			BaseDir: filepath.Join(d.layout.StateDir, "jail")}
	}
	q := &qemu.Driver{Warn: func(reason error) {
		d.log.Warn("VMs run under software emulation (TCG), much slower than KVM", "reason", reason)
	}}
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
