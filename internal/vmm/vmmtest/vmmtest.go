// Package vmmtest is a vmm.Driver for unit tests of what sits on the
// driver interface (the VM service, the daemon), with no VM at all: each
// instance's VMM is a stand-in process (sleep), so pids, start times,
// signals, exits and adoption after a restart are real, and its guest is
// the real agent server (internal/agent/server) answering the instance's
// agent transport over in-process pipes. Faults make an instance fail the
// ways a VMM and a guest fail. It proves nothing about booting: the VM
// tests and smoke scenarios do that.
package vmmtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/server"
	"github.com/bangerdev/banger/internal/proc"
	"github.com/bangerdev/banger/internal/sshkey"
	"github.com/bangerdev/banger/internal/vmm"
)

// Fault is how the next instances misbehave.
type Fault int

const (
	// Healthy instances boot, answer and power off when asked.
	Healthy Fault = iota
	// ExitAtStart: the VMM exits at once, its console and its own log
	// saying why, as QEMU does with a kernel it cannot boot.
	ExitAtStart
	// Silent: the VMM runs, but no agent ever answers on its transport.
	Silent
	// IgnoreShutdown: the agent answers, but a power-off request does
	// nothing (a guest that hangs on its way down).
	IgnoreShutdown
	// StartFails: Start itself fails (a VMM binary that cannot run).
	StartFails
	// Stalled: the agent says hello on its next connections, then never
	// reads them again (a guest whose root took the channel and sits on
	// it).
	Stalled
)

// ConsoleBoot and ConsolePanic are what instances write on their console.
const (
	ConsoleBoot  = "vmmtest: guest up, agent serving\n"
	ConsolePanic = "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"
	VMMComplaint = "vmmtest: could not open the disk image\n"
)

// Driver is the fake driver. Its zero value is ready; Close ends every
// instance it started.
type Driver struct {
	mu          sync.Mutex
	fault       Fault
	faultWhere  map[string]Fault // by a word of the kernel command line
	unavailable error
	guests      map[string]*Guest // by runtime dir: Adopt finds a guest again
	starts      int
	snapshots   int
	restores    int
}

// Guest is one instance's stand-in VMM and agent.
type Guest struct {
	Spec vmm.Spec
	// HostKey is the SSH host key the agent's info reports.
	HostKey ssh.PublicKey

	process *os.Process
	srv     *server.Server

	mu    sync.Mutex
	fault Fault
	conns []net.Conn // the agent's ends, closed when the VMM exits
	gone  bool
	shuts int // power-off requests the agent got
	keyAs string
	ids   []proto.IdentityParams
}

// Identities are the identities the agent was given after a restore.
func (g *Guest) Identities() []proto.IdentityParams {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.ids)
}

// ReportHostKey makes the agent's info report text as its SSH host key,
// as a hostile guest would.
func (g *Guest) ReportHostKey(text string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.keyAs = text
}

// Shutdowns counts the power-off requests the agent got.
func (g *Guest) Shutdowns() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shuts
}

// SetFault changes how this guest behaves from now on (Silent applies to
// the next connections, IgnoreShutdown to the next power-off).
func (g *Guest) SetFault(f Fault) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fault = f
}

func (g *Guest) faulty(f Fault) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fault == f
}

// DropLinks breaks the agent's current connections, as a guest whose
// agent restarted would.
func (g *Guest) DropLinks() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.conns {
		c.Close()
	}
	g.conns = nil
}

// PID is the stand-in VMM's pid.
func (g *Guest) PID() int { return g.process.Pid }

// SetFault makes the instances started from now on misbehave as f.
func (d *Driver) SetFault(f Fault) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fault = f
}

// SetFaultWhere makes the instances started from now on whose kernel
// command line has word (banger.hostname=NAME: one VM) misbehave as f.
func (d *Driver) SetFaultWhere(word string, f Fault) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.faultWhere == nil {
		d.faultWhere = map[string]Fault{}
	}
	d.faultWhere[word] = f
}

// SetUnavailable makes Available report err (nil: available).
func (d *Driver) SetUnavailable(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.unavailable = err
}

// Starts counts the instances Start made.
func (d *Driver) Starts() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.starts
}

// Guest is the guest whose runtime dir is dir, or nil.
func (d *Driver) Guest(dir string) *Guest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.guests[dir]
}

// Close kills every instance's VMM.
func (d *Driver) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, g := range d.guests {
		_ = g.process.Kill()
	}
}

// Name is "vmmtest".
func (d *Driver) Name() string { return "vmmtest" }

// Available is nil unless SetUnavailable said otherwise.
func (d *Driver) Available() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.unavailable
}

// Start runs a stand-in VMM for s: a sleep, or for ExitAtStart a process
// that fails at once.
func (d *Driver) Start(_ context.Context, s vmm.Spec) (vmm.Instance, error) {
	d.mu.Lock()
	fault := d.fault
	for word, f := range d.faultWhere {
		if slices.Contains(strings.Fields(s.Cmdline), word) {
			fault = f
		}
	}
	d.mu.Unlock()
	if fault == StartFails {
		return nil, errors.New("vmmtest: starting the VMM: exec format error")
	}
	console, vmmLog := filepath.Join(s.Dir, "console.log"), filepath.Join(s.Dir, "vmm.log")
	consoleText, vmmText, args := ConsoleBoot, "", []string{"sleep", "86400"}
	if fault == ExitAtStart {
		consoleText, vmmText, args = ConsolePanic, VMMComplaint, []string{"false"}
	}
	if err := os.WriteFile(console, []byte(consoleText), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(vmmLog, []byte(vmmText), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	// Its own session, as a real VMM's: it outlives whoever started it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vmmtest: starting the VMM: %w", err)
	}
	key, err := sshkey.NewKey()
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	g := &Guest{Spec: s, fault: fault, HostKey: key.PublicKey(), process: cmd.Process}
	g.srv = g.server()
	h := vmm.Watch(cmd.Process, console, vmmLog)
	go g.closeWhenGone(h.Done())
	d.mu.Lock()
	if d.guests == nil {
		d.guests = map[string]*Guest{}
	}
	d.guests[s.Dir] = g
	d.starts++
	d.mu.Unlock()
	return &instance{Handle: h, g: g}, nil
}

// Adopt takes back an instance this driver started for s.Dir, as a
// restarted daemon takes back a VMM: through its pid and start time.
func (d *Driver) Adopt(s vmm.Spec, id proc.ID) (vmm.Instance, error) {
	h, err := vmm.Adopt(id, filepath.Join(s.Dir, "console.log"), filepath.Join(s.Dir, "vmm.log"))
	if err != nil {
		return nil, err
	}
	return &instance{Handle: h, g: d.Guest(s.Dir)}, nil
}

// server is the guest's agent: the real server, with a power-off that
// ends the stand-in VMM as a guest's power-off ends QEMU.
func (g *Guest) server() *server.Server {
	return &server.Server{
		Ping: func() proto.PingResult {
			return proto.PingResult{Version: "vmmtest", Uptime: 1, Protocol: proto.Protocol}
		},
		Info: func() proto.InfoResult {
			g.mu.Lock()
			key := cmp.Or(g.keyAs, string(ssh.MarshalAuthorizedKey(g.HostKey)))
			g.mu.Unlock()
			return proto.InfoResult{Kernel: "vmmtest", Hostname: "vmmtest", SSHHostKey: key}
		},
		Identity: func(p proto.IdentityParams) (proto.IdentityResult, error) {
			if _, err := proto.ParseBootParams(p.Boot); err != nil {
				return proto.IdentityResult{}, err
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			g.ids = append(g.ids, p)
			if p.NewHostKey {
				k, err := sshkey.NewKey()
				if err != nil {
					return proto.IdentityResult{}, err
				}
				g.HostKey = k.PublicKey()
			}
			return proto.IdentityResult{SSHHostKey: cmp.Or(g.keyAs, string(ssh.MarshalAuthorizedKey(g.HostKey)))}, nil
		},
		Shutdown: func() {
			g.mu.Lock()
			g.shuts++
			g.mu.Unlock()
			if !g.faulty(IgnoreShutdown) {
				_ = g.process.Kill()
			}
		},
	}
}

// closeWhenGone drops the agent's connections once the VMM exited, as a
// VMM's exit closes its agent socket.
func (g *Guest) closeWhenGone(done <-chan struct{}) {
	<-done
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gone = true
	for _, c := range g.conns {
		c.Close()
	}
}

// instance is a running stand-in.
type instance struct {
	*vmm.Handle
	g *Guest // nil: adopted from a driver that did not start it
}

// DialAgent connects to the guest's agent; a Silent guest's connection
// takes bytes and never answers.
func (i *instance) DialAgent(ctx context.Context) (net.Conn, error) {
	g := i.g
	if g == nil {
		return nil, errors.New("vmmtest: no agent for an instance this driver did not start")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gone || g.fault == ExitAtStart {
		return nil, fmt.Errorf("vmmtest: dialing the agent: %w", syscall.ECONNREFUSED)
	}
	ours, theirs := net.Pipe()
	g.conns = append(g.conns, theirs)
	switch g.fault {
	case Silent:
		go discard(theirs)
	case Stalled:
		go func() {
			hello, _ := proto.AppendFrame(nil, proto.Frame{Kind: proto.KindHello})
			_, _ = theirs.Write(hello) // and nothing more is read or written
		}()
	default:
		go func() { _ = g.srv.Serve(theirs) }()
	}
	return ours, nil
}

func discard(c net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// Snapshot saves a stand-in VM: a state directory whose memory file
// names the guest, written whole or not at all; with stop its VMM ends,
// as QEMU's does after a save.
func (d *Driver) Snapshot(_ context.Context, vin vmm.Instance, s vmm.Spec, dir string, o vmm.SnapshotOptions) (vmm.State, error) {
	in, ok := vin.(*instance)
	if !ok || in.g == nil {
		return vmm.State{}, errors.New("vmmtest: snapshot of an instance this driver did not start")
	}
	st := vmm.State{VMM: d.Name(), MemoryMiB: s.MemoryMiB, VCPU: s.VCPU, Size: int64(len(s.Dir)), Saved: time.Now().UTC()}
	tmp := dir + ".partial"
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return st, err
	}
	defer os.RemoveAll(tmp)
	if o.Paused != nil {
		if err := o.Paused(); err != nil {
			return st, err
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, vmm.MemoryFile), []byte(s.Dir), 0o600); err != nil {
		return st, err
	}
	if err := vmm.WriteState(tmp, st); err != nil {
		return st, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return st, err
	}
	if o.Stop {
		_ = in.Process().Kill()
		<-in.Done()
	}
	d.mu.Lock()
	d.snapshots++
	d.mu.Unlock()
	return st, nil
}

// Restore starts a stand-in from a saved state: its guest is the saved
// one (the same SSH host key) under s. A state of another shape is
// refused, as a real driver refuses it.
func (d *Driver) Restore(ctx context.Context, s vmm.Spec, dir string, started func(vmm.Instance) error) (vmm.Instance, error) {
	if err := d.Loadable(ctx, s, dir); err != nil {
		return nil, err
	}
	from, err := os.ReadFile(filepath.Join(dir, vmm.MemoryFile))
	if err != nil {
		return nil, err
	}
	saved := d.Guest(string(from))
	in, err := d.Start(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := started(in); err != nil {
		_ = in.Process().Kill()
		<-in.Done()
		return nil, err
	}
	if saved != nil {
		// The saved guest's memory travels: its host key, and what a
		// hostile one reports instead.
		g := in.(*instance).g
		saved.mu.Lock()
		g.HostKey, g.keyAs = saved.HostKey, saved.keyAs
		saved.mu.Unlock()
	}
	d.mu.Lock()
	d.restores++
	d.mu.Unlock()
	return in, nil
}

// Loadable refuses a state of another shape, as a real driver does.
func (d *Driver) Loadable(_ context.Context, s vmm.Spec, dir string) error {
	return vmm.CheckSaved(dir, vmm.State{VMM: d.Name(), MemoryMiB: s.MemoryMiB, VCPU: s.VCPU})
}

// Restores counts the instances started from a saved state.
func (d *Driver) Restores() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.restores
}
