// Package stats is the stats service: a background poller that samples
// every running VM (the guest's counters through its agent, the VMM's CPU
// and memory on the host) into a cache with a short history, so vm.stats
// answers at once; agent health and ping; the guest's listening ports,
// probed from the host for HTTP and HTTPS and optionally forwarded to the
// host's loopback; and the sweep that stops VMs idle past their
// auto-stop time. It reaches the VM service only through the function
// fields of Config.
package stats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
)

// Target is a running VM as the service sees it.
type Target struct {
	Name, ID string
	PID      int // the VMM's
	VCPU     int
	Network  string
	Addr     netip.Addr // on the bridge network
	// AutoStop is how long the VM may stay idle; 0 never stops it.
	AutoStop time.Duration
	// Suspend: an idle VM is suspended, not stopped.
	Suspend   bool
	StartedAt time.Time
}

// Agent is what the service asks of a guest's agent.
type Agent interface {
	Ping(ctx context.Context) (proto.PingResult, error)
	Stats(ctx context.Context) (proto.StatsResult, error)
	Ports(ctx context.Context) ([]proto.Socket, error)
	Dial(ctx context.Context, addr string) (net.Conn, error)
}

// VMs is what the service asks of the VM service.
type VMs interface {
	// Running lists the running VMs; Target finds one by name, failing
	// with api.ErrNotFound or api.ErrNotRunning; Suspended lists the
	// suspended VMs, whose forwards stay open.
	Running(ctx context.Context) ([]Target, error)
	Target(ctx context.Context, name string) (Target, error)
	Suspended(ctx context.Context) ([]Target, error)
	// Agent is a running VM's agent; Wake is Agent for a connection to a
	// VM's forward: a suspended VM is resumed first.
	Agent(ctx context.Context, name string) (Agent, error)
	Wake(ctx context.Context, name string) (Agent, error)
	// AutoStop stops an idle VM gracefully with reason, unless a
	// lifecycle verb holds it (then it reports false); AutoSuspend
	// suspends one whose Target says Suspend, the same way.
	AutoStop(ctx context.Context, name, reason string) (bool, error)
	AutoSuspend(ctx context.Context, name, reason string) (bool, error)
}

// Config wires a Service.
type Config struct {
	VMs VMs
	// Suspends says whether a VM can be suspended here (the driver saves
	// a VM's memory); without, an idle VM is stopped whatever it says.
	Suspends bool
	// Forwards keeps the loopback forwards, so a restarted daemon opens
	// them again; nil keeps them in memory only.
	Forwards ForwardStore
	// Self is the daemon's own uid: who asked for a forward when no
	// caller did (the daemon's own work, a forward kept by an older
	// daemon). A forward serves whoever asked for it, and root.
	Self     uint32
	Interval time.Duration // between polls
	History  int           // samples kept per VM
	ProcRoot string        // the host's /proc
	Now      func() time.Time
	Log      *slog.Logger
}

// Forward is a kept loopback forward of a guest port.
type Forward struct {
	VMID      string
	GuestPort int
	GuestAddr string // dialed in the guest
	HostAddr  string // listened on, on the host's loopback
	// UIDs asked for it: only they (and root) may connect. None: the
	// daemon's own user (a forward an older daemon kept).
	UIDs []uint32
}

// ForwardStore keeps forwards across daemon restarts.
type ForwardStore interface {
	Save(ctx context.Context, f Forward) error
	Drop(ctx context.Context, vmID string) error
	All(ctx context.Context) ([]Forward, error)
}

// Service is the stats service.
type Service struct {
	cfg Config

	mu       sync.Mutex
	series   map[string]*series // by VM ID
	activity map[string]*activity
	forwards map[string]map[int]*forward // VM ID → guest port
	polling  map[string]bool             // VM IDs a poll is sampling or stopping
}

// series is one VM's samples.
type series struct {
	last    api.VMStats
	raw     proto.StatsResult
	hostCPU uint64 // the VMM's utime+stime ticks at last
	history []api.VMStatsSample
}

// New makes a service; Run polls until its context ends.
func New(cfg Config) *Service {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if cfg.History <= 0 {
		cfg.History = 60
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	return &Service{cfg: cfg, series: map[string]*series{}, activity: map[string]*activity{}, forwards: map[string]map[int]*forward{}, polling: map[string]bool{}}
}

// agentTimeout bounds one call to an agent.
const agentTimeout = 5 * time.Second

// wakeTimeout bounds a forwarded connection's wait for its VM to resume.
const wakeTimeout = 2 * time.Minute

// Run polls every interval until ctx ends, then closes the forwards. A
// poll never waits for the one before: a VM still being sampled or
// stopped from the last one is skipped, the others are not held up.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	defer s.closeForwards(context.WithoutCancel(ctx), func(string) bool { return true }, false)
	s.restoreForwards(ctx)
	var polls sync.WaitGroup
	defer polls.Wait()
	for {
		polls.Go(func() { s.Poll(ctx) })
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll samples every running VM once, each on its own (a VM whose
// agent is stuck delays no other), forgets VMs that stopped, and stops
// those idle past their time.
func (s *Service) Poll(ctx context.Context) {
	targets, err := s.cfg.VMs.Running(ctx)
	if err != nil {
		s.cfg.Log.Warn("listing running VMs for stats", "err", err)
		return
	}
	alive := map[string]bool{}
	for _, t := range targets {
		alive[t.ID] = true
	}
	// A suspended VM keeps its forwards: a connection wakes it.
	suspended, err := s.suspended(ctx)
	if err != nil {
		s.cfg.Log.Warn("listing suspended VMs for stats", "err", err)
		return
	}
	for _, t := range suspended {
		alive[t.ID] = true
	}
	// What stopped is forgotten first, against the list just read: done
	// after the sampling, a slow VM would leave the list stale, and a VM
	// started meanwhile would lose its forwards.
	s.mu.Lock()
	for id := range s.series {
		if !alive[id] {
			delete(s.series, id)
		}
	}
	s.mu.Unlock()
	s.closeForwards(ctx, func(id string) bool { return !alive[id] }, true)
	var wg sync.WaitGroup
	for _, t := range targets {
		if !s.claim(t.ID) {
			continue // the last poll of t is still under way
		}
		wg.Go(func() {
			defer s.unclaim(t.ID)
			if _, err := s.collect(ctx, t); err != nil {
				s.cfg.Log.Debug("sampling a VM", "vm", t.Name, "err", err)
			}
			s.sweep(ctx, t)
		})
	}
	wg.Wait()
}

// suspended lists the suspended VMs (none where none can be).
func (s *Service) suspended(ctx context.Context) ([]Target, error) {
	if !s.cfg.Suspends {
		return nil, nil
	}
	return s.cfg.VMs.Suspended(ctx)
}

// claim marks a VM's poll under way, unless one already is.
func (s *Service) claim(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.polling[id] {
		return false
	}
	s.polling[id] = true
	return true
}

func (s *Service) unclaim(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.polling, id)
}

// collect takes one sample of t into its series.
func (s *Service) collect(ctx context.Context, t Target) (api.VMStats, error) {
	cctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	a, err := s.cfg.VMs.Agent(cctx, t.Name)
	if err != nil {
		return api.VMStats{}, s.agentErr(t.Name, err)
	}
	raw, err := a.Stats(cctx)
	if err != nil {
		return api.VMStats{}, s.agentErr(t.Name, err)
	}
	now := s.cfg.Now()
	hostCPU, rss := s.vmmUsage(t.PID)
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.series[t.ID]
	st := api.VMStats{
		Name: t.Name, Time: now, VCPU: t.VCPU, MemTotal: raw.MemTotal, MemAvailable: raw.MemAvailable,
		HostRSS: rss, DiskUsed: raw.DiskUsed, DiskSize: raw.DiskSize, NetRx: raw.NetRx, NetTx: raw.NetTx,
		Load1: raw.Load1, Load5: raw.Load5, Load15: raw.Load15, Procs: raw.Procs, Uptime: raw.Uptime, Sessions: raw.Sessions,
	}
	if raw.MemTotal > raw.MemAvailable {
		st.MemUsed = raw.MemTotal - raw.MemAvailable
	}
	ncpu := max(raw.NumCPU, 1)
	if prev != nil && raw.CPUTotal > prev.raw.CPUTotal {
		st.CPUPercent = percent(raw.CPUBusy-prev.raw.CPUBusy, raw.CPUTotal-prev.raw.CPUTotal) * float64(ncpu)
		if dt := now.Sub(prev.last.Time).Seconds(); dt > 0 {
			st.NetRxRate = float64(sub(raw.NetRx, prev.raw.NetRx)) / dt
			st.NetTxRate = float64(sub(raw.NetTx, prev.raw.NetTx)) / dt
			st.HostCPUPercent = float64(sub(hostCPU, prev.hostCPU)) / clockTicks / dt * 100
		}
	} else if raw.CPUTotal > 0 {
		st.CPUPercent = percent(raw.CPUBusy, raw.CPUTotal) * float64(ncpu) // since boot, until there are two
	}
	ser := prev
	if ser == nil || raw.Uptime < prev.raw.Uptime { // new, or the guest rebooted
		ser = &series{}
		s.series[t.ID] = ser
	}
	ser.last, ser.raw, ser.hostCPU = st, raw, hostCPU
	ser.history = append(ser.history, api.VMStatsSample{Time: now, CPUPercent: st.CPUPercent, MemUsed: st.MemUsed,
		NetRxRate: st.NetRxRate, NetTxRate: st.NetTxRate})
	if n := len(ser.history) - s.cfg.History; n > 0 {
		ser.history = append([]api.VMStatsSample(nil), ser.history[n:]...)
	}
	if raw.Sessions > 0 {
		s.touchLocked(t.Name, now)
	}
	return s.withHistory(ser), nil
}

func percent(part, whole uint64) float64 {
	if whole == 0 {
		return 0
	}
	return float64(part) / float64(whole) * 100
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0 // a counter reset
	}
	return a - b
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture banger runs on.
const clockTicks = 100

// vmmUsage reads the VMM process's CPU ticks and resident bytes.
func (s *Service) vmmUsage(pid int) (ticks, rss uint64) {
	if pid <= 0 {
		return 0, 0
	}
	dir := filepath.Join(s.cfg.ProcRoot, strconv.Itoa(pid))
	if b, err := os.ReadFile(filepath.Join(dir, "stat")); err == nil {
		// Fields after the command, which may hold spaces: state is 3rd,
		// utime and stime the 14th and 15th.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				u, _ := strconv.ParseUint(f[11], 10, 64)
				st, _ := strconv.ParseUint(f[12], 10, 64)
				ticks = u + st
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "statm")); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseUint(f[1], 10, 64)
			rss = pages * uint64(os.Getpagesize())
		}
	}
	return ticks, rss
}

func (s *Service) withHistory(ser *series) api.VMStats {
	st := ser.last
	st.History = append([]api.VMStatsSample(nil), ser.history...)
	return st
}

// agentErr says a running VM's agent did not answer in time as
// api.ErrUnresponsive.
func (s *Service) agentErr(name string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("vm %s: its agent did not answer within %s: %w; see `banger vm logs %s`", name, agentTimeout, api.ErrUnresponsive, name)
	}
	if errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrNotRunning) {
		return err // says which VM already
	}
	return fmt.Errorf("vm %s: %w", name, err)
}

// Stats is the latest sample of the VM p names, taken now if the poller
// has none yet.
func (s *Service) Stats(ctx context.Context, p api.VMRefParams) (api.VMStats, error) {
	t, err := s.cfg.VMs.Target(ctx, p.Name)
	if err != nil {
		return api.VMStats{}, err
	}
	s.mu.Lock()
	ser := s.series[t.ID]
	var st api.VMStats
	if ser != nil {
		st = s.withHistory(ser)
	}
	s.mu.Unlock()
	if ser != nil {
		return st, nil
	}
	return s.collect(ctx, t)
}

// StatsAll is the latest sample of every running VM.
func (s *Service) StatsAll(ctx context.Context) (api.VMStatsList, error) {
	targets, err := s.cfg.VMs.Running(ctx)
	if err != nil {
		return api.VMStatsList{}, err
	}
	out := api.VMStatsList{VMs: []api.VMStats{}}
	for _, t := range targets {
		st, err := s.Stats(ctx, api.VMRefParams{Name: t.Name})
		if err != nil {
			st = api.VMStats{Name: t.Name, VCPU: t.VCPU} // no sample: shown empty, not an error for the rest
		}
		out.VMs = append(out.VMs, st)
	}
	return out, nil
}

// Health pings the agent of the VM p names, timing the answer.
func (s *Service) Health(ctx context.Context, p api.VMRefParams) (api.VMHealth, error) {
	name := p.Name
	if _, err := s.cfg.VMs.Target(ctx, name); err != nil {
		return api.VMHealth{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	start := time.Now()
	a, err := s.cfg.VMs.Agent(cctx, name)
	if err != nil {
		return api.VMHealth{}, s.agentErr(name, err)
	}
	r, err := a.Ping(cctx)
	if err != nil {
		return api.VMHealth{}, s.agentErr(name, err)
	}
	return api.VMHealth{Name: name, LatencyMS: float64(time.Since(start).Microseconds()) / 1000, AgentVersion: r.Version, Uptime: r.Uptime}, nil
}
