package mcp

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// HTTPOptions shape the Streamable HTTP front door.
type HTTPOptions struct {
	// Tokens, when set, are required as bearer tokens (over TCP: every
	// local user, and web pages, can reach a port).
	Tokens *Tokens
	// Hosts are the Host header values (and Origin hosts) accepted beside
	// the loopback names, against DNS rebinding: a page of evil.example
	// that resolves its name to 127.0.0.1 still sends Host: evil.example.
	Hosts []string
	// AnyHost turns that check off, for a unix socket (pages cannot
	// reach one).
	AnyHost bool
}

// Handler serves MCP at /mcp: stateless Streamable HTTP, each request a
// whole exchange.
func (s *Server) Handler(o HTTPOptions) http.Handler {
	mcpHandler := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s.srv }, &sdk.StreamableHTTPOptions{
		Stateless:                    true,
		Logger:                       s.log,
		PropagateRequestCancellation: true,
	})
	// Logged inside the token check, so that the log names the token.
	h := s.logged(mcpHandler)
	if o.Tokens != nil {
		h = auth.RequireBearerToken(func(_ context.Context, secret string, _ *http.Request) (*auth.TokenInfo, error) {
			tok, ok, err := o.Tokens.Verify(secret)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("%w: not a token of this server (`banger mcp token` makes one)", auth.ErrInvalidToken)
			}
			return &auth.TokenInfo{UserID: tok.ID, Expiration: time.Now().Add(time.Hour)}, nil
		}, nil)(h)
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", h)
	var root http.Handler = mux
	if !o.AnyHost {
		root = guardHosts(root, o.Hosts)
	}
	return root
}

// logged logs each request with its caller: the token's ID, never the
// secret.
func (s *Server) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "unix socket"
		if ti := auth.TokenInfoFromContext(r.Context()); ti != nil {
			who = "token " + ti.UserID
		}
		s.log.Info("http request", "method", r.Method, "caller", who, "remote", r.RemoteAddr)
		h.ServeHTTP(w, r)
	})
}

// guardHosts refuses a request whose Host, or Origin when it has one,
// names a host not in hosts or loopback.
func guardHosts(h http.Handler, hosts []string) http.Handler {
	allowed := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}
	for _, host := range hosts {
		allowed[strings.ToLower(host)] = true
	}
	ok := func(hostport string) bool {
		host := hostport
		if h, _, err := net.SplitHostPort(hostport); err == nil {
			host = h
		}
		return allowed[strings.ToLower(strings.Trim(host, "[]"))]
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ok(r.Host) {
			http.Error(w, fmt.Sprintf("host %q is not this server's (a DNS rebinding page?); start banger mcp with --allow-host %s if it is", r.Host, r.Host), http.StatusForbidden)
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" {
			u, err := url.Parse(origin)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !ok(u.Host) {
				http.Error(w, fmt.Sprintf("origin %q may not call this server: web pages are refused", origin), http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// Listen opens addr: "unix:PATH" (a socket only its user may open), or a
// TCP HOST:PORT whose host defaults to loopback (":8080" and "8080" are
// 127.0.0.1:8080). It says whether the address is a unix socket.
func Listen(addr string) (net.Listener, bool, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return nil, false, fmt.Errorf("--http unix:PATH: give the socket's path")
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, false, err
		}
		// Only its user may connect: the socket is the credential.
		if err := os.Chmod(path, 0o600); err != nil {
			l.Close()
			return nil, false, err
		}
		return l, true, nil
	}
	if !strings.Contains(addr, ":") {
		addr = ":" + addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, false, fmt.Errorf("--http %q: give HOST:PORT, PORT or unix:PATH", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, port))
	return l, false, err
}
