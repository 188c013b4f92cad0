package mcp

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/tokenfile"
)

// bearer adds a token to every request.
type bearer struct {
	token string
	host  string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	if b.host != "" {
		r.Host = b.host
	}
	return http.DefaultTransport.RoundTrip(r)
}

func httpServer(t *testing.T, logw io.Writer) (*httptest.Server, *Tokens) {
	t.Helper()
	s, err := New(newFake(api.VM{Name: "mine", Creator: "mcp:agent"}), Options{Name: "agent", Log: slog.New(slog.NewTextHandler(logw, nil))})
	if err != nil {
		t.Fatal(err)
	}
	tokens := OpenTokens(filepath.Join(t.TempDir(), "mcp-tokens.json"))
	srv := httptest.NewServer(s.Handler(HTTPOptions{Tokens: tokens}))
	t.Cleanup(srv.Close)
	return srv, tokens
}

// TestHTTPWithAToken: the Go SDK's own client lists and calls tools over
// Streamable HTTP with a token; a revoked token is refused at once.
func TestHTTPWithAToken(t *testing.T) {
	var logged syncBuf
	srv, tokens := httpServer(t, &logged)
	secret, tok, err := tokens.Create(tokenfile.Token{Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "bgr_mcp_") || len(secret) != len("bgr_mcp_")+64 {
		t.Fatalf("token %q", secret)
	}
	ctx := context.Background()
	c := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "0"}, nil)
	cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: srv.URL + "/mcp", HTTPClient: &http.Client{Transport: bearer{token: secret}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	var l ListOut
	call(t, cs, "sandbox_list", map[string]any{}, &l)
	if len(l.Sandboxes) != 1 {
		t.Fatalf("list over HTTP = %+v", l)
	}
	// The log names the token by its ID, never its secret.
	if log := logged.String(); !strings.Contains(log, `caller="token `+tok.ID+`"`) || strings.Contains(log, secret) {
		t.Fatalf("the log does not name the token, or shows its secret:\n%s", log)
	}
	// The file keeps the hash alone.
	data, _ := os.ReadFile(tokens.Path())
	if strings.Contains(string(data), secret) || !strings.Contains(string(data), tok.ID) {
		t.Fatalf("token file holds the secret, or not the token:\n%s", data)
	}
	if fi, _ := os.Stat(tokens.Path()); fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v", fi.Mode().Perm())
	}
	if _, err := tokens.Revoke(tok.ID[:6]); err != nil {
		t.Fatal(err)
	}
	if code, _ := post(t, srv.URL+"/mcp", secret, "", ""); code != http.StatusUnauthorized {
		t.Fatalf("a revoked token: HTTP %d", code)
	}
}

// post sends an MCP initialize as a client would, returning the status.
func post(t *testing.T, url, token, host, origin string) (int, string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}`
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if host != "" {
		req.Host = host
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHTTPRefusals: no token, a wrong one, a rebinding Host, a web
// page's Origin.
func TestHTTPRefusals(t *testing.T) {
	srv, tokens := httpServer(t, io.Discard)
	secret, _, err := tokens.Create(tokenfile.Token{Name: ""})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token, host, origin string
		code                      int
		says                      string
	}{
		{name: "no token", code: http.StatusUnauthorized, says: "no bearer token"},
		{name: "a wrong token", token: "bgr_mcp_" + strings.Repeat("0", 64), code: http.StatusUnauthorized, says: "banger mcp token"},
		{name: "a rebinding host", token: secret, host: "evil.example:80", code: http.StatusForbidden, says: "DNS rebinding"},
		{name: "a web page", token: secret, origin: "https://evil.example", code: http.StatusForbidden, says: "web pages are refused"},
		{name: "a null origin", token: secret, origin: "null", code: http.StatusForbidden, says: "web pages are refused"},
		{name: "the token", token: secret, code: http.StatusOK},
		{name: "localhost by name", token: secret, host: "localhost:1", origin: "http://localhost:3000", code: http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, srv.URL+"/mcp", tc.token, tc.host, tc.origin)
			if code != tc.code || !strings.Contains(body, tc.says) {
				t.Fatalf("HTTP %d %q, want %d saying %q", code, body, tc.code, tc.says)
			}
		})
	}
}

// syncBuf is a log sink the server's goroutines write while a test reads.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
