// Package egress is the egress service: what each VM tried to reach,
// as the host saw it (the daemon's DNS server, the firewall's log; never
// the guest's word), kept per VM in a capped log in its state directory,
// listed and followed by `banger vm egress`, and turned into the
// allow-list that would have allowed it (`--suggest`).
package egress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/hostnet"
	"github.com/bangerdev/banger/internal/logcap"
)

// LogName is a VM's egress log in its state directory.
const LogName = "egress.log"

// DefaultMaxBytes caps a VM's egress log, both halves.
const DefaultMaxBytes = 1 << 20

// Target is the VM a call names.
type Target struct {
	ID      string
	Network string
}

// Config wires a Service.
type Config struct {
	// Find is the VM named name; Dir a VM's state directory by ID.
	Find func(ctx context.Context, name string) (Target, error)
	Dir  func(id string) string
	// Egress is what the VM of that ID may reach now (api.Egress*) and
	// its allow-list, for the reason of a denial.
	Egress func(ctx context.Context, id string) (mode string, allow []string)
	// Deny are the destinations network.nat_deny names.
	Deny     []netip.Prefix
	MaxBytes int64 // per VM (default DefaultMaxBytes)
	Log      *slog.Logger
	// Denied is told of each denied attempt written to a VM's log (the
	// daemon's events); nil tells no one.
	Denied func(id string, e api.EgressEvent)
}

// Service keeps the VMs' egress logs.
type Service struct {
	cfg Config

	mu  sync.Mutex
	vms map[string]*vmLog // by ID, loaded on a VM's first event
}

// vmLog is a VM's log and what annotating it needs.
type vmLog struct {
	mu    sync.Mutex
	names map[netip.Addr]string // the name each address was last resolved from
	last  map[string]time.Time  // when an attempt was last written, to fold repeats
}

const (
	maxNames = 4096
	// repeat folds a retried attempt (a SYN sent again after 1 and 3 s,
	// datagrams of one flow) into the first: same destination and
	// verdict within it.
	repeat = 10 * time.Second
)

// New makes the service.
func New(cfg Config) *Service {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	return &Service{cfg: cfg, vms: map[string]*vmLog{}}
}

func (s *Service) path(id string) string { return filepath.Join(s.cfg.Dir(id), LogName) }

// vm is the VM's state, its names read back from its log the first time
// (outside the service's lock: other VMs' events do not wait on it).
func (s *Service) vm(id string) *vmLog {
	s.mu.Lock()
	v := s.vms[id]
	s.mu.Unlock()
	if v != nil {
		return v
	}
	v = &vmLog{names: map[netip.Addr]string{}, last: map[string]time.Time{}}
	_ = s.read(id, func(e api.EgressEvent) error {
		v.learn(e)
		return nil
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if known := s.vms[id]; known != nil {
		return known // another event loaded it meanwhile
	}
	s.vms[id] = v
	return v
}

// vmID is the shape of a VM's ID: its log's path is made from it.
var vmID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// learn keeps what a DNS answer says of names.
func (v *vmLog) learn(e api.EgressEvent) {
	if e.Kind != api.EgressDNS || e.Verdict != api.EgressAllowed {
		return
	}
	for _, a := range e.Answers {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			continue
		}
		if _, ok := v.names[addr]; !ok && len(v.names) >= maxNames {
			clear(v.names)
		}
		v.names[addr] = e.Name
	}
}

// Forget drops what the service holds of a deleted VM (its log went
// with its state directory).
func (s *Service) Forget(id string) {
	s.mu.Lock()
	delete(s.vms, id)
	s.mu.Unlock()
}

// DNS records a question a VM asked the daemon's DNS server.
func (s *Service) DNS(id string, e api.EgressEvent) {
	if !vmID.MatchString(id) {
		return
	}
	v := s.vm(id)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.learn(e)
	s.write(id, e)
}

// Attempt records a new connection the firewall logged.
func (s *Service) Attempt(a hostnet.Attempt) {
	if !vmID.MatchString(a.VM) {
		return
	}
	v := s.vm(a.VM)
	e := api.EgressEvent{Time: a.Time, Kind: api.EgressConnect, Verdict: api.EgressDenied, Proto: a.Proto,
		Dest: a.Dst.String(), Port: int(a.Port)}
	if a.Allowed {
		e.Verdict = api.EgressAllowed
	} else {
		e.Reason = s.reason(a)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	k := e.Verdict + " " + e.Proto + " " + e.Dest + ":" + strconv.Itoa(e.Port)
	if t, ok := v.last[k]; ok && a.Time.Sub(t) < repeat && a.Time.Sub(t) >= 0 {
		return
	}
	if len(v.last) >= maxNames {
		clear(v.last)
	}
	v.last[k] = a.Time
	e.Name = v.names[a.Dst]
	s.write(a.VM, e)
}

// Why an attempt was denied, from where it went and what the VM may do.
func (s *Service) reason(a hostnet.Attempt) string {
	switch {
	case a.ToHost:
		return api.ReasonHost
	case a.Dst.IsLinkLocalUnicast():
		return api.ReasonLinkLocal
	case slices.ContainsFunc(s.cfg.Deny, func(p netip.Prefix) bool { return p.Contains(a.Dst) }):
		return api.ReasonNATDeny
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.cfg.Egress == nil {
		return api.ReasonSandbox
	}
	switch mode, allow := s.cfg.Egress(ctx, a.VM); mode {
	case api.EgressAllowList:
		if l, err := allowlist.ParseList(allow); err == nil && l.Open() && l.Denied(a.Dst, a.Port) {
			return api.ReasonDenyRule
		}
		return api.ReasonAllowList
	}
	return api.ReasonSandbox
}

// write appends e to the VM's log and keeps it within its cap. A VM
// whose state directory is gone (deleted) gets nothing written.
func (s *Service) write(id string, e api.EgressEvent) {
	line, err := json.Marshal(e)
	if err != nil {
		return
	}
	path := s.path(id)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.cfg.Log.Warn("writing a VM's egress log", "vm", id, "err", err)
		}
		return
	}
	_, err = f.Write(append(line, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		_, err = logcap.Rotate(path, s.cfg.MaxBytes)
	}
	if err != nil {
		s.cfg.Log.Warn("writing a VM's egress log", "vm", id, "err", err)
	}
	if e.Verdict == api.EgressDenied && s.cfg.Denied != nil {
		s.cfg.Denied(id, e)
	}
}

// read calls each with the VM's events, oldest first.
func (s *Service) read(id string, each func(api.EgressEvent) error) error {
	var rest []byte
	_, err := logcap.Stream(s.path(id), func(b []byte) error {
		rest = append(rest, b...)
		var err error
		rest, err = lines(rest, each)
		return err
	})
	return err
}

// lines decodes the whole lines of b, returning what is left of it.
func lines(b []byte, each func(api.EgressEvent) error) ([]byte, error) {
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return b, nil
		}
		var e api.EgressEvent
		if json.Unmarshal(b[:i], &e) == nil {
			if err := each(e); err != nil {
				return nil, err
			}
		}
		b = b[i+1:]
	}
}

// followInterval is how often a follower looks for new events.
const followInterval = 250 * time.Millisecond

// Events sends the VM's events, oldest first, and with follow what
// comes after, until ctx ends or the VM is deleted.
func (s *Service) Events(ctx context.Context, p api.VMEgressParams, emit func(api.EgressEvent) error) (struct{}, error) {
	t, err := s.target(ctx, p.Name)
	if err != nil {
		return struct{}{}, err
	}
	path := s.path(t.ID)
	var rest []byte
	send := func(b []byte) error {
		rest = append(rest, b...)
		var err error
		rest, err = lines(rest, emit)
		return err
	}
	offset, err := logcap.Stream(path, send)
	if err != nil || !p.Follow {
		return struct{}{}, err
	}
	tick := time.NewTicker(followInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return struct{}{}, nil
		case <-tick.C:
		}
		if cur, err := s.cfg.Find(ctx, p.Name); err != nil || cur.ID != t.ID {
			return struct{}{}, nil // deleted: nothing more will come
		}
		before := offset
		if offset, err = logcap.From(path, offset, send); err != nil {
			return struct{}{}, err
		}
		if offset < before {
			rest = nil // rotated: a cut line is gone
		}
	}
}

// target finds a VM whose egress banger can see: one on the bridge.
func (s *Service) target(ctx context.Context, name string) (Target, error) {
	t, err := s.cfg.Find(ctx, name)
	if err != nil {
		return Target{}, err
	}
	if t.Network != api.NetworkBridge {
		return Target{}, fmt.Errorf("%w: vm %s is on the %s network: its connections leave through %s, where no firewall sees them; only bridge VMs have an egress log (--network bridge, a root daemon)",
			api.ErrInvalidArgument, name, t.Network, map[bool]string{true: "no NIC", false: "QEMU's or passt's own sockets"}[t.Network == api.NetworkNone])
	}
	return t, nil
}

// Suggest is the allow-list that would have allowed every connection
// the VM's log holds, and every name it was refused: names where the
// daemon's DNS resolved the address, with the ports seen; addresses
// otherwise. What no list opens (the host, link-local, nat_deny) is
// listed apart.
func (s *Service) Suggest(ctx context.Context, p api.VMRefParams) (api.VMEgressSuggestResult, error) {
	t, err := s.target(ctx, p.Name)
	if err != nil {
		return api.VMEgressSuggestResult{}, err
	}
	type want struct {
		anyPort bool
		ports   []uint16
	}
	var order []string
	wants := map[string]*want{}
	never := map[string]bool{}
	var nevers []string
	connected := map[string]bool{}
	var refused []string
	add := func(host string, port int, proto string) {
		w := wants[host]
		if w == nil {
			w = &want{}
			wants[host] = w
			order = append(order, host)
		}
		if port == 0 || (proto != "tcp" && proto != "udp") {
			w.anyPort = true
		} else if !slices.Contains(w.ports, uint16(port)) {
			w.ports = append(w.ports, uint16(port))
		}
	}
	err = s.read(t.ID, func(e api.EgressEvent) error {
		switch e.Kind {
		case api.EgressConnect:
			if e.Verdict == api.EgressDenied && (e.Reason == api.ReasonHost || e.Reason == api.ReasonLinkLocal || e.Reason == api.ReasonNATDeny) {
				k := fmt.Sprintf("%s %s:%d (%s)", e.Proto, e.Dest, e.Port, e.Reason)
				if !never[k] {
					never[k] = true
					nevers = append(nevers, k)
				}
				return nil
			}
			host := e.Dest
			if e.Name != "" {
				if _, err := allowlist.Parse(e.Name); err == nil {
					host = e.Name
				}
			}
			connected[host] = true
			add(host, e.Port, e.Proto)
		case api.EgressDNS:
			if e.Verdict == api.EgressDenied && (e.Reason == api.ReasonAllowList || e.Reason == api.ReasonSandbox) {
				refused = append(refused, e.Name)
			}
		}
		return nil
	})
	if err != nil {
		return api.VMEgressSuggestResult{}, err
	}
	// A name refused, and so never connected to: its ports are unknown.
	for _, name := range refused {
		if _, err := allowlist.Parse(name); err == nil && !connected[name] {
			add(strings.ToLower(name), 0, "")
		}
	}
	res := api.VMEgressSuggestResult{Name: p.Name, Allow: []string{}, Never: nevers}
	for _, host := range order {
		w := wants[host]
		rule := host
		if !w.anyPort {
			slices.Sort(w.ports)
			ps := make([]string, len(w.ports))
			for i, p := range w.ports {
				ps[i] = strconv.Itoa(int(p))
			}
			rule += ":" + strings.Join(ps, ",")
		}
		r, err := allowlist.Parse(rule)
		if err != nil {
			r, err = allowlist.Parse(host) // more ports than a rule holds
		}
		if err == nil {
			res.Allow = append(res.Allow, r.String())
		}
	}
	return res, nil
}
