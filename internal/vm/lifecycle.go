package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/crashpoint"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/logcap"
	"github.com/bangerdev/banger/internal/proc"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// toAPI is a record as clients see it.
func (s *Service) toAPI(rec store.VM) api.VM {
	v := api.VM{
		Name: rec.Name, ID: rec.ID, State: rec.State, Reason: rec.Reason, Image: rec.Image, ImageID: rec.ImageID,
		Kernel: rec.Kernel, KernelID: rec.KernelID, VCPU: rec.VCPU, MemoryMiB: rec.MemoryMiB, DiskSize: rec.DiskSize,
		Network: rec.Network, NAT: rec.NAT, Egress: egressOf(rec), Allow: rec.Allow, Isolate: rec.Isolate, AutoStop: rec.AutoStop, IdleAction: rec.IdleAction, Init: initName(rec.Init), Workspace: rec.Workspace, VMM: rec.VMM, PID: rec.PID, CreatedAt: rec.CreatedAt,
	}
	if !rec.StartedAt.IsZero() {
		t := rec.StartedAt
		v.StartedAt = &t
	}
	if !rec.StoppedAt.IsZero() {
		t := rec.StoppedAt
		v.StoppedAt = &t
	}
	if rec.State == api.VMSuspended {
		v.StateBytes = s.stateBytes(rec.ID)
	}
	switch {
	case rec.Network == api.NetworkUser && rec.State == api.VMRunning:
		v.IP = userAddr
	case rec.Network == api.NetworkBridge && rec.Addr.IsValid():
		v.IP = rec.Addr.String() // leased for the VM's life
	}
	v.DiskUsed = diskUsed(s.workDisk(rec.ID))
	return v
}

// diskUsed is what a (sparse) disk image takes on the host.
func diskUsed(path string) int64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}

// List returns every VM.
func (s *Service) List(ctx context.Context) (api.VMListResult, error) {
	res := api.VMListResult{VMs: []api.VM{}}
	err := s.cfg.Store.View(ctx, func(tx *store.Tx) error {
		all, err := tx.VMs(ctx)
		for _, rec := range all {
			res.VMs = append(res.VMs, s.toAPI(rec))
		}
		return err
	})
	return res, err
}

// Show returns one VM.
func (s *Service) Show(ctx context.Context, p api.VMRefParams) (api.VM, error) {
	rec, err := s.find(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	return s.toAPI(rec), nil
}

// Start boots a stopped (or failed) VM.
func (s *Service) Start(ctx context.Context, p api.VMRefParams) (api.VM, error) {
	rec, unlock, err := s.locked(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	switch rec.State {
	case api.VMRunning:
		return s.toAPI(rec), nil
	case api.VMCreating:
		return api.VM{}, fmt.Errorf("vm %s is still being created: %w; wait for it (`banger ops list`)", rec.Name, api.ErrInUse)
	case api.VMSuspended:
		if rec, err = s.resume(ctx, rec); err != nil {
			return api.VM{}, err
		}
		return s.toAPI(rec), nil
	}
	img, k, err := s.inputs(ctx, rec)
	if err != nil {
		return api.VM{}, err
	}
	rec, err = s.boot(ctx, func(string) {}, rec, img, k)
	if err != nil {
		rec.State, rec.Reason, rec.PID, rec.PIDStart, rec.StoppedAt = api.VMFailed, err.Error(), 0, 0, time.Now()
		if perr := s.put(context.WithoutCancel(ctx), rec); perr != nil {
			s.cfg.Log.Error("recording a failed start", "vm", rec.Name, "err", perr)
		}
		return api.VM{}, err
	}
	s.cfg.Log.Info("vm started", "vm", rec.Name)
	s.event(api.EventVMStarted, rec.Name, rec.Image, "")
	return s.toAPI(rec), nil
}

// defaultStopTimeout bounds a graceful stop.
const defaultStopTimeout = 30 * time.Second

// Stop powers a VM off through its agent, and kills its VMM if the guest
// has not gone within the timeout (at once with Force).
func (s *Service) Stop(ctx context.Context, p api.VMStopParams) (api.VM, error) {
	if p.Force {
		s.preempt(ctx, p.Name, "killed by `banger vm stop --force`", syscall.SIGKILL)
	}
	rec, unlock, err := s.locked(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if rec.State == api.VMSuspended {
		if err := s.discard(ctx, rec, "stopped by `banger vm stop` while suspended: its saved memory was discarded"); err != nil {
			return api.VM{}, err
		}
		return s.Show(ctx, api.VMRefParams{Name: p.Name})
	}
	if err := s.stop(ctx, rec, p.Force, time.Duration(p.Timeout)*time.Second); err != nil {
		return api.VM{}, err
	}
	return s.Show(ctx, api.VMRefParams{Name: p.Name})
}

func (s *Service) stop(ctx context.Context, rec store.VM, force bool, timeout time.Duration) error {
	return s.stopWith(ctx, rec, force, timeout, "stopped by `banger vm stop`")
}

// stopWith stops rec, recording reason for a graceful stop.
func (s *Service) stopWith(ctx context.Context, rec store.VM, force bool, timeout time.Duration, reason string) error {
	s.mu.Lock()
	l := s.live[rec.ID]
	s.mu.Unlock()
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
		if c, err := s.client(sctx, rec); err == nil && c.Shutdown(sctx) == nil {
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
		s.cfg.Log.Warn("graceful stop did not finish; killing the VMM", "vm", rec.Name, "timeout", timeout)
		return s.kill(ctx, rec, fmt.Sprintf("killed by `banger vm stop`: the guest did not power off within %s", timeout))
	}
	return s.kill(ctx, rec, "killed by `banger vm stop --force`")
}

// kill ends a running VM's VMM at once, recording reason.
func (s *Service) kill(ctx context.Context, rec store.VM, reason string) error {
	s.mu.Lock()
	l := s.live[rec.ID]
	s.mu.Unlock()
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
func (s *Service) preempt(ctx context.Context, name, reason string, sig syscall.Signal) (signaled bool) {
	rec, err := s.find(ctx, name)
	if err != nil {
		return false // the locked path reports it
	}
	s.mu.Lock()
	l := s.live[rec.ID]
	s.mu.Unlock()
	if l == nil || rec.State != api.VMRunning {
		return false
	}
	l.mu.Lock()
	l.reason = reason
	l.mu.Unlock()
	return l.inst.Process().Signal(sig) == nil
}

// Restart stops a VM gracefully and starts it again.
func (s *Service) Restart(ctx context.Context, p api.VMRefParams) (api.VM, error) {
	if _, err := s.Stop(ctx, api.VMStopParams{Name: p.Name}); err != nil {
		return api.VM{}, err
	}
	return s.Start(ctx, p)
}

// Delete removes a VM and its files; a running one only with Force,
// which stops it first.
func (s *Service) Delete(ctx context.Context, p api.VMDeleteParams) (api.VM, error) {
	if p.Force {
		s.preempt(ctx, p.Name, "killed by `banger vm delete --force`", syscall.SIGKILL)
	}
	rec, unlock, err := s.locked(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	switch {
	case rec.State == api.VMCreating:
		return api.VM{}, fmt.Errorf("vm %s is being created: %w; cancel the operation first (`banger ops list`)", rec.Name, api.ErrInUse)
	case rec.State == api.VMRunning && !p.Force:
		return api.VM{}, fmt.Errorf("vm %s is running: %w; stop it first (`banger vm stop %s`) or pass --force", rec.Name, api.ErrInUse, rec.Name)
	case rec.State == api.VMRunning:
		if err := s.stop(ctx, rec, true, 0); err != nil {
			return api.VM{}, err
		}
	}
	v := s.toAPI(rec)
	if err := s.remove(ctx, rec); err != nil {
		return api.VM{}, err
	}
	s.cfg.Log.Info("vm deleted", "vm", rec.Name)
	s.event(api.EventVMDeleted, rec.Name, rec.Image, "")
	return v, nil
}

// remove deletes a stopped VM's record and files.
func (s *Service) remove(ctx context.Context, rec store.VM) error {
	err := s.cfg.Store.Update(ctx, func(tx *store.Tx) error { return tx.DeleteVM(ctx, rec.Name) })
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	crashpoint.At("vm.delete", "record deleted")
	if s.cfg.SSH.KnownHostsFile != "" {
		if err := s.setKnownHost(sshHost(rec.Name), ""); err != nil {
			return fmt.Errorf("removing vm %s from known_hosts: %w", rec.Name, err)
		}
	}
	if s.cfg.Removed != nil {
		s.cfg.Removed(rec.ID)
	}
	for _, dir := range []string{s.runDir(rec.ID), s.stateDir(rec.ID)} {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("removing vm %s: %w", rec.Name, err)
		}
	}
	return nil
}

// Exec runs a command in a running VM; out receives its output as it
// comes.
func (s *Service) Exec(ctx context.Context, p api.VMExecParams, out func(api.VMExecEvent) error) (api.VMExecResult, error) {
	if len(p.Args) == 0 {
		return api.VMExecResult{}, fmt.Errorf("%w: no command to run", api.ErrInvalidArgument)
	}
	rec, c, err := s.awake(ctx, p.Name)
	if err != nil {
		return api.VMExecResult{}, err
	}
	dir := p.Dir
	if dir == "" {
		dir = rec.Workspace // "" too without one: the agent's default
	}
	r, err := c.Exec(ctx, proto.ExecParams{Args: p.Args, Env: p.Env, Dir: dir, User: p.User}, nil,
		eventWriter{"stdout", out}, eventWriter{"stderr", out})
	if err != nil {
		return api.VMExecResult{}, fmt.Errorf("vm %s: %w", rec.Name, err)
	}
	return api.VMExecResult{ExitCode: r.ExitCode, Signal: r.Signal}, nil
}

type eventWriter struct {
	stream string
	out    func(api.VMExecEvent) error
}

func (w eventWriter) Write(p []byte) (int, error) {
	if err := w.out(api.VMExecEvent{Stream: w.stream, Data: bytes.Clone(p)}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Logs returns a VM's serial console: the kernel's messages and the
// agent's. With p.Follow it emits the console's tail, then what is
// written to it, until ctx ends or the VM is deleted, and returns an
// empty result.
func (s *Service) Logs(ctx context.Context, p api.VMLogsParams, emit func(api.VMLogsResult) error) (api.VMLogsResult, error) {
	rec, err := s.find(ctx, p.Name)
	if err != nil {
		return api.VMLogsResult{}, err
	}
	// Streamed in chunks, never read whole: a log is up to its cap.
	path := filepath.Join(s.runDir(rec.ID), "console.log")
	send := func(b []byte) error { return emit(api.VMLogsResult{Console: string(b)}) }
	var offset int64
	if p.Tail > 0 {
		var b []byte
		if b, offset, err = logcap.Tail(path, p.Tail); err == nil && len(b) > 0 {
			if b[len(b)-1] != '\n' {
				b = append(b, '\n')
			}
			err = send(b)
		}
	} else {
		offset, err = logcap.Stream(path, send)
	}
	if err != nil || !p.Follow {
		return api.VMLogsResult{}, err
	}
	return api.VMLogsResult{}, s.follow(ctx, rec, path, offset, send)
}

// Reconcile runs once at daemon start: VMs recorded running whose VMM
// still runs are taken back; those whose VMM died are recorded stopped;
// creates that the previous daemon did not finish are undone (their VMM
// ended, record, lease and directories removed: the caller was never
// told of a VM); a VMM that no record accounts for (one started just
// before the daemon died, its pid not yet recorded) is ended; runtime
// directories that no record owns are removed.
func (s *Service) Reconcile(ctx context.Context) error {
	var all []store.VM
	if err := s.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		all, err = tx.VMs(ctx)
		return err
	}); err != nil {
		return err
	}
	s.sweepTemplateBuilds()
	s.DropTemplates(ctx)
	// Every process's command line, read once: a VMM no record has the
	// pid of is known by its VM's runtime directory there.
	args := proc.Args()
	owned := map[string]bool{}
	var alive []string
	for _, rec := range all {
		owned[rec.ID] = true
		// A save cut short, or a state already resumed from, is of no
		// use; nor a fork's scratch state or a checkpoint cut short.
		_ = os.RemoveAll(s.suspendDir(rec.ID) + partial)
		for _, pattern := range []string{filepath.Join(s.stateDir(rec.ID), forkPrefix+"*"), filepath.Join(s.stateDir(rec.ID), checkpointsDir, "*"+partial)} {
			leftovers, _ := filepath.Glob(pattern)
			for _, f := range leftovers {
				_ = os.RemoveAll(f)
			}
		}
		if rec.State != api.VMSuspended {
			_ = os.RemoveAll(s.suspendDir(rec.ID))
		}
		switch rec.State {
		case api.VMRunning:
			in, err := s.cfg.Driver.Adopt(vmm.Spec{Dir: s.runDir(rec.ID)}, adoptedID(rec))
			if err == nil {
				alive = append(alive, rec.ID)
				s.watch(rec, in, nil)
				s.cfg.Log.Info("vm taken back after a daemon restart", "vm", rec.Name, "pid", rec.PID)
				continue
			}
			rec.State, rec.Reason = api.VMStopped, "its VMM exited while the daemon was not running"
		case api.VMCreating:
			if rec.PID != 0 {
				if in, err := s.cfg.Driver.Adopt(vmm.Spec{Dir: s.runDir(rec.ID)}, adoptedID(rec)); err == nil {
					_ = in.Process().Kill()
					<-in.Done()
				}
			}
			s.endStrays(args, rec.ID)
			delete(owned, rec.ID)
			if err := s.remove(ctx, rec); err != nil {
				return err
			}
			s.cfg.Log.Info("an interrupted create undone", "vm", rec.Name)
			continue
		case api.VMSuspended:
			if rec.PID == 0 {
				continue // its saved state waits in its directory
			}
			// A resume the daemon's end cut short: its VMM goes, the
			// state (removed only after a resume) stays.
			if in, err := s.cfg.Driver.Adopt(vmm.Spec{Dir: s.runDir(rec.ID)}, adoptedID(rec)); err == nil {
				_ = in.Process().Kill()
				<-in.Done()
			}
			rec.Reason = "a resume was cut short (the daemon stopped); resume it again"
		default:
			if rec.PID == 0 {
				continue
			}
			// A start from a checkpoint the daemon's end cut short.
			if in, err := s.cfg.Driver.Adopt(vmm.Spec{Dir: s.runDir(rec.ID)}, adoptedID(rec)); err == nil {
				_ = in.Process().Kill()
				<-in.Done()
			}
			rec.Reason = "its start was cut short (the daemon stopped); start it again"
		}
		rec.PID, rec.PIDStart, rec.StoppedAt = 0, 0, time.Now()
		if err := s.put(ctx, rec); err != nil {
			return err
		}
		s.cfg.Log.Info("vm reconciled", "vm", rec.Name, "state", rec.State, "reason", rec.Reason)
		if rec.State == api.VMStopped {
			s.event(api.EventVMStopped, rec.Name, rec.Image, rec.Reason)
		}
	}
	for _, rec := range all {
		if owned[rec.ID] && !slices.Contains(alive, rec.ID) {
			s.endStrays(args, rec.ID)
		}
	}
	if s.cfg.Bridge != nil {
		// The running VMs' rules made again from their records; taps and
		// rules of VMs that stopped while no daemon ran removed.
		var running []hostnet.Attachment
		for _, rec := range all {
			if !slices.Contains(alive, rec.ID) || rec.Network != api.NetworkBridge || !rec.Addr.IsValid() {
				continue
			}
			a, err := attachment(rec)
			if err != nil {
				s.cfg.Log.Error("a running VM's firewall", "vm", rec.Name, "err", err)
				continue
			}
			running = append(running, a)
		}
		removed, err := s.cfg.Bridge.Sync(running)
		for _, what := range removed {
			s.cfg.Log.Info("removed a leftover", "what", what)
		}
		if err != nil {
			s.cfg.Log.Error("syncing the bridge network", "err", err)
		}
	}
	for _, parent := range []string{s.cfg.RunDir, s.cfg.StateDir} {
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			if e.IsDir() && len(e.Name()) == 32 && !owned[e.Name()] {
				s.endStrays(args, e.Name())
				dir := filepath.Join(parent, e.Name())
				s.cfg.Log.Info("removing a leftover VM directory", "dir", dir)
				_ = os.RemoveAll(dir)
			}
		}
	}
	return nil
}

// Set changes a VM's sizes and settings. CPUs, memory and disk need the
// VM stopped: the error says so rather than applying them at next boot
// behind the user's back. A disk only grows.
func (s *Service) Set(ctx context.Context, p api.VMSetParams) (api.VM, error) {
	rec, unlock, err := s.locked(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	next := rec
	if p.VCPU != 0 {
		next.VCPU = p.VCPU
	}
	if p.MemoryMiB != 0 {
		next.MemoryMiB = p.MemoryMiB
	}
	if p.DiskSize != 0 {
		if p.DiskSize < rec.DiskSize {
			return api.VM{}, fmt.Errorf("%w: --disk %d is smaller than the disk's %d bytes: a work disk only grows", api.ErrInvalidArgument, p.DiskSize, rec.DiskSize)
		}
		next.DiskSize = p.DiskSize
	}
	switch p.AutoStop {
	case "":
	case "default":
		next.AutoStop = ""
	default:
		next.AutoStop = p.AutoStop
	}
	switch p.IdleAction {
	case "":
	case "default":
		next.IdleAction = ""
	case api.IdleStop, api.IdleSuspend:
		next.IdleAction = p.IdleAction
	default:
		return api.VM{}, fmt.Errorf("%w: --idle-action %q: use stop, suspend or default", api.ErrInvalidArgument, p.IdleAction)
	}
	if _, err := applyEgress(&next, p.Allow, p.NAT); err != nil {
		return api.VM{}, err
	}
	if p.Isolate != nil {
		next.Isolate = *p.Isolate
	}
	if err := canonAllow(&next); err != nil {
		return api.VM{}, err
	}
	if err := validate(next); err != nil {
		return api.VM{}, err
	}
	stopped := rec.State == api.VMStopped || rec.State == api.VMFailed
	policy := next.NAT != rec.NAT || next.Isolate != rec.Isolate || !slices.Equal(next.Allow, rec.Allow)
	// A bridge VM's policy lives in the host's firewall: it changes at
	// once. A user-mode VM's way out is its VMM's command line.
	live := policy && rec.State == api.VMRunning && rec.Network == api.NetworkBridge
	needsStop := next.VCPU != rec.VCPU || next.MemoryMiB != rec.MemoryMiB || next.DiskSize != rec.DiskSize || (policy && !live)
	if needsStop && !stopped {
		return api.VM{}, fmt.Errorf("vm %s is %s: %w; cpus, memory, disk (and the way out of a VM not on the bridge) change only while it is stopped (`banger vm stop %s`)", rec.Name, rec.State, api.ErrInUse, rec.Name)
	}
	if next.DiskSize != rec.DiskSize {
		if err := growWorkDisk(ctx, s.workDisk(rec.ID), next.DiskSize); err != nil {
			return api.VM{}, err
		}
	}
	if live {
		if err := s.setPolicy(ctx, next); err != nil {
			return api.VM{}, err
		}
	}
	if err := s.put(ctx, next); err != nil {
		if live {
			_ = s.setPolicy(context.WithoutCancel(ctx), rec) // the record still says the old one
		}
		return api.VM{}, err
	}
	s.cfg.Log.Info("vm changed", "vm", rec.Name, "egress", egressOf(next), "isolate", next.Isolate)
	return s.toAPI(next), nil
}

// setPolicy gives a running bridge VM rec's policy at once.
func (s *Service) setPolicy(ctx context.Context, rec store.VM) error {
	a, err := attachment(rec)
	if err != nil {
		return err
	}
	if err := s.cfg.Bridge.SetPolicy(a); err != nil {
		return fmt.Errorf("changing the firewall of vm %s: %w", rec.Name, err)
	}
	if s.cfg.PolicyChanged != nil {
		s.cfg.PolicyChanged(ctx, rec.ID, a.Policy.Allow)
	}
	return nil
}

// growWorkDisk makes a stopped VM's work disk and its file system
// bigger.
func growWorkDisk(ctx context.Context, path string, size int64) error {
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("growing the work disk: %w", err)
	}
	// A VM that was killed rather than powered off leaves a journal to
	// replay: e2fsck does (its exit status 1 says it corrected something,
	// which is that).
	out, err := exec.CommandContext(ctx, "e2fsck", "-f", "-p", path).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		return fmt.Errorf("growing the work disk: e2fsck: %v: %s", err, bytes.TrimSpace(out))
	}
	if out, err := exec.CommandContext(ctx, "resize2fs", path).CombinedOutput(); err != nil {
		return fmt.Errorf("growing the work disk: resize2fs: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// signal is the signal vm kill sends a VMM by that name.
func signal(name string) (syscall.Signal, bool) {
	switch name {
	case "KILL":
		return syscall.SIGKILL, true
	case "TERM":
		return syscall.SIGTERM, true
	case "INT":
		return syscall.SIGINT, true
	case "HUP":
		return syscall.SIGHUP, true
	case "QUIT":
		return syscall.SIGQUIT, true
	}
	return 0, false
}

// Kill signals a running VM's VMM (SIGKILL by default): no power-off
// through the guest.
func (s *Service) Kill(ctx context.Context, p api.VMKillParams) (api.VM, error) {
	name := strings.TrimPrefix(strings.ToUpper(p.Signal), "SIG")
	if name == "" {
		name = "KILL"
	}
	sig, ok := signal(name)
	if !ok {
		return api.VM{}, fmt.Errorf("%w: --signal %q: use KILL, TERM, INT, HUP or QUIT", api.ErrInvalidArgument, p.Signal)
	}
	reason := "killed by `banger vm kill` (SIG" + name + ")"
	preempted := sig == syscall.SIGKILL && s.preempt(ctx, p.Name, reason, sig)
	rec, unlock, err := s.locked(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	s.mu.Lock()
	l := s.live[rec.ID]
	s.mu.Unlock()
	// The record says stopped before the watcher forgets the VMM: both
	// mean it no longer runs.
	if l == nil || rec.State != api.VMRunning {
		if preempted {
			// Our own signal, sent ahead of the lock, got there first.
			return s.toAPI(rec), nil
		}
		return api.VM{}, fmt.Errorf("vm %s is %s: %w", rec.Name, rec.State, api.ErrNotRunning)
	}
	l.mu.Lock()
	l.reason = reason
	l.mu.Unlock()
	// Preempted, it is signaled already: what is left is to see it end.
	if !preempted {
		if err := l.inst.Process().Signal(sig); errors.Is(err, os.ErrProcessDone) {
			return api.VM{}, fmt.Errorf("vm %s stopped meanwhile: %w", rec.Name, api.ErrNotRunning)
		} else if err != nil {
			return api.VM{}, fmt.Errorf("signaling vm %s: %w", rec.Name, err)
		}
	}
	if sig == syscall.SIGKILL {
		select {
		case <-l.exited:
		case <-ctx.Done():
			return api.VM{}, ctx.Err()
		}
	}
	return s.Show(ctx, api.VMRefParams{Name: rec.Name})
}

// Prune deletes every stopped and failed VM.
func (s *Service) Prune(ctx context.Context) (api.VMPruneResult, error) {
	res := api.VMPruneResult{Deleted: []string{}}
	all, err := s.List(ctx)
	if err != nil {
		return res, err
	}
	for _, v := range all.VMs {
		if v.State != api.VMStopped && v.State != api.VMFailed {
			continue
		}
		// Delete checks the state again under the VM's lock.
		if _, err := s.Delete(ctx, api.VMDeleteParams{Name: v.Name}); err != nil {
			if errors.Is(err, api.ErrInUse) || errors.Is(err, api.ErrNotFound) {
				continue // started or deleted meanwhile
			}
			return res, err
		}
		res.Deleted = append(res.Deleted, v.Name)
	}
	return res, nil
}

// followInterval is how often a followed console is checked for growth.
const followInterval = 200 * time.Millisecond

// follow emits first, then what is written to rec's console past offset
// (where first was read to, so no line written meanwhile is lost), until
// ctx ends or the VM is deleted. A restarted VM's console starts over: it
// is sent from its start.
func (s *Service) follow(ctx context.Context, rec store.VM, path string, offset int64, send func([]byte) error) error {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if cur, err := s.find(ctx, rec.Name); err != nil || cur.ID != rec.ID {
			return nil // deleted: nothing more will come
		}
		var err error
		if offset, err = logcap.From(path, offset, send); err != nil {
			return err
		}
	}
}

// initName is a record's Init as the API says it.
func initName(init string) string {
	if init == "" {
		return api.InitAgent
	}
	return init
}

// endStrays ends the processes of args (proc.Args) that name the runtime
// directory of VM id (a VMM, its helpers) and that no record accounts
// for.
func (s *Service) endStrays(args map[int][]string, id string) {
	for _, pid := range proc.Naming(args, s.runDir(id)+string(filepath.Separator)) {
		s.cfg.Log.Warn("ending a VMM no record accounts for", "vm_id", id, "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
