package e2b

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/tokenfile"
)

// Bounds of what a request may ask.
const (
	maxBody       = 1 << 20
	maxTimeout    = 24 * time.Hour // E2B's longest (Pro)
	maxMetadata   = 64             // keys, each key and value at most 256 bytes
	maxEnvs       = 256
	maxListLimit  = 100
	defaultTTL    = 5 * time.Minute // when a create or connect gives none: the SDKs' default
	clientID      = "banger"
	stateRunning  = "running"
	statePaused   = "paused"
	onTimeoutKill = "kill"
	onTimeoutStop = "pause"
)

// newSandbox is the body of POST /sandboxes (openapi NewSandbox).
type newSandbox struct {
	TemplateID    string                  `json:"templateID"`
	Timeout       *int                    `json:"timeout"`
	AutoPause     *bool                   `json:"autoPause"`
	Secure        *bool                   `json:"secure"`
	AllowInternet *bool                   `json:"allow_internet_access"`
	Network       *networkConfig          `json:"network"`
	Metadata      map[string]string       `json:"metadata"`
	EnvVars       map[string]string       `json:"envVars"`
	AutoResume    *struct{ Enabled bool } `json:"autoResume"`
	AutoPauseMem  *bool                   `json:"autoPauseMemory"`
	VolumeMounts  []json.RawMessage       `json:"volumeMounts"`
}

type networkConfig struct {
	AllowOut    []string        `json:"allowOut,omitempty"`
	DenyOut     []string        `json:"denyOut,omitempty"`
	AllowPublic *bool           `json:"allowPublicTraffic,omitempty"`
	MaskHost    string          `json:"maskRequestHost,omitempty"`
	Rules       json.RawMessage `json:"rules,omitempty"`
	EgressProxy json.RawMessage `json:"egressProxy,omitempty"`
}

// egress turns a sandbox's network settings into banger's egress: NAT
// to the whole internet, or an allow-list. Without the internet
// (allow_internet_access false, or denyOut 0.0.0.0/0) allowOut is a
// closed list; other denyOut CIDRs make an open list ("!CIDR" rules)
// with allowOut as its exceptions, which E2B's precedence of allowOut
// over denyOut is; allowOut alone is a closed list, stricter than E2B,
// where it changes nothing until something is denied.
func (n *networkConfig) egress(allowInternet *bool) (nat bool, rules []string, err error) {
	internet := allowInternet == nil || *allowInternet
	if n == nil {
		return internet, nil, nil
	}
	if len(n.Rules) > 0 && string(n.Rules) != "{}" || len(n.EgressProxy) > 0 && string(n.EgressProxy) != "null" || n.MaskHost != "" {
		return false, nil, fmt.Errorf("%w: network rules, egress proxies and host masks are not supported; allowOut and denyOut are", api.ErrInvalidArgument)
	}
	for _, a := range n.AllowOut {
		if strings.HasPrefix(strings.TrimSpace(a), "!") {
			return false, nil, fmt.Errorf("%w: allowOut %q: what to deny goes in denyOut", api.ErrInvalidArgument, a)
		}
	}
	var denies []string
	for _, d := range n.DenyOut {
		r, err := allowlist.Parse("!" + d)
		if err != nil || len(r.Ports) > 0 {
			return false, nil, fmt.Errorf("%w: denyOut %q: write an IPv4 address or CIDR (0.0.0.0/0 for all traffic); names are allowed only in allowOut", api.ErrInvalidArgument, d)
		}
		if r.Prefix.Bits() == 0 {
			internet = false
		}
		denies = append(denies, r.String())
	}
	switch {
	case !internet:
		return len(n.AllowOut) > 0, n.AllowOut, nil
	case len(denies) > 0:
		return true, append(denies, n.AllowOut...), nil
	case len(n.AllowOut) > 0:
		return true, n.AllowOut, nil
	}
	return true, nil, nil
}

// created is openapi's Sandbox.
type created struct {
	TemplateID         string  `json:"templateID"`
	SandboxID          string  `json:"sandboxID"`
	Alias              string  `json:"alias,omitempty"`
	ClientID           string  `json:"clientID"`
	EnvdVersion        string  `json:"envdVersion"`
	EnvdAccessToken    string  `json:"envdAccessToken"`
	TrafficAccessToken *string `json:"trafficAccessToken"`
	Domain             *string `json:"domain"`
}

// detail is openapi's SandboxDetail (and, less the tokens, ListedSandbox).
type detail struct {
	TemplateID      string            `json:"templateID"`
	Alias           string            `json:"alias,omitempty"`
	SandboxID       string            `json:"sandboxID"`
	ClientID        string            `json:"clientID"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           time.Time         `json:"endAt"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	Domain          *string           `json:"domain,omitempty"`
	CPUCount        int               `json:"cpuCount"`
	MemoryMB        int               `json:"memoryMB"`
	DiskSizeMB      int64             `json:"diskSizeMB"`
	Metadata        map[string]string `json:"metadata"`
	State           string            `json:"state"`
	AllowInternet   *bool             `json:"allowInternetAccess,omitempty"`
	Network         *networkConfig    `json:"network,omitempty"`
	Lifecycle       *lifecycle        `json:"lifecycle,omitempty"`
	VolumeMounts    []struct{}        `json:"volumeMounts"`
}

type lifecycle struct {
	AutoResume bool   `json:"autoResume"`
	OnTimeout  string `json:"onTimeout"`
}

// apiError is openapi's Error.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// caller is the key a control-plane request came with.
type caller struct{ key tokenfile.Token }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Code: code, Message: fmt.Sprintf(format, args...)})
}

// writeErr maps banger's errors onto E2B's codes.
func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, api.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, api.ErrInvalidArgument), errors.Is(err, api.ErrInvalidRequest):
		code = http.StatusBadRequest
	case errors.Is(err, api.ErrAlreadyExists), errors.Is(err, api.ErrInUse), errors.Is(err, api.ErrNotRunning):
		code = http.StatusConflict
	case errors.Is(err, api.ErrPermissionDenied):
		code = http.StatusForbidden
	case errors.Is(err, api.ErrNoSpace):
		code = http.StatusInsufficientStorage
	case errors.Is(err, api.ErrLimitExceeded):
		code = http.StatusTooManyRequests
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	writeError(w, code, "%s", err.Error())
}

func decodeBody(r *http.Request, v any) error {
	if r.Body == nil || r.ContentLength == 0 {
		return nil
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: the request body: %w", api.ErrInvalidArgument, err)
	}
	return nil
}

// newID is a sandbox ID as E2B's look: "i" and 19 of [a-z0-9].
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	b[0] = 'i'
	for i := 1; i < len(b); i++ {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func (s *Service) controlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /sandboxes", s.withKey(s.create))
	mux.HandleFunc("POST /v2/sandboxes", s.withKey(s.create))
	mux.HandleFunc("GET /sandboxes", s.withKey(s.listV1))
	mux.HandleFunc("GET /v2/sandboxes", s.withKey(s.listV2))
	mux.HandleFunc("GET /sandboxes/{id}", s.withKey(s.owned(s.info)))
	mux.HandleFunc("DELETE /sandboxes/{id}", s.withKey(s.owned(s.kill)))
	mux.HandleFunc("POST /sandboxes/{id}/timeout", s.withKey(s.setTimeout))
	mux.HandleFunc("POST /sandboxes/{id}/refreshes", s.withKey(s.refresh))
	mux.HandleFunc("POST /sandboxes/{id}/pause", s.withKey(s.owned(s.pause)))
	mux.HandleFunc("POST /sandboxes/{id}/connect", s.withKey(s.connect))
	mux.HandleFunc("POST /sandboxes/{id}/resume", s.withKey(s.connect))
	mux.HandleFunc("POST /v2/sandboxes/{id}/connect", s.withKey(s.connect))
	mux.HandleFunc("POST /sandboxes/{id}/fork", s.withKey(s.fork))
	mux.HandleFunc("GET /sandboxes/{id}/metrics", s.withKey(s.owned(s.metrics)))
	mux.HandleFunc("GET /sandboxes/metrics", s.withKey(s.metricsOf))
	mux.HandleFunc("PUT /sandboxes/{id}/network", s.withKey(s.owned(s.updateNetwork)))
	mux.HandleFunc("GET /sandboxes/{id}/logs", s.withKey(s.owned(s.logsV1)))
	mux.HandleFunc("GET /v2/sandboxes/{id}/logs", s.withKey(s.owned(s.logsV2)))
	mux.HandleFunc("POST /sandboxes/{id}/snapshots", s.withKey(s.owned(s.snapshotCreate)))
	mux.HandleFunc("GET /snapshots", s.withKey(s.snapshotList))
	mux.HandleFunc("DELETE /templates/{id}", s.withKey(s.templateDelete))
}

// owned passes h the sandbox the path names, when the caller's key made
// it.
func (s *Service) owned(h func(http.ResponseWriter, *http.Request, caller, sandbox)) func(http.ResponseWriter, *http.Request, caller) {
	return func(w http.ResponseWriter, r *http.Request, c caller) {
		sb, err := s.own(c, r.PathValue("id"))
		if err != nil {
			writeErr(w, err)
			return
		}
		h(w, r, c, sb)
	}
}

// create: POST /sandboxes.
func (s *Service) create(w http.ResponseWriter, r *http.Request, c caller) {
	var req newSandbox
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	sb, p, from, err := s.plan(c, req)
	if err != nil {
		writeErr(w, err)
		return
	}
	if err := s.admit(c, sb); err != nil {
		writeErr(w, err)
		return
	}
	defer s.release(sb.ID)
	var v api.VM
	if from != nil {
		// From a snapshot: a copy of its VM, started from its checkpoint.
		var res api.VMForkResult
		if res, err = s.o.VMs.Fork(r.Context(), api.VMForkParams{Name: from.VM, Checkpoint: from.Tag, Prefix: sb.ID}); err == nil && len(res.VMs) == 1 {
			v = res.VMs[0]
		}
	} else {
		v, err = s.o.VMs.Create(r.Context(), p)
	}
	if err != nil {
		s.forget(sb.ID)
		writeErr(w, fmt.Errorf("creating sandbox from template %s: %w", sb.Template, err))
		return
	}
	if from == nil {
		s.ensureUser(r.Context(), sb.ID)
	}
	s.mu.Lock()
	if rec, ok := s.sandboxes[sb.ID]; ok && v.MemoryMiB > 0 {
		rec.CPUs, rec.MemoryMiB, rec.DiskMiB = v.VCPU, v.MemoryMiB, v.DiskSize>>20
	}
	s.mu.Unlock()
	s.o.Logger.Info("e2b sandbox created", "key", c.key.ID, "sandbox", sb.ID, "template", sb.Template)
	s.logf(sb.ID, "info", "sandbox created", "template", sb.Template, "user", s.userIn(sb.ID, ""))
	writeJSON(w, http.StatusCreated, s.createdOf(sb))
}

// plan checks a create and turns it into a record and a VM create, or
// the snapshot to fork it from.
func (s *Service) plan(c caller, req newSandbox) (*sandbox, api.VMCreateParams, *snapshot, error) {
	fail := func(format string, args ...any) (*sandbox, api.VMCreateParams, *snapshot, error) {
		return nil, api.VMCreateParams{}, nil, fmt.Errorf("%w: "+format, append([]any{api.ErrInvalidArgument}, args...)...)
	}
	if req.TemplateID == "" {
		req.TemplateID = "base"
	}
	tpl, ok := s.template(req.TemplateID)
	var from *snapshot
	if !ok {
		if from, ok = s.snapshotOf(c.key.ID, req.TemplateID); !ok {
			return nil, api.VMCreateParams{}, nil, fmt.Errorf("template %q: %w; map it to an image with `banger e2b template set %s IMAGE`, or name one of this key's snapshots", req.TemplateID, api.ErrNotFound, req.TemplateID)
		}
		tpl = api.E2BTemplate{Name: from.handle(), VCPU: from.Of.CPUs, MemoryMiB: from.Of.MemoryMiB, DiskSize: from.Of.DiskMiB << 20}
	}
	ttl := defaultTTL
	if req.Timeout != nil {
		ttl = time.Duration(*req.Timeout) * time.Second
	}
	if ttl < 0 || ttl > maxTimeout {
		return fail("timeout %v: between 0 and %v", ttl, maxTimeout)
	}
	if err := checkMap("metadata", req.Metadata, maxMetadata); err != nil {
		return nil, api.VMCreateParams{}, nil, err
	}
	if err := checkMap("envVars", req.EnvVars, maxEnvs); err != nil {
		return nil, api.VMCreateParams{}, nil, err
	}
	if len(req.VolumeMounts) > 0 {
		return fail("volume mounts are E2B's cloud volumes, which a banger host does not have")
	}
	now := s.o.Now().UTC()
	sb := &sandbox{ID: newID(), KeyID: c.key.ID, Template: tpl.Name, Metadata: req.Metadata, Env: req.EnvVars,
		Started: now, EndAt: now.Add(ttl), OnTimeout: onTimeoutKill, CPUs: tpl.VCPU, MemoryMiB: tpl.MemoryMiB,
		DiskMiB: tpl.DiskSize >> 20, Internet: req.AllowInternet}
	if req.AutoPause != nil && *req.AutoPause {
		sb.OnTimeout = onTimeoutStop
		sb.PauseCold = req.AutoPauseMem != nil && !*req.AutoPauseMem
	}
	if req.AutoResume != nil && req.AutoResume.Enabled {
		return fail("autoResume (waking a paused sandbox by traffic) is not supported; resume it with Sandbox.connect()")
	}
	p := api.VMCreateParams{Name: sb.ID, Image: tpl.Image, VCPU: tpl.VCPU, MemoryMiB: tpl.MemoryMiB, DiskSize: tpl.DiskSize, Creator: "e2b:" + c.key.Name}
	nat, rules, err := req.Network.egress(req.AllowInternet)
	if err != nil {
		return nil, api.VMCreateParams{}, nil, err
	}
	if n := req.Network; n != nil {
		sb.AllowOut, sb.DenyOut = n.AllowOut, n.DenyOut
		sb.Public = n.AllowPublic != nil && *n.AllowPublic
	}
	p.Allow = rules
	if len(rules) == 0 { // an allow-list is its own way out
		p.NAT = &nat
	}
	if !nat {
		p.Network = "none"
	}
	if sb.MemoryMiB == 0 {
		sb.MemoryMiB = s.o.DefaultMemoryMiB
	}
	if from != nil {
		// A copy of the snapshot's VM: its network is its source's.
		wasNAT, wasRules, _ := from.Of.network().egress(from.Of.Internet)
		if (req.Network != nil || !nat) && (nat != wasNAT || !slices.Equal(rules, wasRules)) {
			return fail("snapshot %s keeps its sandbox's network (internet %v, allowOut %v, denyOut %v); ask for that, or leave the network settings out", from.handle(), from.Of.Internet == nil || *from.Of.Internet, from.Of.AllowOut, from.Of.DenyOut)
		}
		sb.Internet, sb.AllowOut, sb.DenyOut = from.Of.Internet, from.Of.AllowOut, from.Of.DenyOut
		sb.User = from.Of.User
		env := maps.Clone(from.Of.Env)
		if env == nil && len(req.EnvVars) > 0 {
			env = map[string]string{}
		}
		maps.Copy(env, req.EnvVars)
		sb.Env = env
	}
	return sb, p, from, nil
}

// network is the sandbox's network settings as its create gave them.
func (sb *sandbox) network() *networkConfig {
	return &networkConfig{AllowOut: sb.AllowOut, DenyOut: sb.DenyOut}
}

func checkMap(what string, m map[string]string, max int) error {
	if len(m) > max {
		return fmt.Errorf("%w: %s: %d entries, at most %d", api.ErrInvalidArgument, what, len(m), max)
	}
	for k, v := range m {
		if k == "" || len(k) > 256 || len(v) > 4096 || strings.ContainsRune(k, 0) || strings.ContainsRune(v, 0) {
			return fmt.Errorf("%w: %s: key %.40q: keys of 1 to 256 bytes, values of at most 4096, no NUL", api.ErrInvalidArgument, what, k)
		}
		if what == "envVars" && strings.ContainsRune(k, '=') {
			return fmt.Errorf("%w: envVars: %.40q has '='", api.ErrInvalidArgument, k)
		}
	}
	return nil
}

// admit records sb, refusing it over its key's limits. The record is
// marked pending until release, so a timeout sweep leaves it be.
func (s *Service) admit(c caller, sb *sandbox) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, mem := 0, 0
	for _, o := range s.sandboxes {
		if o.KeyID == c.key.ID {
			n++
			mem += o.MemoryMiB
		}
	}
	if c.key.MaxSandboxes > 0 && n+1 > c.key.MaxSandboxes {
		return fmt.Errorf("%w: key %s may have %d sandboxes at once and has %d; kill one first", api.ErrLimitExceeded, c.key.Name, c.key.MaxSandboxes, n)
	}
	if c.key.MaxMemoryMiB > 0 && mem+sb.MemoryMiB > c.key.MaxMemoryMiB {
		return fmt.Errorf("%w: key %s may have %d MiB of sandboxes and has %d; this one asks %d", api.ErrLimitExceeded, c.key.Name, c.key.MaxMemoryMiB, mem, sb.MemoryMiB)
	}
	s.sandboxes[sb.ID] = sb
	s.pending[sb.ID] = true
	return s.saveLocked()
}

func (s *Service) release(id string) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

// forget drops a sandbox's record and its processes.
func (s *Service) forget(id string) {
	s.endProcesses(id)
	s.mu.Lock()
	delete(s.sandboxes, id)
	delete(s.logs, id)
	err := s.saveLocked()
	s.mu.Unlock()
	if err != nil {
		s.o.Logger.Warn("e2b: saving state", "err", err)
	}
}

// endProcesses kills what runs in a sandbox through the API: its
// processes and its watchers.
func (s *Service) endProcesses(id string) {
	s.mu.Lock()
	procs := s.procs[id]
	delete(s.procs, id)
	watchers := s.watchers[id]
	delete(s.watchers, id)
	s.mu.Unlock()
	if procs != nil {
		procs.killAll()
	}
	for _, w := range watchers {
		w.cancel()
	}
}

// addWatcher keeps a sandbox's new watcher under a fresh ID.
func (s *Service) addWatcher(id string, w *dirWatcher) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.watchers[id]) >= maxWatchers {
		return "", fmt.Errorf("sandbox %s has %d watchers, at most %d (remove one)", id, len(s.watchers[id]), maxWatchers)
	}
	if s.watchers[id] == nil {
		s.watchers[id] = map[string]*dirWatcher{}
	}
	wid := newID()[1:]
	s.watchers[id][wid] = w
	return wid, nil
}

// watcher is a sandbox's watcher, taken out with remove.
func (s *Service) watcher(id, wid string, remove bool) (*dirWatcher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.watchers[id][wid]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher %q not found", wid))
	}
	if remove {
		delete(s.watchers[id], wid)
	}
	return w, nil
}

func (s *Service) createdOf(sb *sandbox) created {
	domain := s.o.Domain
	traffic := s.trafficToken(sb.ID)
	return created{TemplateID: sb.Template, SandboxID: sb.ID, Alias: sb.Template, ClientID: clientID, EnvdVersion: EnvdVersion,
		EnvdAccessToken: s.envdToken(sb.ID), TrafficAccessToken: &traffic, Domain: &domain}
}

// own is the sandbox id when c's key made it; any other is "not found",
// so a key learns nothing of another's sandboxes. One being killed is
// gone already, as in E2B: a connect must not race the kill.
func (s *Service) own(c caller, id string) (sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok || sb.KeyID != c.key.ID || s.ending[id] {
		return sandbox{}, fmt.Errorf("sandbox %q: %w", id, api.ErrNotFound)
	}
	return *sb, nil
}

func (s *Service) detailOf(ctx context.Context, sb sandbox, tokens bool) detail {
	domain := s.o.Domain
	d := detail{TemplateID: sb.Template, Alias: sb.Template, SandboxID: sb.ID, ClientID: clientID, StartedAt: sb.Started, EndAt: sb.EndAt,
		EnvdVersion: EnvdVersion, Domain: &domain, CPUCount: sb.CPUs, MemoryMB: sb.MemoryMiB, DiskSizeMB: sb.DiskMiB,
		Metadata: sb.Metadata, State: stateRunning, AllowInternet: sb.Internet, VolumeMounts: []struct{}{},
		Lifecycle: &lifecycle{OnTimeout: sb.OnTimeout}}
	if d.Metadata == nil {
		d.Metadata = map[string]string{}
	}
	if sb.Paused {
		d.State = statePaused
	}
	if tokens {
		d.EnvdAccessToken = s.envdToken(sb.ID)
		pub := sb.Public
		d.Network = &networkConfig{AllowOut: sb.AllowOut, DenyOut: sb.DenyOut, AllowPublic: &pub}
	}
	if v, err := s.o.VMs.Show(ctx, api.VMRefParams{Name: sb.ID}); err == nil {
		d.CPUCount, d.MemoryMB, d.DiskSizeMB = v.VCPU, v.MemoryMiB, v.DiskSize>>20
	}
	return d
}

// info: GET /sandboxes/{id}.
func (s *Service) info(w http.ResponseWriter, r *http.Request, c caller, sb sandbox) {
	writeJSON(w, http.StatusOK, s.detailOf(r.Context(), sb, true))
}

// listed is the key's sandboxes that pass the query's filters, newest
// first.
func (s *Service) listed(c caller, q url.Values, states []string) ([]sandbox, error) {
	var want map[string]string
	if m := q.Get("metadata"); m != "" {
		vals, err := url.ParseQuery(m)
		if err != nil {
			return nil, fmt.Errorf("%w: metadata filter %q: key=value pairs joined by &", api.ErrInvalidArgument, m)
		}
		want = map[string]string{}
		for k, v := range vals {
			want[k] = v[0]
		}
	}
	var after time.Time
	if a := q.Get("startedAfter"); a != "" {
		t, err := time.Parse(time.RFC3339Nano, a)
		if err != nil {
			return nil, fmt.Errorf("%w: startedAfter %q: an RFC 3339 time", api.ErrInvalidArgument, a)
		}
		after = t
	}
	tpl := q.Get("template")
	s.mu.Lock()
	var out []sandbox
	for _, sb := range s.sandboxes {
		if sb.KeyID != c.key.ID || s.pending[sb.ID] || s.ending[sb.ID] {
			continue
		}
		state := stateRunning
		if sb.Paused {
			state = statePaused
		}
		if len(states) > 0 && !contains(states, state) || tpl != "" && sb.Template != tpl || sb.Started.Before(after) {
			continue
		}
		ok := true
		for k, v := range want {
			if sb.Metadata[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, *sb)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.After(out[j].Started)
		}
		return out[i].ID < out[j].ID
	})
	if q.Get("order") == "asc" {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// page reads a listing's limit and nextToken (an offset given out in
// x-next-token).
func page(q url.Values) (from, limit int, err error) {
	limit = maxListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return 0, 0, fmt.Errorf("%w: limit %q: 1 to %d", api.ErrInvalidArgument, v, maxListLimit)
		}
		limit = n
	}
	if v := q.Get("nextToken"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, fmt.Errorf("%w: nextToken %q: a token from x-next-token", api.ErrInvalidArgument, v)
		}
		from = n
	}
	return from, limit, nil
}

// pageOf is l's page from from, limit long, saying in x-next-token
// where the next begins when there is one.
func pageOf[T any](w http.ResponseWriter, l []T, from, limit int) []T {
	from = min(from, len(l))
	to := min(from+limit, len(l))
	if to < len(l) {
		w.Header().Set("X-Next-Token", strconv.Itoa(to))
	}
	return l[from:to]
}

// listV1: GET /sandboxes, the running ones.
func (s *Service) listV1(w http.ResponseWriter, r *http.Request, c caller) {
	l, err := s.listed(c, r.URL.Query(), []string{stateRunning})
	if err != nil {
		writeErr(w, err)
		return
	}
	out := make([]detail, 0, len(l))
	for _, sb := range l {
		out = append(out, s.detailOf(r.Context(), sb, false))
	}
	writeJSON(w, http.StatusOK, out)
}

// listV2: GET /v2/sandboxes, paged by an offset in x-next-token.
func (s *Service) listV2(w http.ResponseWriter, r *http.Request, c caller) {
	q := r.URL.Query()
	var states []string
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			if st != stateRunning && st != statePaused {
				writeError(w, http.StatusBadRequest, "state %q: running or paused", st)
				return
			}
			states = append(states, st)
		}
	}
	from, limit, err := page(q)
	if err != nil {
		writeErr(w, err)
		return
	}
	l, err := s.listed(c, q, states)
	if err != nil {
		writeErr(w, err)
		return
	}
	out := []detail{}
	for _, sb := range pageOf(w, l, from, limit) {
		out = append(out, s.detailOf(r.Context(), sb, false))
	}
	writeJSON(w, http.StatusOK, out)
}

// kill: DELETE /sandboxes/{id}.
func (s *Service) kill(w http.ResponseWriter, r *http.Request, c caller, sb sandbox) {
	if err := s.destroy(r.Context(), sb.ID); err != nil {
		writeErr(w, err)
		return
	}
	s.o.Logger.Info("e2b sandbox killed", "key", c.key.ID, "sandbox", sb.ID)
	w.WriteHeader(http.StatusNoContent)
}

// destroy deletes a sandbox's VM and record; a VM already gone is fine.
// Its plane answers "not running" from the start, so a client whose
// stream is cut finds it gone.
func (s *Service) destroy(ctx context.Context, id string) error {
	s.mu.Lock()
	s.ending[id] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.ending, id)
		s.mu.Unlock()
	}()
	s.endProcesses(id)
	if _, err := s.o.VMs.Delete(ctx, api.VMDeleteParams{Name: id, Force: true}); err != nil && !errors.Is(err, api.ErrNotFound) {
		return fmt.Errorf("killing sandbox %s: %w", id, err)
	}
	s.forget(id)
	return nil
}

type timeoutBody struct {
	Timeout *int `json:"timeout"`
	// Memory false asks a paused sandbox back by a reboot from its disk
	// (v2 connect's onResume "reboot").
	Memory *bool `json:"memory,omitempty"`
}

func (b timeoutBody) ttl(def time.Duration) (time.Duration, error) {
	if b.Timeout == nil {
		return def, nil
	}
	d := time.Duration(*b.Timeout) * time.Second
	if d < 0 || d > maxTimeout {
		return 0, fmt.Errorf("%w: timeout %v: between 0 and %v", api.ErrInvalidArgument, d, maxTimeout)
	}
	return d, nil
}

// setTimeout: POST /sandboxes/{id}/timeout: the sandbox ends that long
// from now.
func (s *Service) setTimeout(w http.ResponseWriter, r *http.Request, c caller) {
	var b timeoutBody
	if err := decodeBody(r, &b); err != nil {
		writeErr(w, err)
		return
	}
	if b.Timeout == nil {
		writeError(w, http.StatusBadRequest, "timeout: required, in seconds")
		return
	}
	ttl, err := b.ttl(0)
	if err == nil {
		err = s.extend(c, r.PathValue("id"), ttl, true)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	s.logf(r.PathValue("id"), "info", "timeout set", "seconds", strconv.Itoa(int(ttl/time.Second)))
	w.WriteHeader(http.StatusNoContent)
}

// refresh: POST /sandboxes/{id}/refreshes {"duration": seconds}.
func (s *Service) refresh(w http.ResponseWriter, r *http.Request, c caller) {
	var b struct {
		Duration *int `json:"duration"`
	}
	if err := decodeBody(r, &b); err != nil {
		writeErr(w, err)
		return
	}
	ttl, err := timeoutBody{Timeout: b.Duration}.ttl(defaultTTL)
	if err == nil {
		err = s.extend(c, r.PathValue("id"), ttl, false)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// extend sets a sandbox's end ttl from now: always with set, else only
// when that is later.
func (s *Service) extend(c caller, id string, ttl time.Duration, set bool) error {
	if _, err := s.own(c, id); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok {
		return fmt.Errorf("sandbox %q: %w", id, api.ErrNotFound)
	}
	end := s.o.Now().UTC().Add(ttl)
	if set || end.After(sb.EndAt) {
		sb.EndAt = end
	}
	return s.saveLocked()
}

// pause: POST /sandboxes/{id}/pause, a suspend.
func (s *Service) pause(w http.ResponseWriter, r *http.Request, c caller, sb sandbox) {
	var b struct {
		Memory *bool `json:"memory"`
	}
	if err := decodeBody(r, &b); err != nil {
		writeErr(w, err)
		return
	}
	if sb.Paused {
		writeError(w, http.StatusConflict, "sandbox %s is already paused", sb.ID)
		return
	}
	if err := s.suspend(r.Context(), sb.ID, b.Memory != nil && !*b.Memory); err != nil {
		writeErr(w, err)
		return
	}
	s.logf(sb.ID, "info", "sandbox paused")
	w.WriteHeader(http.StatusNoContent)
}

// suspend pauses a sandbox: its VM suspended, or with cold stopped (a
// filesystem-only pause).
func (s *Service) suspend(ctx context.Context, id string, cold bool) error {
	var err error
	if cold {
		// A filesystem-only pause stops the VM: its processes end.
		s.mu.Lock()
		procs := s.procs[id]
		delete(s.procs, id)
		s.mu.Unlock()
		if procs != nil {
			procs.killAll()
		}
		_, err = s.o.VMs.Stop(ctx, api.VMStopParams{Name: id})
	} else {
		// The suspend breaks the agent's link; the processes run on in
		// the saved memory, and attach again when it resumes (connect).
		procs := s.processesOf(id)
		procs.pause()
		if _, err = s.o.VMs.Suspend(ctx, api.VMRefParams{Name: id}); err != nil {
			procs.resume()
		}
	}
	if err != nil {
		return fmt.Errorf("pausing sandbox %s: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb, ok := s.sandboxes[id]; ok {
		sb.Paused, sb.Cold = true, cold
	}
	return s.saveLocked()
}

// connect: POST /sandboxes/{id}/connect (and the older /resume): a
// paused sandbox is resumed (201), a running one answered (200); its end
// is moved to at least timeout from now.
func (s *Service) connect(w http.ResponseWriter, r *http.Request, c caller) {
	var b timeoutBody
	if err := decodeBody(r, &b); err != nil {
		writeErr(w, err)
		return
	}
	ttl, err := b.ttl(defaultTTL)
	if err != nil {
		writeErr(w, err)
		return
	}
	sb, err := s.own(c, r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	code := http.StatusOK
	if sb.Paused {
		ref := api.VMRefParams{Name: sb.ID}
		reboot := b.Memory != nil && !*b.Memory // onResume "reboot": from its disk
		switch {
		case sb.Cold:
			_, err = s.o.VMs.Start(r.Context(), ref)
		case reboot:
			s.endProcesses(sb.ID) // a boot from its disk: they are gone
			if _, err = s.o.VMs.Stop(r.Context(), api.VMStopParams{Name: sb.ID}); err == nil {
				_, err = s.o.VMs.Start(r.Context(), ref)
			}
		default:
			if _, err = s.o.VMs.Resume(r.Context(), ref); err == nil {
				s.processesOf(sb.ID).resume()
			}
		}
		if err != nil {
			writeErr(w, fmt.Errorf("resuming sandbox %s: %w", sb.ID, err))
			return
		}
		s.mu.Lock()
		if p, ok := s.sandboxes[sb.ID]; ok {
			p.Paused, p.Cold = false, false
		}
		s.mu.Unlock()
		s.logf(sb.ID, "info", "sandbox resumed")
		code = http.StatusCreated
	}
	if err := s.extend(c, sb.ID, ttl, false); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, code, s.createdOf(&sb))
}

// fork: POST /sandboxes/{id}/fork: count running copies, each its own
// sandbox of the same key, metadata and environment; one result each.
func (s *Service) fork(w http.ResponseWriter, r *http.Request, c caller) {
	var b struct {
		timeoutBody
		Count *int `json:"count"`
	}
	if err := decodeBody(r, &b); err != nil {
		writeErr(w, err)
		return
	}
	ttl, err := b.ttl(defaultTTL)
	if err != nil {
		writeErr(w, err)
		return
	}
	count := 1
	if b.Count != nil {
		count = *b.Count
	}
	if count < 1 || count > 16 {
		writeError(w, http.StatusBadRequest, "count %d: 1 to 16 copies", count)
		return
	}
	src, err := s.own(c, r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	if src.Paused {
		writeError(w, http.StatusConflict, "sandbox %s is paused; connect to it first", src.ID)
		return
	}
	now := s.o.Now().UTC()
	prefix := newID()
	ids := make([]string, count)
	for i := range ids {
		ids[i] = prefix
		if count > 1 {
			ids[i] = fmt.Sprintf("%s-%d", prefix, i+1)
		}
		cp := src
		cp.ID, cp.Started, cp.EndAt, cp.Paused = ids[i], now, now.Add(ttl), false
		if err := s.admit(c, &cp); err != nil {
			for _, id := range ids[:i] {
				s.forget(id)
			}
			writeErr(w, err)
			return
		}
	}
	defer func() {
		for _, id := range ids {
			s.release(id)
		}
	}()
	res, err := s.o.VMs.Fork(r.Context(), api.VMForkParams{Name: src.ID, Count: count, Prefix: prefix, Partial: true})
	if err != nil {
		for _, id := range ids {
			s.forget(id)
		}
		writeErr(w, fmt.Errorf("forking sandbox %s: %w", src.ID, err))
		return
	}
	type result struct {
		Sandbox *created  `json:"sandbox,omitempty"`
		Error   *apiError `json:"error,omitempty"`
	}
	started := map[string]bool{}
	for _, v := range res.VMs {
		started[v.Name] = true
	}
	failed := map[string]string{}
	for _, f := range res.Failed {
		failed[f.Name] = f.Error
	}
	out := make([]result, 0, count)
	for _, id := range ids {
		if started[id] {
			s.mu.Lock()
			sb := *s.sandboxes[id]
			s.mu.Unlock()
			cr := s.createdOf(&sb)
			out = append(out, result{Sandbox: &cr})
			continue
		}
		s.forget(id)
		msg := failed[id]
		if msg == "" {
			msg = "the copy did not start"
		}
		out = append(out, result{Error: &apiError{Code: http.StatusInternalServerError, Message: msg}})
	}
	s.o.Logger.Info("e2b sandbox forked", "key", c.key.ID, "sandbox", src.ID, "copies", len(res.VMs))
	s.logf(src.ID, "info", "sandbox forked", "copies", strconv.Itoa(len(res.VMs)))
	for _, v := range res.VMs {
		s.logf(v.Name, "info", "sandbox created", "forkedFrom", src.ID)
	}
	writeJSON(w, http.StatusCreated, out)
}

// metric is one sample of a sandbox's counters, as E2B's control plane
// gives it.
type metric struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	CPUCount      int       `json:"cpuCount"`
	CPUUsedPct    float64   `json:"cpuUsedPct"`
	MemUsed       uint64    `json:"memUsed"`
	MemTotal      uint64    `json:"memTotal"`
	MemCache      uint64    `json:"memCache"`
	DiskUsed      uint64    `json:"diskUsed"`
	DiskTotal     uint64    `json:"diskTotal"`
}

// sample reads a running sandbox's counters from its agent, now.
func (s *Service) sample(ctx context.Context, id string) (metric, error) {
	g, err := s.o.VMs.Guest(ctx, id)
	if err != nil {
		return metric{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := g.Stats(ctx)
	if err != nil {
		return metric{}, fmt.Errorf("reading sandbox %s's counters: %w", id, err)
	}
	now := s.o.Now().UTC()
	m := metric{Timestamp: now, TimestampUnix: now.Unix(), CPUCount: st.NumCPU, MemTotal: st.MemTotal,
		MemUsed: st.MemTotal - min(st.MemAvailable, st.MemTotal), DiskUsed: st.DiskUsed, DiskTotal: st.DiskSize}
	if st.CPUTotal > 0 {
		m.CPUUsedPct = 100 * float64(st.CPUBusy) / float64(st.CPUTotal)
	}
	return m, nil
}

// metrics: GET /sandboxes/{id}/metrics: one sample, now.
func (s *Service) metrics(w http.ResponseWriter, r *http.Request, c caller, sb sandbox) {
	now := s.o.Now().UTC()
	// The one sample is now's: outside a start..end asked (Unix
	// seconds), none.
	for _, b := range []struct {
		key   string
		after bool
	}{{"start", true}, {"end", false}} {
		v := r.URL.Query().Get(b.key)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "%s %q: Unix seconds", b.key, v)
			return
		}
		if b.after && now.Unix() < n || !b.after && now.Unix() > n {
			sb.Paused = true // no sample to give
		}
	}
	if sb.Paused {
		writeJSON(w, http.StatusOK, []metric{})
		return
	}
	m, err := s.sample(r.Context(), sb.ID)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, []metric{m})
}

// maxMetricsIDs bounds GET /sandboxes/metrics, as E2B's spec does.
const maxMetricsIDs = 100

// metricsOf: GET /sandboxes/metrics?sandbox_ids=a,b: a sample of each
// running sandbox named that the key made; others are left out.
func (s *Service) metricsOf(w http.ResponseWriter, r *http.Request, c caller) {
	var ids []string
	for _, v := range r.URL.Query()["sandbox_ids"] {
		ids = append(ids, strings.Split(v, ",")...)
	}
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	if len(ids) == 0 || len(ids) > maxMetricsIDs {
		writeError(w, http.StatusBadRequest, "sandbox_ids: 1 to %d sandbox IDs, comma-separated", maxMetricsIDs)
		return
	}
	out := map[string]metric{}
	for _, id := range ids {
		sb, err := s.own(c, id)
		if err != nil || sb.Paused {
			continue
		}
		if m, err := s.sample(r.Context(), id); err == nil {
			out[id] = m
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": out})
}

// updateNetwork: PUT /sandboxes/{id}/network: the running sandbox's
// egress replaced (what is left out is cleared, as E2B's): an allow-list
// (`banger vm set --allow`), the internet, or nothing, at once.
func (s *Service) updateNetwork(w http.ResponseWriter, r *http.Request, c caller, sb sandbox) {
	var b struct {
		networkConfig
		AllowInternet *bool `json:"allow_internet_access"`
	}
	if err := decodeBody(r, &b); err != nil {
		writeErr(w, err)
		return
	}
	nat, rules, err := b.egress(b.AllowInternet)
	if err != nil {
		writeErr(w, err)
		return
	}
	if sb.Paused {
		writeError(w, http.StatusConflict, "sandbox %s is paused; connect to it first", sb.ID)
		return
	}
	v, err := s.o.VMs.Show(r.Context(), api.VMRefParams{Name: sb.ID})
	if err != nil {
		writeErr(w, err)
		return
	}
	if v.Network == "none" {
		writeError(w, http.StatusConflict, "sandbox %s was made without internet access or an allowOut list, so it has no network device to open; create it with allowInternetAccess or allowOut to change its egress later", sb.ID)
		return
	}
	p := api.VMSetParams{Name: sb.ID}
	if len(rules) > 0 {
		p.Allow = rules
	} else {
		p.NAT = &nat
	}
	if _, err := s.o.VMs.Set(r.Context(), p); err != nil {
		writeErr(w, fmt.Errorf("changing sandbox %s's network: %w", sb.ID, err))
		return
	}
	s.mu.Lock()
	if rec, ok := s.sandboxes[sb.ID]; ok {
		rec.Internet, rec.AllowOut, rec.DenyOut = b.AllowInternet, b.AllowOut, b.DenyOut
		err = s.saveLocked()
	}
	s.mu.Unlock()
	if err != nil {
		writeErr(w, err)
		return
	}
	s.logf(sb.ID, "info", "network updated", "internet", strconv.FormatBool(nat && len(rules) == 0), "allowOut", strings.Join(b.AllowOut, ","),
		"denyOut", strings.Join(b.DenyOut, ","))
	w.WriteHeader(http.StatusNoContent)
}
