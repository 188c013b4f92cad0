// Package e2b serves E2B's API (its control plane, spec/openapi.yml of
// e2b-dev/infra, and its sandbox plane, the envd protocol) over banger's
// VMs, so that the unmodified E2B SDKs drive a banger host by changing
// one URL. A sandbox is a banger VM named by its sandbox ID, created by
// "e2b:KEYNAME"; what E2B keeps beside it (metadata, environment, its
// end of life, its key) lives in this package's state file. Pinned:
// e2b-dev/infra 54693ff (openapi, envd protos), the JS SDK 2.51.0.
package e2b

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/tokenfile"
	"github.com/bangerdev/banger/internal/wholefile"
)

// EnvdVersion is the envd version the sandboxes claim: the SDK turns on
// what that version has (octet-stream uploads, stdin choice, the default
// user); newer features (file metadata, watch entry info) stay off.
const EnvdVersion = "0.5.7"

// EnvdPort is the port the SDKs name envd by.
const EnvdPort = 49983

// VMs is what the API asks of banger's VMs.
type VMs interface {
	Create(ctx context.Context, p api.VMCreateParams) (api.VM, error)
	Show(ctx context.Context, p api.VMRefParams) (api.VM, error)
	Delete(ctx context.Context, p api.VMDeleteParams) (api.VM, error)
	Suspend(ctx context.Context, p api.VMRefParams) (api.VM, error)
	Resume(ctx context.Context, p api.VMRefParams) (api.VM, error)
	Stop(ctx context.Context, p api.VMStopParams) (api.VM, error)
	Start(ctx context.Context, p api.VMRefParams) (api.VM, error)
	Fork(ctx context.Context, p api.VMForkParams) (api.VMForkResult, error)
	Set(ctx context.Context, p api.VMSetParams) (api.VM, error)
	List(ctx context.Context) (api.VMListResult, error)
	SnapshotCreate(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error)
	SnapshotList(ctx context.Context, p api.VMRefParams) (api.SnapshotListResult, error)
	SnapshotDelete(ctx context.Context, p api.VMSnapshotParams) (api.Snapshot, error)
	Warm(ctx context.Context, p api.ImageWarmParams) (api.Template, error)
	// Guest is the running (resumed if suspended) VM's agent.
	Guest(ctx context.Context, name string) (Guest, error)
	// Running is the running VM's agent, api.ErrNotRunning for one
	// suspended or stopped (never woken).
	Running(ctx context.Context, name string) (Guest, error)
}

// Guest is what the sandbox plane asks of a VM's agent. Every answer is
// the guest's and checked by the agent client before it comes here.
type Guest interface {
	Exec(ctx context.Context, p proto.ExecParams, stdin io.Reader, stdout, stderr io.Writer) (proto.ExecResult, error)
	ExecTTY(ctx context.Context, p proto.ExecParams, stdin io.Reader, stdout io.Writer, resize <-chan proto.Winsize) (proto.ExecResult, error)
	FS(ctx context.Context, p proto.FSParams) (proto.FSResult, error)
	ReadFileRange(ctx context.Context, p proto.FileParams, w io.Writer) (proto.FileResult, error)
	WriteFileWith(ctx context.Context, p proto.FileParams, r io.Reader) (int64, error)
	Dial(ctx context.Context, addr string) (net.Conn, error)
	Stats(ctx context.Context) (proto.StatsResult, error)
	Watch(ctx context.Context, p proto.WatchParams, ready func(), emit func(proto.WatchEvent) error) error
	Signal(ctx context.Context, handle string, sig int) error
	Attach(ctx context.Context, handle string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan proto.Winsize) (proto.ExecResult, error)
}

// Options configure a Service.
type Options struct {
	Dir       string // its state: keys, templates, sandboxes, the token secret
	Listen    string // the configured address ("" serves none)
	Domain    string
	BaseImage string
	// DefaultMemoryMiB is what a template without a memory size gets
	// (vm_defaults.memory_mib): what a key's memory limit counts for it.
	DefaultMemoryMiB int
	VMs              VMs
	Logger           *slog.Logger
	Now              func() time.Time
}

// Service is the E2B API of one daemon.
type Service struct {
	o      Options
	keys   *tokenfile.Tokens
	secret []byte // derives each sandbox's envd access token

	mu        sync.Mutex
	sandboxes map[string]*sandbox // by ID
	pending   map[string]bool     // being created or forked: not listed, not swept
	ending    map[string]bool     // being killed: its plane answers "not running"
	templates map[string]api.E2BTemplate
	snapshots map[string]*snapshot  // by ID
	logs      map[string][]logEntry // by sandbox ID, in memory
	procs     map[string]*processes // by sandbox ID, while the daemon runs
	watchers  map[string]map[string]*dirWatcher
	addr      string // where it listens, once it does
	failed    error  // why it does not, when it was asked to
}

// keyKind: "e2b_" and 20 random bytes, the shape the SDKs check.
var keyKind = tokenfile.Kind{Prefix: "e2b_", Bytes: 20, Noun: "key", List: "banger e2b key list"}

// sandbox is what E2B keeps of a sandbox beside its VM.
type sandbox struct {
	ID        string            `json:"id"`
	KeyID     string            `json:"key_id"`
	Template  string            `json:"template"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Started   time.Time         `json:"started"`
	EndAt     time.Time         `json:"end_at"`
	OnTimeout string            `json:"on_timeout"` // kill or pause
	CPUs      int               `json:"cpus"`
	MemoryMiB int               `json:"memory_mib"`
	DiskMiB   int64             `json:"disk_mib"`
	// Internet is nil when the create did not say.
	Internet *bool    `json:"internet,omitempty"`
	AllowOut []string `json:"allow_out,omitempty"`
	DenyOut  []string `json:"deny_out,omitempty"`
	// Public lets a sandbox's ports be reached without its traffic token.
	Public bool `json:"public,omitempty"`
	// Paused is set while E2B paused it: a suspend, or with Cold its VM
	// stopped (a filesystem-only pause: a connect boots it from its disk).
	Paused bool `json:"paused,omitempty"`
	Cold   bool `json:"cold,omitempty"`
	// PauseCold makes the timeout's pause a filesystem-only one
	// (autoPauseMemory false).
	PauseCold bool `json:"pause_cold,omitempty"`
	// User is who a request naming none runs as: E2B's "user" (made at
	// create when the image lacks it), or "" (the image's own user) when
	// the image cannot make one.
	User string `json:"user,omitempty"`
}

// New loads the service's state from o.Dir.
func New(o Options) (*Service, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("making the e2b state directory: %w", err)
	}
	s := &Service{o: o, keys: tokenfile.Open(filepath.Join(o.Dir, "keys.json"), keyKind),
		sandboxes: map[string]*sandbox{}, pending: map[string]bool{}, ending: map[string]bool{}, watchers: map[string]map[string]*dirWatcher{}, templates: map[string]api.E2BTemplate{}, snapshots: map[string]*snapshot{}, logs: map[string][]logEntry{}, procs: map[string]*processes{}}
	var err error
	if s.secret, err = loadSecret(filepath.Join(o.Dir, "secret")); err != nil {
		return nil, err
	}
	if err := readJSON(filepath.Join(o.Dir, sandboxesFile), &s.sandboxes); err != nil {
		return nil, err
	}
	if err := readJSON(filepath.Join(o.Dir, templatesFile), &s.templates); err != nil {
		return nil, err
	}
	if err := readJSON(filepath.Join(o.Dir, snapshotsFile), &s.snapshots); err != nil {
		return nil, err
	}
	return s, nil
}

// maxStateFile bounds what is read of a state file.
const maxStateFile = 16 << 20

func readJSON(path string, v any) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return err
	}
	if len(data) > maxStateFile {
		return fmt.Errorf("reading %s: larger than %d bytes", path, maxStateFile)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}

func loadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(b) == 32 {
		return b, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := wholefile.Write(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("writing the e2b secret: %w", err)
	}
	return b, nil
}

// State files, each written whole when what it holds changes.
const (
	sandboxesFile = "sandboxes.json"
	templatesFile = "templates.json"
	snapshotsFile = "snapshots.json"
)

// saveLocked writes the sandboxes whole; s.mu is held.
func (s *Service) saveLocked() error { return s.write(sandboxesFile, s.sandboxes) }

// write writes v as a state file, whole; s.mu is held.
func (s *Service) write(name string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := wholefile.Write(filepath.Join(s.o.Dir, name), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving e2b state: %w", err)
	}
	return nil
}

// accessToken is the envd access token of a sandbox: derived from the
// service's secret, so nothing secret is kept per sandbox and a connect
// gets the same one again.
func (s *Service) accessToken(id, what string) string {
	m := hmac.New(sha256.New, s.secret)
	fmt.Fprintf(m, "%s\x00%s", what, id)
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Service) envdToken(id string) string    { return s.accessToken(id, "envd") }
func (s *Service) trafficToken(id string) string { return s.accessToken(id, "traffic") }

// VMEvent keeps the sandboxes and snapshots true to what happened to
// their VMs outside the API: one deleted (`banger vm delete`) is
// forgotten, one suspended or stopped is paused (stopped: without its
// memory), one resumed or started running.
func (s *Service) VMEvent(e api.Event) {
	s.mu.Lock()
	sb, ok := s.sandboxes[e.VM]
	var held []string
	for _, sn := range s.snapshots {
		if sn.VM == e.VM {
			held = append(held, sn.ID)
		}
	}
	s.mu.Unlock()
	if e.Type == api.EventVMDeleted {
		// A snapshot's VM deleted (`banger vm delete`) is the snapshot.
		for _, id := range held {
			s.forgetSnapshot(id)
		}
	}
	if !ok {
		return
	}
	switch e.Type {
	case api.EventVMDeleted:
		s.forget(sb.ID)
	case api.EventVMSuspended, api.EventVMResumed, api.EventVMStopped, api.EventVMStarted:
		// Stopped is a filesystem-only pause, which ends the processes;
		// a suspend keeps them, to attach to again once it resumes.
		paused := e.Type == api.EventVMSuspended || e.Type == api.EventVMStopped
		switch e.Type {
		case api.EventVMStopped:
			s.endProcesses(sb.ID)
		case api.EventVMSuspended:
			s.processesOf(sb.ID).pause()
		case api.EventVMResumed:
			s.processesOf(sb.ID).resume()
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if sb, ok := s.sandboxes[e.VM]; ok && !s.pending[e.VM] && !s.ending[e.VM] {
			sb.Paused, sb.Cold = paused, e.Type == api.EventVMStopped
			_ = s.saveLocked()
		}
	}
}

// SetTemplate maps an E2B template name to an image and shape and warms
// that shape's template, so that creates of it are restores.
func (s *Service) SetTemplate(ctx context.Context, t api.E2BTemplate) (api.E2BTemplate, error) {
	if !api.ValidName(t.Name) {
		return api.E2BTemplate{}, fmt.Errorf("%w: template name %q: use lowercase letters, digits, '-', '_' and '.', at most 63", api.ErrInvalidArgument, t.Name)
	}
	if t.Image == "" {
		return api.E2BTemplate{}, fmt.Errorf("%w: template %s needs an image", api.ErrInvalidArgument, t.Name)
	}
	if t.VCPU < 0 || t.MemoryMiB < 0 || t.DiskSize < 0 {
		return api.E2BTemplate{}, fmt.Errorf("%w: template %s: sizes are positive, 0 for the defaults", api.ErrInvalidArgument, t.Name)
	}
	// The shape a create of this template asks for by default (with
	// internet access), so that its restore finds this template.
	nat := true
	if _, err := s.o.VMs.Warm(ctx, api.ImageWarmParams{Image: t.Image, VCPU: t.VCPU, MemoryMiB: t.MemoryMiB, DiskSize: t.DiskSize, NAT: &nat}); err != nil {
		return api.E2BTemplate{}, fmt.Errorf("warming template %s: %w", t.Name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.templates[t.Name] = t
	return t, s.write(templatesFile, s.templates)
}

// Templates lists the mapped templates, "base" included.
func (s *Service) Templates(context.Context) (api.E2BTemplateListResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []api.E2BTemplate{}
	if _, ok := s.templates["base"]; !ok {
		out = append(out, api.E2BTemplate{Name: "base", Image: s.o.BaseImage})
	}
	for _, t := range s.templates {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return api.E2BTemplateListResult{Templates: out}, nil
}

// DeleteTemplate removes a mapping.
func (s *Service) DeleteTemplate(_ context.Context, p api.E2BTemplateDeleteParams) (api.E2BTemplate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.templates[p.Name]
	if !ok {
		return api.E2BTemplate{}, fmt.Errorf("e2b template %q: %w (`banger e2b template list`)", p.Name, api.ErrNotFound)
	}
	delete(s.templates, p.Name)
	return t, s.write(templatesFile, s.templates)
}

// template is what a create of name runs.
func (s *Service) template(name string) (api.E2BTemplate, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.templates[name]; ok {
		return t, true
	}
	if name == "base" {
		return api.E2BTemplate{Name: "base", Image: s.o.BaseImage}, true
	}
	return api.E2BTemplate{}, false
}

// Status says whether the API is served, where, and what it holds.
func (s *Service) Status(context.Context) (api.E2BStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys, _ := s.keys.List()
	return api.E2BStatus{Enabled: s.o.Listen != "", Listen: s.addr, Configured: s.o.Listen, Domain: s.o.Domain,
		Sandboxes: len(s.sandboxes), Keys: len(keys), Templates: len(s.templates), EnvdVersion: EnvdVersion, Error: errString(s.failed)}, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Failed records why the API is not served.
func (s *Service) Failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed = err
}

// CreateKey makes an API key; its secret is returned once.
func (s *Service) CreateKey(_ context.Context, p api.E2BKeyCreateParams) (api.E2BKeyCreateResult, error) {
	if !api.ValidName(p.Name) {
		return api.E2BKeyCreateResult{}, fmt.Errorf("%w: key name %q: lowercase letters, digits, '.', '_' and '-', at most 63 (it labels the key's sandboxes in banger ps)", api.ErrInvalidArgument, p.Name)
	}
	secret, tok, err := s.keys.Create(tokenfile.Token{Name: p.Name, MaxSandboxes: p.MaxSandboxes, MaxMemoryMiB: p.MaxMemoryMiB})
	if err != nil {
		return api.E2BKeyCreateResult{}, err
	}
	s.o.Logger.Info("e2b key created", "key", tok.ID, "name", tok.Name)
	return api.E2BKeyCreateResult{Key: keyOf(tok), Secret: secret}, nil
}

// ListKeys lists the API keys, secrets unknown.
func (s *Service) ListKeys(context.Context) (api.E2BKeyListResult, error) {
	all, err := s.keys.List()
	out := api.E2BKeyListResult{Keys: []api.E2BKey{}}
	for _, t := range all {
		out.Keys = append(out.Keys, keyOf(t))
	}
	return out, err
}

// RevokeKey removes a key: it is refused from the next request on. Its
// sandboxes run on until their end (`banger vm delete` ends them now).
func (s *Service) RevokeKey(_ context.Context, p api.E2BKeyRevokeParams) (api.E2BKey, error) {
	tok, err := s.keys.Revoke(p.ID)
	if err == nil {
		s.o.Logger.Info("e2b key revoked", "key", tok.ID)
	}
	return keyOf(tok), err
}

func keyOf(t tokenfile.Token) api.E2BKey {
	return api.E2BKey{ID: t.ID, Name: t.Name, Created: t.Created, MaxSandboxes: t.MaxSandboxes, MaxMemoryMiB: t.MaxMemoryMiB}
}
