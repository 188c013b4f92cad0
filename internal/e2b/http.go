package e2b

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/e2b/envd/filesystempb"
	"github.com/bangerdev/banger/internal/e2b/envd/processpb"
)

// Serve answers the API on l until ctx ends.
func (s *Service) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	s.addr = l.Addr().String()
	s.mu.Unlock()
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	s.reconcile(ctx) // before any request can start a snapshot
	go s.sweep(ctx)
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving the e2b api: %w", err)
	}
	return nil
}

// Handler is the API: the control plane, and a sandbox's plane for
// requests that name a sandbox (E2b-Sandbox-Id, or a Host of
// <port>-<id>.<domain>).
func (s *Service) Handler() http.Handler {
	control := http.NewServeMux()
	s.controlRoutes(control)
	control.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "%s %s: not an E2B API path banger serves (docs/e2b.md lists them)", r.Method, r.URL.Path)
	})
	envd := s.envdHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.checkOrigin(r); err != nil {
			s.o.Logger.Warn("e2b request refused", "host", r.Host, "origin", r.Header.Get("Origin"), "err", err)
			writeError(w, http.StatusForbidden, "%s", err)
			return
		}
		id, port, ok := s.sandboxOf(r)
		if !ok && r.URL.Path == "/files" && r.URL.Query().Get("signature") != "" {
			// A signed URL made with E2B_SANDBOX_URL set names no
			// sandbox: the one whose token signed it is the one.
			if id = s.signedBy(r); id == "" {
				writeError(w, http.StatusUnauthorized, "invalid signature: no sandbox's token made it")
				return
			}
			port, ok = EnvdPort, true
		}
		if !ok {
			control.ServeHTTP(w, r)
			return
		}
		sb, err := s.sandboxByID(id)
		if err != nil {
			// 502, as E2B's proxy answers for a sandbox it cannot
			// reach: the SDKs read it as "not running".
			writeError(w, http.StatusBadGateway, "%s", err)
			return
		}
		if port == EnvdPort {
			if !s.envdAuthorized(r, sb.ID) {
				s.o.Logger.Warn("e2b envd request refused", "sandbox", sb.ID, "path", r.URL.Path)
				writeError(w, http.StatusUnauthorized, "sandbox %s: a missing or wrong X-Access-Token (the envdAccessToken its create or connect returned)", sb.ID)
				return
			}
			// Its caller holds the sandbox's token, which only its key
			// was given: the key is the caller.
			s.o.Logger.Info("e2b envd request", "key", sb.KeyID, "sandbox", sb.ID, "method", r.Method, "path", r.URL.Path)
			envd.ServeHTTP(w, r.WithContext(withSandbox(r.Context(), sb.ID)))
			return
		}
		if !sb.Public && !s.trafficAuthorized(r, sb.ID) {
			s.o.Logger.Warn("e2b port request refused", "sandbox", sb.ID, "port", port)
			writeError(w, http.StatusUnauthorized, "sandbox %s port %d: a missing or wrong e2b-traffic-access-token (the sandbox's trafficAccessToken; or create it with network.allowPublicTraffic)", sb.ID, port)
			return
		}
		// With the traffic token its key's; a public port's caller is
		// anyone, logged as such.
		caller := sb.KeyID
		if !s.trafficAuthorized(r, sb.ID) {
			caller = "public"
		}
		s.o.Logger.Info("e2b port request", "key", caller, "sandbox", sb.ID, "port", port, "method", r.Method, "path", r.URL.Path)
		s.proxy(w, r, sb.ID, port)
	})
}

// withKey checks a control-plane request's X-API-Key and logs the call
// by the key's ID.
func (s *Service) withKey(h func(http.ResponseWriter, *http.Request, caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secret := r.Header.Get("X-API-Key")
		if secret == "" {
			if a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
				secret = a
			}
		}
		if secret == "" {
			writeError(w, http.StatusUnauthorized, "no API key: set E2B_API_KEY to a key of `banger e2b key create`")
			return
		}
		key, ok, err := s.keys.Verify(secret)
		if err != nil {
			writeErr(w, err)
			return
		}
		if !ok {
			s.o.Logger.Warn("e2b request with an unknown key", "method", r.Method, "path", r.URL.Path)
			writeError(w, http.StatusUnauthorized, "an unknown or revoked API key (`banger e2b key list`)")
			return
		}
		s.o.Logger.Info("e2b request", "key", key.ID, "method", r.Method, "path", r.URL.Path)
		h(w, r, caller{key: key})
	}
}

// checkOrigin refuses what a web page could send through DNS
// rebinding: a Host that is not this listener's, and any Origin of
// another host.
func (s *Service) checkOrigin(r *http.Request) error {
	if !s.allowedHost(r.Host) {
		return fmt.Errorf("host %q is not this API's (DNS rebinding?): use 127.0.0.1, localhost or *.%s", r.Host, s.o.Domain)
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !s.allowedHost(u.Host) {
			return fmt.Errorf("origin %q: web pages may not call this API", o)
		}
	}
	return nil
}

func (s *Service) allowedHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		if ip.IsLoopback() {
			return true
		}
		s.mu.Lock()
		addr := s.addr
		s.mu.Unlock()
		if h, _, err := net.SplitHostPort(addr); err == nil && net.ParseIP(h).Equal(ip) {
			return true
		}
		if h, _, err := net.SplitHostPort(s.o.Listen); err == nil && net.ParseIP(h).Equal(ip) {
			return true
		}
		return false
	}
	return host == "localhost" || host == s.o.Domain || strings.HasSuffix(host, "."+s.o.Domain) || strings.HasSuffix(host, ".localhost")
}

// sandboxOf is the sandbox and port a request names, if it names one.
func (s *Service) sandboxOf(r *http.Request) (string, int, bool) {
	if id := r.Header.Get("E2b-Sandbox-Id"); id != "" {
		port, err := strconv.Atoi(r.Header.Get("E2b-Sandbox-Port"))
		if err != nil {
			port = EnvdPort
		}
		return id, port, true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	label, rest, ok := strings.Cut(strings.ToLower(host), ".")
	if !ok || (rest != s.o.Domain && rest != "localhost") {
		return "", 0, false
	}
	p, id, ok := strings.Cut(label, "-")
	port, err := strconv.Atoi(p)
	if !ok || err != nil || port < 1 || port > 65535 || id == "" {
		return "", 0, false
	}
	return id, port, true
}

// signedBy is the sandbox whose /files signature r carries, or "".
func (s *Service) signedBy(r *http.Request) string {
	s.mu.Lock()
	ids := make([]string, 0, len(s.sandboxes))
	for id := range s.sandboxes {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	op := "read"
	if r.Method == http.MethodPost {
		op = "write"
	}
	user, err := fileUser(r)
	if err != nil {
		return ""
	}
	for _, id := range ids {
		// An expired one is still this sandbox's, which says so.
		if err := s.checkSignature(r, id, op, user); err == nil || errors.Is(err, errExpired) {
			return id
		}
	}
	return ""
}

func (s *Service) sandboxByID(id string) (sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok || s.ending[id] {
		return sandbox{}, fmt.Errorf("sandbox %q: %w", id, api.ErrNotFound)
	}
	if sb.Paused {
		return sandbox{}, fmt.Errorf("%w: sandbox %s is paused; Sandbox.connect() resumes it", api.ErrNotRunning, id)
	}
	return *sb, nil
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func (s *Service) envdAuthorized(r *http.Request, id string) bool {
	if t := r.Header.Get("X-Access-Token"); t != "" {
		return equal(t, s.envdToken(id))
	}
	// A signed URL of /files (Sandbox.downloadUrl, uploadUrl) carries a
	// signature instead, checked by the files handler.
	return r.URL.Path == "/files" && r.URL.Query().Get("signature") != ""
}

func (s *Service) trafficAuthorized(r *http.Request, id string) bool {
	t := r.Header.Get("E2b-Traffic-Access-Token")
	return t != "" && equal(t, s.trafficToken(id))
}

type sandboxKey struct{}

func withSandbox(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, sandboxKey{}, id)
}

func sandboxFrom(ctx context.Context) string {
	id, _ := ctx.Value(sandboxKey{}).(string)
	return id
}

// envdMetrics: envd's GET /metrics, the sandbox's counters now in envd's
// own names.
func (s *Service) envdMetrics(w http.ResponseWriter, r *http.Request) {
	m, err := s.sample(r.Context(), sandboxFrom(r.Context()))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ts": m.TimestampUnix, "cpu_count": m.CPUCount, "cpu_used_pct": m.CPUUsedPct,
		"mem_total": m.MemTotal, "mem_used": m.MemUsed, "mem_cache": m.MemCache, "mem_total_mib": m.MemTotal >> 20,
		"mem_used_mib": m.MemUsed >> 20, "disk_used": m.DiskUsed, "disk_total": m.DiskTotal})
}

// envdHandler is what E2B's envd serves in a sandbox: its Connect
// services (JSON and protobuf) and its HTTP paths.
func (s *Service) envdHandler() http.Handler {
	mux := http.NewServeMux()
	opts := []connect.HandlerOption{connect.WithReadMaxBytes(maxBody * 8)}
	mux.Handle(processpb.NewProcessHandler(&processService{s: s}, opts...))
	mux.Handle(filesystempb.NewFilesystemHandler(&filesystemService{s: s}, opts...))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /files", s.download)
	mux.HandleFunc("POST /files", s.upload)
	mux.HandleFunc("GET /metrics", s.envdMetrics)
	mux.HandleFunc("GET /envs", func(w http.ResponseWriter, r *http.Request) {
		sb, err := s.sandboxByID(sandboxFrom(r.Context()))
		if err != nil {
			writeErr(w, err)
			return
		}
		env := sb.Env
		if env == nil {
			env = map[string]string{}
		}
		writeJSON(w, http.StatusOK, env)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "%s %s: not an envd path banger serves", r.Method, r.URL.Path)
	})
	return mux
}

// sweep ends sandboxes past their end of life each second until ctx
// ends.
func (s *Service) sweep(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sweepOnce(ctx)
		}
	}
}

// sweepOnce ends the sandboxes past their end, as E2B does: killed, or
// paused when the create asked for autoPause (killed if the pause
// fails, so none outlives its end).
func (s *Service) sweepOnce(ctx context.Context) {
	now := s.o.Now()
	var due []sandbox
	s.mu.Lock()
	for _, sb := range s.sandboxes {
		if !s.pending[sb.ID] && !sb.Paused && now.After(sb.EndAt) {
			due = append(due, *sb)
		}
	}
	s.mu.Unlock()
	for _, sb := range due {
		var err error
		action := sb.OnTimeout
		if action == onTimeoutStop {
			if err = s.suspend(ctx, sb.ID, sb.PauseCold); err != nil {
				s.o.Logger.Warn("e2b sandbox could not pause at its end; killing it", "sandbox", sb.ID, "err", err)
				action = onTimeoutKill
			}
		}
		if action == onTimeoutKill {
			err = s.destroy(ctx, sb.ID)
		}
		s.o.Logger.Info("e2b sandbox timed out", "sandbox", sb.ID, "action", action, "err", err)
	}
}
