package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/crashpoint"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/logcap"
	"github.com/bangerdev/banger/internal/proc"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// vmms run the VMs: each running VM's VMM and the link to its agent,
// from a boot or a saved state to its exit (recorded), its taps and
// firewall rules, its logs kept within their cap, and the VMMs an earlier
// daemon left running, taken back or ended.
type vmms struct {
	cfg  *Config
	recs *records
	keys *identity

	mu        sync.Mutex
	live      map[string]*live // running VMs by ID
	sums      vmm.Sums         // the agent binary's digest, for its initramfs
	noModules map[string]bool  // bundles whose modules disk failed, by directory
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

// of is the running VM of ID id, or nil.
func (m *vmms) of(id string) *live {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live[id]
}

// inputs are the image and kernel a VM runs.
func (m *vmms) inputs(ctx context.Context, rec store.VM) (api.Image, api.Kernel, error) {
	img, err := m.cfg.Images.Resolve(ctx, rec.ImageID)
	if err != nil {
		return img, api.Kernel{}, fmt.Errorf("vm %s: its image %s: %w", rec.Name, rec.Image, err)
	}
	k, err := m.cfg.Kernel(ctx, rec.Kernel)
	if err != nil {
		return img, k, fmt.Errorf("vm %s: its kernel %s: %w", rec.Name, rec.Kernel, err)
	}
	return img, k, nil
}

func (m *vmms) snapshotter() (vmm.Snapshotter, error) {
	sn, ok := m.cfg.Driver.(vmm.Snapshotter)
	if !ok {
		return nil, fmt.Errorf("%w: the %s driver cannot save a VM's memory; stop the VM instead (`banger vm stop`)", api.ErrInvalidArgument, m.cfg.Driver.Name())
	}
	return sn, nil
}

// boot starts rec's VMM and waits for its agent; on success the record
// says running. A failed boot leaves no process behind.
func (m *vmms) boot(ctx context.Context, phase func(string), rec store.VM, img api.Image, k api.Kernel) (store.VM, error) {
	phase("network")
	tap, err := m.attach(rec)
	if err != nil {
		return rec, err
	}
	detach := func() { m.detach(rec) }
	spec, err := m.spec(rec, img, k, tap)
	if err != nil {
		detach()
		return rec, err
	}
	phase("booting")
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		detach()
		return rec, err
	}
	in, err := m.cfg.Driver.Start(ctx, spec)
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
	if err := m.recs.put(ctx, rec); err != nil {
		kill()
		return rec, err
	}
	phase("waiting for the agent")
	wctx, cancel := context.WithTimeout(ctx, m.cfg.BootTimeout)
	defer cancel()
	c, err := boot.WaitAgent(wctx, in.DialAgent, in.Done())
	if err != nil {
		kill()
		return rec, fmt.Errorf("booting: %w; %s", err, boot.Failure(in, m.cfg.Driver.Name()))
	}
	crashpoint.At("vm.boot", "agent answered")
	if err := m.keys.learn(ctx, rec.Name, c); err != nil {
		c.Close()
		kill()
		return rec, err
	}
	rec.State = api.VMRunning
	return m.commit(ctx, rec, in, c, kill)
}

// commit records rec running (its state set) and watches its VMM; a
// record that cannot be written ends the VMM (kill) and its link.
func (m *vmms) commit(ctx context.Context, rec store.VM, in vmm.Instance, c *client.Client, kill func()) (store.VM, error) {
	if err := m.recs.put(ctx, rec); err != nil {
		c.Close()
		kill()
		return rec, err
	}
	m.watch(rec, in, c)
	return rec, nil
}

// restore starts rec's VMM from the state in dir, on its network: the
// VMM is recorded (rec's pid, put in the store) as soon as it runs,
// whatever the record's state, so a daemon that dies mid-restore leaves
// a pid the next one ends (Reconcile). A failure leaves no tap.
func (m *vmms) restore(ctx context.Context, phase func(string), rec *store.VM, img api.Image, k api.Kernel, dir string) (vmm.Instance, error) {
	sn, err := m.snapshotter()
	if err != nil {
		return nil, err
	}
	phase("network")
	tap, err := m.attach(*rec)
	if err != nil {
		return nil, err
	}
	spec, err := m.spec(*rec, img, k, tap)
	if err == nil {
		err = os.MkdirAll(spec.Dir, 0o700)
	}
	if err != nil {
		m.detach(*rec)
		return nil, err
	}
	phase("restoring")
	in, err := sn.Restore(ctx, spec, dir, func(in vmm.Instance) error {
		id := in.ID()
		rec.PID, rec.PIDStart = id.PID, id.StartTime
		return m.recs.put(ctx, *rec)
	})
	if err != nil {
		m.detach(*rec)
		return nil, err
	}
	return in, nil
}

// identify gives the guest of rec, just restored, its VM's identity
// (identity.give), with newHostKey a host key of its own.
func (m *vmms) identify(ctx context.Context, rec store.VM, c *client.Client, newHostKey bool) error {
	params, _, err := m.bootParams(rec, "")
	if err != nil {
		return err
	}
	return m.keys.give(ctx, rec, c, params, newHostKey)
}

// startFrom runs rec (locked, recorded, its work disk in place) from the
// state saved in dir instead of booting it: its VMM is recorded as soon
// as it runs (a daemon that dies now leaves a pid the next one ends),
// its agent is given rec's identity, and the record then says running.
// A failure leaves no process behind and the state as it was.
func (m *vmms) startFrom(ctx context.Context, phase func(string), rec store.VM, img api.Image, k api.Kernel, dir string, newHostKey bool) (store.VM, error) {
	start := time.Now()
	in, err := m.restore(ctx, phase, &rec, img, k, dir)
	if err != nil {
		rec.PID, rec.PIDStart = 0, 0
		return rec, err
	}
	restored := time.Since(start)
	kill := func() {
		_ = in.Process().Kill()
		<-in.Done()
		m.detach(rec)
		rec.PID, rec.PIDStart = 0, 0
	}
	phase("taking its identity")
	wctx, cancel := context.WithTimeout(ctx, min(time.Minute, m.cfg.BootTimeout))
	defer cancel()
	c, err := boot.WaitAgent(wctx, in.DialAgent, in.Done())
	if err != nil {
		kill()
		return rec, fmt.Errorf("restoring: its agent: %w; %s", err, boot.Failure(in, m.cfg.Driver.Name()))
	}
	answered := time.Since(start)
	if err := m.identify(wctx, rec, c, newHostKey); err != nil {
		c.Close()
		kill()
		return rec, err
	}
	m.cfg.Log.Info("vm started from a saved state", "vm", rec.Name, "restored", restored.Round(time.Millisecond),
		"agent", answered.Round(time.Millisecond), "identity", time.Since(start).Round(time.Millisecond))
	rec.State, rec.Reason, rec.StartedAt, rec.StoppedAt = api.VMRunning, "", time.Now(), time.Time{}
	return m.commit(ctx, rec, in, c, kill)
}

// attach gives a bridge VM its tap; other VMs need nothing of the host.
func (m *vmms) attach(rec store.VM) (string, error) {
	if rec.Network != api.NetworkBridge {
		return "", nil
	}
	if m.cfg.Bridge == nil {
		return "", fmt.Errorf("vm %s uses the bridge network: %s", rec.Name, m.cfg.NoBridge)
	}
	if !rec.Addr.IsValid() {
		return "", fmt.Errorf("vm %s has no address lease; delete it and create it again", rec.Name)
	}
	a, err := attachment(rec)
	if err != nil {
		return "", err
	}
	return m.cfg.Bridge.Attach(a)
}

// detach removes a bridge VM's tap and rules, once its VMM is gone.
func (m *vmms) detach(rec store.VM) {
	if rec.Network != api.NetworkBridge || m.cfg.Bridge == nil {
		return
	}
	if err := m.cfg.Bridge.Detach(rec.ID); err != nil {
		m.cfg.Log.Error("removing a VM's tap and rules", "vm", rec.Name, "err", err)
	}
}

// setPolicy gives a running bridge VM rec's policy at once.
func (m *vmms) setPolicy(ctx context.Context, rec store.VM) error {
	a, err := attachment(rec)
	if err != nil {
		return err
	}
	if err := m.cfg.Bridge.SetPolicy(a); err != nil {
		return fmt.Errorf("changing the firewall of vm %s: %w", rec.Name, err)
	}
	if m.cfg.PolicyChanged != nil {
		m.cfg.PolicyChanged(ctx, rec.ID, a.Policy.Allow)
	}
	return nil
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

// spec is how the driver runs rec, on tap if it has one.
func (m *vmms) spec(rec store.VM, img api.Image, k api.Kernel, tap string) (vmm.Spec, error) {
	initrd, err := m.initrd(k)
	if err != nil {
		return vmm.Spec{}, err
	}
	params, nic, err := m.bootParams(rec, tap)
	if err != nil {
		return vmm.Spec{}, err
	}
	if rec.Init == api.InitImage {
		if params.Init = img.Init; params.Init == "" {
			return vmm.Spec{}, fmt.Errorf("vm %s runs its image's init, and image %s has no systemd; recreate it with --init agent", rec.Name, img.Name)
		}
	}
	return vmm.Spec{
		Kernel: bundle.Vmlinux(k.Dir), Initrd: initrd, Cmdline: boot.Cmdline(params, m.cfg.Emulated),
		MemoryMiB: rec.MemoryMiB, VCPU: rec.VCPU, Dir: m.recs.run(rec.ID), NIC: nic,
		Disks: m.disks(img, k, m.recs.work(rec.ID)), Share: shareGroup(rec),
	}, nil
}

// shareGroup is the group of VMs rec may share memory pages with (the
// pages of a saved state they were restored from, until each writes
// them): those its creator made, the daemon's owner at the CLI, one MCP
// server or one E2B key, for sharing pages opens cache side channels
// between VMs; "" with none (--no-share).
func shareGroup(rec store.VM) string {
	switch {
	case rec.NoShare:
		return ""
	case rec.Creator == "":
		return "cli"
	}
	return rec.Creator
}

// initrd is the initramfs of kernel k with this daemon's agent.
func (m *vmms) initrd(k api.Kernel) (string, error) {
	return boot.CachedInitramfs(k.Dir, m.cfg.Agent, &m.sums)
}

// disks are a VM's block devices: the image, its work disk, and its
// kernel's module tree when the bundle has one (built on first use;
// without it the guest has the initramfs's modules alone).
func (m *vmms) disks(img api.Image, k api.Kernel, work string) []vmm.Disk {
	d := []vmm.Disk{{Path: img.Rootfs, ReadOnly: true, Serial: proto.RootSerial}, {Path: work, Serial: proto.WorkSerial}}
	// A bundle whose disk could not be made is not tried again on every
	// start (a build reads the whole tree); its VMs keep one disk set
	// until the daemon restarts.
	m.mu.Lock()
	failed := m.noModules[k.Dir]
	m.mu.Unlock()
	if failed {
		return d
	}
	mods, err := boot.ModulesDisk(context.Background(), k.Dir, k.Version)
	if err != nil {
		m.cfg.Log.Warn("VMs of this kernel get the initramfs's modules alone until the daemon restarts", "kernel", k.Name, "err", err)
		m.mu.Lock()
		if m.noModules == nil {
			m.noModules = map[string]bool{}
		}
		m.noModules[k.Dir] = true
		m.mu.Unlock()
	}
	if mods != "" {
		d = append(d, vmm.Disk{Path: mods, ReadOnly: true, Serial: proto.ModulesSerial})
	}
	return d
}

// bootParams are what rec's agent is told (at boot, or after a restore)
// and its NIC, on tap if it has one.
func (m *vmms) bootParams(rec store.VM, tap string) (proto.BootParams, *vmm.NIC, error) {
	params := proto.BootParams{Hostname: rec.Name, MachineID: rec.ID}
	if m.cfg.SSH.Key != nil {
		params.SSHKeys = []ssh.PublicKey{m.cfg.SSH.Key}
	}
	var nic *vmm.NIC
	if rec.Network != api.NetworkNone {
		mac, err := net.ParseMAC(rec.MAC)
		if err != nil {
			return params, nil, fmt.Errorf("vm %s: MAC %q: %w", rec.Name, rec.MAC, err)
		}
		if rec.Network == api.NetworkBridge {
			gw := m.cfg.Bridge.Gateway()
			nic = &vmm.NIC{Tap: tap, MAC: rec.MAC}
			params.Net = &proto.NetParams{MAC: mac, Address: netip.PrefixFrom(rec.Addr, m.cfg.Bridge.Prefix().Bits()),
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
func (m *vmms) watch(rec store.VM, in vmm.Instance, c *client.Client) {
	l := &live{inst: in, client: c, exited: make(chan struct{})}
	m.mu.Lock()
	if m.live == nil {
		m.live = map[string]*live{}
	}
	m.live[rec.ID] = l
	m.mu.Unlock()
	go m.capLogs(rec, in)
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
		m.detach(rec)
		ctx := context.WithoutCancel(m.cfg.Lifetime)
		err := m.cfg.Store.Update(ctx, func(tx *store.Tx) error {
			cur, err := tx.VM(ctx, rec.Name)
			if err != nil || cur.ID != rec.ID {
				return err // deleted meanwhile
			}
			cur.State, cur.Reason, cur.PID, cur.PIDStart, cur.StoppedAt = state, reason, 0, 0, time.Now()
			return tx.PutVM(ctx, cur)
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			m.cfg.Log.Error("recording a stopped VM", "vm", rec.Name, "err", err)
		}
		m.mu.Lock()
		delete(m.live, rec.ID)
		m.mu.Unlock()
		if suspended {
			m.recs.announce(api.EventVMSuspended, rec.Name, rec.Image, reason)
		} else {
			m.cfg.Log.Info("vm stopped", "vm", rec.Name, "reason", reason)
			m.recs.announce(api.EventVMStopped, rec.Name, rec.Image, reason)
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

// DefaultLogMaxBytes is a VM's console cap by default (log_max_size).
const DefaultLogMaxBytes = 16 << 20

// logSweep is how often a running VM's logs are measured: a guest that
// floods its console overshoots the cap by at most what it writes in
// that time.
const logSweep = 100 * time.Millisecond

// capLogs keeps in's logs within the cap while it runs.
func (m *vmms) capLogs(rec store.VM, in vmm.Instance) {
	t := time.NewTicker(logSweep)
	defer t.Stop()
	// The cap is for the VM in all: the console gets three quarters of
	// it, the VMM's own output (QEMU's errors: little) the rest, unless
	// both are one file.
	type capped struct {
		path string
		max  int64
	}
	logs := []capped{{in.ConsoleLog(), m.cfg.LogMaxBytes}}
	if v := in.VMMLog(); v != "" && v != in.ConsoleLog() {
		logs = []capped{{in.ConsoleLog(), m.cfg.LogMaxBytes / 4 * 3}, {v, m.cfg.LogMaxBytes / 4}}
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
				m.cfg.Log.Warn("a VM's log cannot be capped; restart the VM to cap it", "vm", rec.Name, "file", f.path)
				logs = slices.Delete(logs, i, i+1)
				i--
			case err != nil:
				m.cfg.Log.Warn("capping a VM's log", "vm", rec.Name, "file", f.path, "err", err)
			case cut:
				m.cfg.Log.Debug("rotated a VM's log", "vm", rec.Name, "file", f.path)
			}
		}
	}
}

// client is the agent link of a running VM, dialed again when a daemon
// restart or a broken link left none.
func (m *vmms) client(ctx context.Context, rec store.VM) (*client.Client, error) {
	l := m.of(rec.ID)
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
	wctx, cancel := context.WithTimeout(ctx, min(time.Minute, m.cfg.BootTimeout))
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

// running reads the record of the running VM named name and its agent
// link: api.ErrNotFound or api.ErrNotRunning otherwise.
func (m *vmms) running(ctx context.Context, name string) (store.VM, *client.Client, error) {
	rec, err := m.recs.find(ctx, name)
	if err != nil {
		return store.VM{}, nil, err
	}
	c, err := m.client(ctx, rec)
	return rec, c, err
}

// defaultStopTimeout bounds a graceful stop.
const defaultStopTimeout = 30 * time.Second

// stop stops rec, recording reason for a graceful stop.
func (m *vmms) stop(ctx context.Context, rec store.VM, force bool, timeout time.Duration, reason string) error {
	l := m.of(rec.ID)
	if l == nil {
		return nil // already stopped
	}
	if timeout <= 0 {
		timeout = defaultStopTimeout
	}
	l.mu.Lock()
	l.reason = reason
	l.mu.Unlock()
	if !force {
		// One deadline for reaching the agent (a broken link is dialed
		// again), asking it to power off, and the VMM's exit.
		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if c, err := m.client(sctx, rec); err == nil && c.Shutdown(sctx) == nil {
			crashpoint.At("vm.stop", "guest asked to power off")
			select {
			case <-l.exited:
				return nil
			case <-sctx.Done():
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.cfg.Log.Warn("graceful stop did not finish; killing the VMM", "vm", rec.Name, "timeout", timeout)
		return m.kill(ctx, rec, fmt.Sprintf("killed by `banger vm stop`: the guest did not power off within %s", timeout))
	}
	return m.kill(ctx, rec, "killed by `banger vm stop --force`")
}

// kill ends a running VM's VMM at once, recording reason.
func (m *vmms) kill(ctx context.Context, rec store.VM, reason string) error {
	l := m.of(rec.ID)
	if l == nil {
		return nil
	}
	l.mu.Lock()
	l.reason = reason
	l.mu.Unlock()
	_ = l.inst.Process().Kill()
	select {
	case <-l.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// preempt signals a running VM's VMM before its lock is taken: a
// graceful stop waiting on a wedged guest holds that lock, and a forced
// stop, kill or delete must not wait behind it. The holder sees the VMM
// exit and lets go.
func (m *vmms) preempt(ctx context.Context, name, reason string, sig syscall.Signal) (signaled bool) {
	rec, err := m.recs.find(ctx, name)
	if err != nil {
		return false // the locked path reports it
	}
	l := m.of(rec.ID)
	if l == nil || rec.State != api.VMRunning {
		return false
	}
	l.mu.Lock()
	l.reason = reason
	l.mu.Unlock()
	return l.inst.Process().Signal(sig) == nil
}

// signal sends sig to rec's VMM (locked; preempted: it was sent already,
// ahead of the lock), recording reason, and waits for a SIGKILL to end it.
// gone: rec, as read, no longer ran, ended by the preempting signal.
func (m *vmms) signal(ctx context.Context, rec store.VM, sig syscall.Signal, reason string, preempted bool) (gone bool, err error) {
	l := m.of(rec.ID)
	// The record says stopped before the watcher forgets the VMM: both
	// mean it no longer runs.
	if l == nil || rec.State != api.VMRunning {
		if preempted {
			return true, nil // our own signal, sent ahead of the lock, got there first
		}
		return false, fmt.Errorf("vm %s is %s: %w", rec.Name, rec.State, api.ErrNotRunning)
	}
	l.mu.Lock()
	l.reason = reason
	l.mu.Unlock()
	// Preempted, it is signaled already: what is left is to see it end.
	if !preempted {
		if err := l.inst.Process().Signal(sig); errors.Is(err, os.ErrProcessDone) {
			return false, fmt.Errorf("vm %s stopped meanwhile: %w", rec.Name, api.ErrNotRunning)
		} else if err != nil {
			return false, fmt.Errorf("signaling vm %s: %w", rec.Name, err)
		}
	}
	if sig == syscall.SIGKILL {
		select {
		case <-l.exited:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return false, nil
}

// adopt takes back rec's VMM, which an earlier daemon started and which
// still runs, and watches it; false when it is gone.
func (m *vmms) adopt(rec store.VM) bool {
	in, err := m.cfg.Driver.Adopt(vmm.Spec{Dir: m.recs.run(rec.ID)}, adoptedID(rec))
	if err != nil {
		return false
	}
	m.watch(rec, in, nil)
	return true
}

// end ends rec's recorded VMM, if it still runs: one an earlier daemon
// left mid-create, mid-resume or mid-start.
func (m *vmms) end(rec store.VM) {
	if rec.PID == 0 {
		return
	}
	if in, err := m.cfg.Driver.Adopt(vmm.Spec{Dir: m.recs.run(rec.ID)}, adoptedID(rec)); err == nil {
		_ = in.Process().Kill()
		<-in.Done()
	}
}

// adoptedID identifies a recorded VMM for Reconcile.
func adoptedID(rec store.VM) proc.ID { return proc.ID{PID: rec.PID, StartTime: rec.PIDStart} }

// endStrays ends the processes of args (proc.Args) that name the runtime
// directory of VM id (a VMM, its helpers) and that no record accounts
// for.
func (m *vmms) endStrays(args map[int][]string, id string) {
	for _, pid := range proc.Naming(args, m.recs.run(id)+string(filepath.Separator)) {
		m.cfg.Log.Warn("ending a VMM no record accounts for", "vm_id", id, "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// sync makes the running bridge VMs' (alive, of all) rules again from
// their records, and removes the taps and rules of VMs that stopped while
// no daemon ran.
func (m *vmms) sync(all []store.VM, alive []string) {
	if m.cfg.Bridge == nil {
		return
	}
	var running []hostnet.Attachment
	for _, rec := range all {
		if !slices.Contains(alive, rec.ID) || rec.Network != api.NetworkBridge || !rec.Addr.IsValid() {
			continue
		}
		a, err := attachment(rec)
		if err != nil {
			m.cfg.Log.Error("a running VM's firewall", "vm", rec.Name, "err", err)
			continue
		}
		running = append(running, a)
	}
	removed, err := m.cfg.Bridge.Sync(running)
	for _, what := range removed {
		m.cfg.Log.Info("removed a leftover", "what", what)
	}
	if err != nil {
		m.cfg.Log.Error("syncing the bridge network", "err", err)
	}
}
