package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/logcap"
)

// List returns every VM.
func (s *Service) List(ctx context.Context) (api.VMListResult, error) {
	res := api.VMListResult{VMs: []api.VM{}}
	all, err := s.recs.all(ctx)
	for _, rec := range all {
		res.VMs = append(res.VMs, s.recs.toAPI(rec))
	}
	return res, err
}

// Show returns one VM.
func (s *Service) Show(ctx context.Context, p api.VMRefParams) (api.VM, error) {
	rec, err := s.recs.find(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	return s.recs.toAPI(rec), nil
}

// Start boots a stopped (or failed) VM.
func (s *Service) Start(ctx context.Context, p api.VMRefParams) (api.VM, error) {
	rec, unlock, err := s.recs.locked(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	switch rec.State {
	case api.VMRunning:
		return s.recs.toAPI(rec), nil
	case api.VMCreating:
		return api.VM{}, fmt.Errorf("vm %s is still being created: %w; wait for it (`banger ops list`)", rec.Name, api.ErrInUse)
	case api.VMSuspended:
		if rec, err = s.saved.resume(ctx, rec); err != nil {
			return api.VM{}, err
		}
		return s.recs.toAPI(rec), nil
	}
	img, k, err := s.vmms.inputs(ctx, rec)
	if err != nil {
		return api.VM{}, err
	}
	rec, err = s.vmms.boot(ctx, func(string) {}, rec, img, k)
	if err != nil {
		rec.State, rec.Reason, rec.PID, rec.PIDStart, rec.StoppedAt = api.VMFailed, err.Error(), 0, 0, time.Now()
		if perr := s.recs.put(context.WithoutCancel(ctx), rec); perr != nil {
			s.cfg.Log.Error("recording a failed start", "vm", rec.Name, "err", perr)
		}
		return api.VM{}, err
	}
	s.cfg.Log.Info("vm started", "vm", rec.Name)
	s.recs.announce(api.EventVMStarted, rec.Name, rec.Image, "")
	return s.recs.toAPI(rec), nil
}

// Stop powers a VM off through its agent, and kills its VMM if the guest
// has not gone within the timeout (at once with Force).
func (s *Service) Stop(ctx context.Context, p api.VMStopParams) (api.VM, error) {
	if p.Force {
		s.vmms.preempt(ctx, p.Name, "killed by `banger vm stop --force`", syscall.SIGKILL)
	}
	rec, unlock, err := s.recs.locked(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if rec.State == api.VMSuspended {
		if err := s.saved.discard(ctx, rec, "stopped by `banger vm stop` while suspended: its saved memory was discarded"); err != nil {
			return api.VM{}, err
		}
		return s.Show(ctx, api.VMRefParams{Name: p.Name})
	}
	if err := s.vmms.stop(ctx, rec, p.Force, time.Duration(p.Timeout)*time.Second, "stopped by `banger vm stop`"); err != nil {
		return api.VM{}, err
	}
	return s.Show(ctx, api.VMRefParams{Name: p.Name})
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
		s.vmms.preempt(ctx, p.Name, "killed by `banger vm delete --force`", syscall.SIGKILL)
	}
	rec, unlock, err := s.recs.locked(ctx, p.Name)
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
		if err := s.vmms.stop(ctx, rec, true, 0, "stopped by `banger vm stop`"); err != nil {
			return api.VM{}, err
		}
	}
	v := s.recs.toAPI(rec)
	if err := s.recs.remove(ctx, rec); err != nil {
		return api.VM{}, err
	}
	s.cfg.Log.Info("vm deleted", "vm", rec.Name)
	s.recs.announce(api.EventVMDeleted, rec.Name, rec.Image, "")
	return v, nil
}

// Exec runs a command in a running VM; out receives its output as it
// comes.
func (s *Service) Exec(ctx context.Context, p api.VMExecParams, out func(api.VMExecEvent) error) (api.VMExecResult, error) {
	if len(p.Args) == 0 {
		return api.VMExecResult{}, fmt.Errorf("%w: no command to run", api.ErrInvalidArgument)
	}
	if len(p.Stdin) > api.MaxExecStdin {
		return api.VMExecResult{}, fmt.Errorf("%w: stdin of %d bytes: at most %d go with a command (write a file and redirect it instead)", api.ErrInvalidArgument, len(p.Stdin), api.MaxExecStdin)
	}
	rec, c, err := s.saved.awake(ctx, p.Name)
	if err != nil {
		return api.VMExecResult{}, err
	}
	dir := p.Dir
	if dir == "" {
		dir = rec.Workspace // "" too without one: the agent's default
	}
	var stdin io.Reader // nil: /dev/null
	if len(p.Stdin) > 0 {
		stdin = bytes.NewReader(p.Stdin)
	}
	r, err := c.Exec(ctx, proto.ExecParams{Args: p.Args, Env: p.Env, Dir: dir, User: p.User}, stdin,
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
	rec, err := s.recs.find(ctx, p.Name)
	if err != nil {
		return api.VMLogsResult{}, err
	}
	// Streamed in chunks, never read whole: a log is up to its cap.
	path := filepath.Join(s.recs.run(rec.ID), "console.log")
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
	return api.VMLogsResult{}, s.recs.follow(ctx, rec, path, offset, send)
}

// Set changes a VM's sizes and settings. CPUs, memory and disk need the
// VM stopped: the error says so rather than applying them at next boot
// behind the user's back. A disk only grows.
func (s *Service) Set(ctx context.Context, p api.VMSetParams) (api.VM, error) {
	rec, unlock, err := s.recs.locked(ctx, p.Name)
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
		if err := growWorkDisk(ctx, s.recs.work(rec.ID), next.DiskSize); err != nil {
			return api.VM{}, err
		}
	}
	if live {
		if err := s.vmms.setPolicy(ctx, next); err != nil {
			return api.VM{}, err
		}
	}
	if err := s.recs.put(ctx, next); err != nil {
		if live {
			_ = s.vmms.setPolicy(context.WithoutCancel(ctx), rec) // the record still says the old one
		}
		return api.VM{}, err
	}
	s.cfg.Log.Info("vm changed", "vm", rec.Name, "egress", egressOf(next), "isolate", next.Isolate)
	return s.recs.toAPI(next), nil
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
	preempted := sig == syscall.SIGKILL && s.vmms.preempt(ctx, p.Name, reason, sig)
	rec, unlock, err := s.recs.locked(ctx, p.Name)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	gone, err := s.vmms.signal(ctx, rec, sig, reason, preempted)
	if err != nil {
		return api.VM{}, err
	}
	if gone {
		return s.recs.toAPI(rec), nil
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
