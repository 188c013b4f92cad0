package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/test/networld"
)

// e2bSDK: the E2B JS SDK, unmodified (npm e2b, test/clients), against
// the daemon's E2B API with only E2B_API_URL, E2B_SANDBOX_URL and
// E2B_API_KEY set: create, commands (foreground, background with
// callbacks, env, cwd, stdin, timeout, kill, connect), files (read,
// write, list, watch, upload and download by signed URL), a PTY, pause and
// connect, fork, list, metrics, the timeout killing a sandbox, kill.
// Before it, the refusals with plain HTTP: no key, a revoked key,
// another key's sandbox, envd without its token, a rebinding Host, a
// page's Origin.
func e2bSDK(t *T) {
	if t.tools.clients == "" {
		t.Fatalf("no test clients: run scripts/deps.sh (it installs test/clients into .tools/node)")
	}
	t.World() // sandboxes have internet access by default: a world to reach
	l, err := networld.Listen(t.Netns(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("%v", err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := fmt.Sprintf("[e2b]\nlisten = %q\n", addr)
	if err := os.WriteFile(filepath.Join(t.Home(), "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	ref := t.debianRef()
	t.Contains("e2b status", t.Must("e2b", "status").stdout, "listening on "+addr, "E2B_API_URL=http://"+addr)
	var made api.E2BKeyCreateResult
	t.JSON(&made, "e2b", "key", "create", "smoke", "--max-sandboxes", "8")
	var other api.E2BKeyCreateResult
	t.JSON(&other, "e2b", "key", "create", "other")
	t.Contains("template set", t.Must("e2b", "template", "set", "smoke", ref, "--memory", "512M").stdout, "template smoke runs "+ref)
	t.Contains("key list", t.Must("e2b", "key", "list").stdout, made.Key.ID, "smoke", other.Key.ID)

	base := "http://" + addr
	// The daemon listens in the scenario's network namespace.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(_ context.Context, network, a string) (net.Conn, error) {
		return networld.Dial(t.Netns(), network, a)
	}}}
	call := func(method, path, key string, body any, hdr ...string) (int, []byte) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(t.ctx, method, base+path, rd)
		if err != nil {
			t.Fatalf("%v", err)
		}
		if key != "" {
			req.Header.Set("X-API-Key", key)
		}
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i] == "Host" {
				req.Host = hdr[i+1]
			} else {
				req.Header.Set(hdr[i], hdr[i+1])
			}
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, b := call("POST", "/sandboxes", made.Secret, map[string]any{"templateID": "smoke", "timeout": 300})
	if code != http.StatusCreated {
		t.Fatalf("create over HTTP: %d %s", code, b)
	}
	var sb struct{ SandboxID, EnvdAccessToken string }
	if err := json.Unmarshal(b, &sb); err != nil || sb.SandboxID == "" {
		t.Fatalf("create answered %s", b)
	}
	t.Contains("ps shows the key's name", t.Must("ps").stdout, sb.SandboxID, "e2b:smoke")
	envd := []string{"E2b-Sandbox-Id", sb.SandboxID, "E2b-Sandbox-Port", "49983", "Connect-Protocol-Version", "1"}
	for _, tc := range []struct {
		name, method, path, key string
		hdr                     []string
		code                    int
		says                    string
	}{
		{"no key", "GET", "/v2/sandboxes", "", nil, 401, "no API key"},
		{"a made-up key", "GET", "/v2/sandboxes", "e2b_" + strings.Repeat("0", 40), nil, 401, "unknown or revoked"},
		{"another key's sandbox", "GET", "/sandboxes/" + sb.SandboxID, other.Secret, nil, 404, "not found"},
		{"another key kills it", "DELETE", "/sandboxes/" + sb.SandboxID, other.Secret, nil, 404, "not found"},
		{"envd without its token", "POST", "/process.Process/List", "", envd, 401, "X-Access-Token"},
		{"envd with another's token", "POST", "/process.Process/List", "", append(envd, "X-Access-Token", strings.Repeat("a", 64)), 401, "X-Access-Token"},
		{"a rebinding Host", "GET", "/v2/sandboxes", made.Secret, []string{"Host", "evil.example:80"}, 403, "DNS rebinding"},
		{"a web page's Origin", "GET", "/v2/sandboxes", made.Secret, []string{"Origin", "http://evil.example"}, 403, "web pages"},
		{"a port without the traffic token", "GET", "/", "", []string{"E2b-Sandbox-Id", sb.SandboxID, "E2b-Sandbox-Port", "8080"}, 401, "traffic"},
	} {
		var body any
		if strings.HasPrefix(tc.path, "/process.") {
			body = map[string]any{}
		}
		code, b := call(tc.method, tc.path, tc.key, body, tc.hdr...)
		if code != tc.code || !strings.Contains(string(b), tc.says) {
			t.Fatalf("%s: HTTP %d %s; want %d saying %q", tc.name, code, b, tc.code, tc.says)
		}
	}
	code, b = call("GET", "/v2/sandboxes", other.Secret, nil)
	if code != 200 || strings.TrimSpace(string(b)) != "[]" {
		t.Fatalf("another key lists %d %s; want none", code, b)
	}
	code, b = call("POST", "/process.Process/List", "", map[string]any{}, append(envd, "X-Access-Token", sb.EnvdAccessToken)...)
	if code != 200 {
		t.Fatalf("envd with its token: %d %s", code, b)
	}
	t.Must("e2b", "key", "revoke", other.Key.ID)
	if code, _ := call("GET", "/v2/sandboxes", other.Secret, nil); code != 401 {
		t.Fatalf("a revoked key: HTTP %d, want 401", code)
	}
	if code, b := call("DELETE", "/sandboxes/"+sb.SandboxID, made.Secret, nil); code != http.StatusNoContent {
		t.Fatalf("kill over HTTP: %d %s", code, b)
	}

	body, err := os.ReadFile("test/clients/e2b-smoke.mjs")
	if err != nil {
		t.Fatalf("%v (run the smoke suite from the repository root)", err)
	}
	dir, err := os.MkdirTemp(t.tools.clients, "e2b-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "e2b-smoke.mjs")
	if err := os.WriteFile(script, body, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	ctx, cancel := context.WithTimeout(t.ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+t.Netns(), "--", "node", script)
	cmd.Env = append(t.env(), "E2B_API_URL="+base, "E2B_SANDBOX_URL="+base, "E2B_API_KEY="+made.Secret, "TEMPLATE=smoke", "OUTSIDE="+networld.Web)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the E2B SDK script: %v\n%s\n%s\ndaemon log:\n%s", err, out, stderr.String(), t.daemonLogTail())
	}
	var total struct {
		TotalMS int64 `json:"total_ms"`
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if json.Unmarshal([]byte(lines[len(lines)-1]), &total) != nil || total.TotalMS == 0 {
		t.Fatalf("the E2B SDK script printed no total:\n%s", out)
	}
	var list api.VMListResult
	t.JSON(&list, "vm", "list")
	if len(list.VMs) != 0 {
		t.Fatalf("VMs left after the SDK killed its sandboxes: %+v", list.VMs)
	}
	var steps []string
	for _, l := range lines[:len(lines)-1] {
		var st struct {
			Step string `json:"step"`
			MS   int64  `json:"ms"`
		}
		if json.Unmarshal([]byte(l), &st) == nil && st.Step != "" {
			steps = append(steps, fmt.Sprintf("%s %.1fs", st.Step, float64(st.MS)/1000))
		}
	}
	fmt.Printf("     e2b-sdk: %d steps in %.1f s (%s)\n", len(steps), float64(total.TotalMS)/1000, strings.Join(steps, ", "))
}

// daemonLogTail is the end of the scenario's daemon log, for a failure.
func (t *T) daemonLogTail() string {
	b, _ := os.ReadFile(filepath.Join(t.Home(), "logs", "bangerd.log"))
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}
