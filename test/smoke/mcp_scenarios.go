package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/api"
)

// mcpServer is how the Inspector reaches `banger mcp`: the command it
// starts (stdio), or a URL and its flags (HTTP).
type mcpServer []string

// stdioServer is `banger mcp` started by the client.
func (t *T) stdioServer() mcpServer { return mcpServer{filepath.Join(t.bin, "banger"), "mcp"} }

// inspector runs the MCP Inspector's CLI (npm @modelcontextprotocol/
// inspector-cli), a client nobody here wrote, against `banger mcp`: one
// method a run, as an agent's host would call it. It returns the JSON the
// Inspector prints, or the text of a tool's error.
func (t *T) inspector(srv mcpServer, args ...string) (out map[string]any, failed string) {
	out, failed, err := t.tryInspector(srv, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out, failed
}

// tryInspector is inspector, returning its failure to connect or call.
func (t *T) tryInspector(srv mcpServer, args ...string) (out map[string]any, failed string, err error) {
	if t.tools.clients == "" {
		t.Fatalf("no MCP clients: run scripts/deps.sh (it installs test/clients into .tools/node)")
	}
	// The Inspector's CLI looks for its package.json relative to the
	// working directory (../package.json): run it from a directory inside
	// its npm project.
	dir := filepath.Join(t.tools.clients, "run")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	ctx, cancel := context.WithTimeout(t.ctx, 10*time.Minute)
	defer cancel()
	cli := append([]string{filepath.Join(t.tools.clients, "node_modules/.bin/mcp-inspector-cli"), "--cli"}, srv...)
	cmd := exec.CommandContext(ctx, "node", append(cli, args...)...)
	cmd.Dir, cmd.Env = dir, t.env()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		return nil, "", fmt.Errorf("mcp-inspector-cli %s: %v\n%s\n%s", strings.Join(args, " "), err, stdout, stderr.String())
	}
	// It prints the result as JSON after its own notices.
	start := strings.IndexByte(string(stdout), '{')
	if start < 0 || json.Unmarshal(stdout[start:], &out) != nil {
		return nil, "", fmt.Errorf("mcp-inspector-cli %s printed no JSON:\n%s\n%s", strings.Join(args, " "), stdout, stderr.String())
	}
	if isErr, _ := out["isError"].(bool); isErr {
		content, _ := out["content"].([]any)
		if len(content) > 0 {
			first, _ := content[0].(map[string]any)
			failed, _ = first["text"].(string)
		}
		return out, failed, nil
	}
	return out, "", nil
}

// mcpTool calls one tool through the Inspector and decodes its
// structured result into v; it fails the scenario on a tool error.
func (t *T) mcpTool(srv mcpServer, v any, tool string, args ...string) {
	cli := []string{"--method", "tools/call", "--tool-name", tool}
	for _, a := range args {
		cli = append(cli, "--tool-arg", a)
	}
	out, failed := t.inspector(srv, cli...)
	if failed != "" {
		t.Fatalf("%s: %s", tool, failed)
	}
	if v != nil {
		b, _ := json.Marshal(out["structuredContent"])
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: decoding %s: %v", tool, b, err)
		}
	}
}

// mcpRefused calls a tool that must fail, saying want.
func (t *T) mcpRefused(srv mcpServer, want, tool string, args ...string) {
	cli := []string{"--method", "tools/call", "--tool-name", tool}
	for _, a := range args {
		cli = append(cli, "--tool-arg", a)
	}
	if _, failed := t.inspector(srv, cli...); !strings.Contains(failed, want) {
		t.Fatalf("%s %v: want a refusal saying %q, got %q", tool, args, want, failed)
	}
}

// mcpInspector: the MCP Inspector lists banger's tools and creates, runs in
// and deletes a sandbox over stdio; a person's VM is out of the server's
// reach, a delete needs confirm, and the daemon logs the server's calls.
func mcpInspector(t *T) {
	reg := t.bootable()
	ref := reg + "/smoke/busybox:mcp"
	t.Push(ref, t.busyboxImage())
	t.Must("image", "pull", ref)
	t.Must("vm", "create", "--name", "persons", "--image", ref, "--memory", "256M", "--no-start")
	stdio := t.stdioServer()

	out, _ := t.inspector(stdio, "--method", "tools/list")
	listed, _ := json.Marshal(out["tools"])
	t.Contains("tools/list", string(listed), `"sandbox_create"`, `"sandbox_exec"`, `"sandbox_delete"`, `"readOnlyHint":true`, `"inputSchema"`)

	var sb struct {
		Name, State, Creator string
	}
	t.mcpTool(stdio, &sb, "sandbox_create", "image="+ref, "name=agentbox", "memory=256M", "network=none")
	if sb.Name != "agentbox" || sb.State != api.VMRunning || sb.Creator != "mcp:agent" {
		t.Fatalf("sandbox_create = %+v", sb)
	}
	t.Contains("ps", t.Must("ps").stdout, "agentbox", "mcp:agent")

	var ex struct {
		ExitCode    int    `json:"exit_code"`
		Stdout      string `json:"stdout"`
		StdoutBytes int64  `json:"stdout_bytes"`
		Truncated   bool   `json:"truncated"`
	}
	t.mcpTool(stdio, &ex, "sandbox_exec", "name=agentbox", "command=cat", "stdin=piped in")
	if ex.ExitCode != 0 || ex.Stdout != "piped in" {
		t.Fatalf("sandbox_exec with stdin = %+v", ex)
	}
	t.mcpTool(stdio, &ex, "sandbox_exec", "name=agentbox", "command=echo hello-mcp; exit 4")
	if ex.ExitCode != 4 || ex.Stdout != "hello-mcp\n" || ex.Truncated {
		t.Fatalf("sandbox_exec = %+v", ex)
	}
	// 1000 lines of 100 bytes, from shell builtins alone (the image is
	// busybox with a few applets).
	line := strings.Repeat("x", 99)
	t.mcpTool(stdio, &ex, "sandbox_exec", "name=agentbox", `argv=["sh", "-c", "i=0; while [ $i -lt 1000 ]; do echo `+line+`; i=$((i+1)); done"]`, "output_cap=1000")
	if len(ex.Stdout) != 1000 || ex.StdoutBytes != 100000 || !ex.Truncated {
		t.Fatalf("capped sandbox_exec = exit %d, %d bytes kept of %d, truncated %v", ex.ExitCode, len(ex.Stdout), ex.StdoutBytes, ex.Truncated)
	}

	// Files: written with parents, read in part, found by a search.
	t.mcpTool(stdio, nil, "file_write", "name=agentbox", "path=/work/src/app.py", `content="def f():\n    return 1  # TODO\n"`, "parents=true")
	var rd struct {
		Content string
		Size    int64
		EOF     bool
	}
	t.mcpTool(stdio, &rd, "file_read", "name=agentbox", "path=/work/src/app.py", "offset=4", "limit=3")
	if rd.Content != "f()" || rd.Size != 30 || rd.EOF {
		t.Fatalf("file_read = %+v", rd)
	}
	var found struct {
		Matches []struct {
			Path string
			Line int
		}
	}
	t.mcpTool(stdio, &found, "file_search", "name=agentbox", "pattern=TODO", "path=/work")
	if len(found.Matches) != 1 || found.Matches[0].Path != "/work/src/app.py" || found.Matches[0].Line != 2 {
		t.Fatalf("file_search = %+v", found)
	}
	t.mcpRefused(stdio, "confirm: true", "file_remove", "name=agentbox", "path=/work", "recursive=true")

	// Refusals: a person's VM, a delete without confirm, a relative dir.
	t.mcpRefused(stdio, "touches only its own", "sandbox_exec", "name=persons", "command=exit 0")
	t.mcpRefused(stdio, "touches only its own", "sandbox_delete", "name=persons", "confirm=true")
	t.mcpRefused(stdio, "confirm: true", "sandbox_delete", "name=agentbox")
	t.mcpRefused(stdio, "is relative", "sandbox_exec", "name=agentbox", "command=exit 0", "dir=tmp")
	var l struct{ Sandboxes []struct{ Name string } }
	t.mcpTool(stdio, &l, "sandbox_list")
	if len(l.Sandboxes) != 1 || l.Sandboxes[0].Name != "agentbox" {
		t.Fatalf("sandbox_list = %+v", l)
	}

	// A command past its timeout is killed in the guest, not left running.
	var to struct {
		TimedOut bool `json:"timed_out"`
		ExitCode int  `json:"exit_code"`
	}
	t.mcpTool(stdio, &to, "sandbox_exec", "name=agentbox", "command=sleep 612", "timeout_seconds=2")
	if !to.TimedOut || to.ExitCode != -1 {
		t.Fatalf("sandbox_exec past its timeout = %+v", to)
	}
	t.Eventually("the timed-out command is gone from the guest", time.Minute, func() bool {
		return !strings.Contains(t.Must("vm", "exec", "agentbox", "--", "ps").stdout, "sleep 612")
	})

	// Checkpoint, break, restore: the file is back; fork 2: both run, each
	// with the checkpointed file, one result a copy.
	t.mcpTool(stdio, &ex, "sandbox_exec", "name=agentbox", "command=echo good > /root/state")
	var cp struct{ Tag string }
	t.mcpTool(stdio, &cp, "checkpoint_create", "name=agentbox", "tag=green")
	t.mcpTool(stdio, &ex, "sandbox_exec", "name=agentbox", "command=rm /root/state")
	var cps struct{ Checkpoints []struct{ Tag string } }
	t.mcpTool(stdio, &cps, "checkpoint_list", "name=agentbox")
	if cp.Tag != "green" || len(cps.Checkpoints) != 1 {
		t.Fatalf("checkpoint = %+v, list %+v", cp, cps)
	}
	t.mcpTool(stdio, nil, "checkpoint_restore", "name=agentbox", "tag=green")
	t.mcpTool(stdio, &ex, "sandbox_exec", "name=agentbox", "command=cat /root/state")
	if ex.Stdout != "good\n" {
		t.Fatalf("after checkpoint_restore: %+v", ex)
	}
	// A new sandbox from the checkpoint: its file as it was then.
	var fromCP struct{ Name, State string }
	t.mcpTool(stdio, &fromCP, "sandbox_create", "name=fromcp", "from_sandbox=agentbox", "from_checkpoint=green")
	t.mcpTool(stdio, &ex, "sandbox_exec", "name=fromcp", "command=cat /root/state")
	if fromCP.State != api.VMRunning || ex.Stdout != "good\n" {
		t.Fatalf("a sandbox from checkpoint green: %+v, %+v", fromCP, ex)
	}
	t.mcpTool(stdio, nil, "sandbox_delete", "name=fromcp", "confirm=true")
	var fo struct {
		Copies []struct{ Name, State, Error string }
	}
	t.mcpTool(stdio, &fo, "sandbox_fork", "name=agentbox", "count=2", "prefix=try")
	if len(fo.Copies) != 2 || fo.Copies[0].State != api.VMRunning || fo.Copies[1].Error != "" {
		t.Fatalf("sandbox_fork = %+v", fo)
	}
	for _, c := range fo.Copies {
		t.mcpTool(stdio, &ex, "sandbox_exec", "name="+c.Name, "command=cat /root/state; hostname")
		if ex.Stdout != "good\n"+c.Name+"\n" {
			t.Fatalf("copy %s: %+v", c.Name, ex)
		}
		t.mcpTool(stdio, nil, "sandbox_delete", "name="+c.Name, "confirm=true")
	}
	var ports struct{ Ports []struct{ Port int } }
	t.mcpTool(stdio, &ports, "ports_list", "name=agentbox")
	t.mcpRefused(stdio, "needs a person's yes", "egress_allow", "name=agentbox", `allow=["example.com"]`)

	t.mcpTool(stdio, nil, "sandbox_delete", "name=agentbox", "confirm=true")
	mcpHTTP(t, ref)
	var list api.VMListResult
	t.JSON(&list, "vm", "list")
	if len(list.VMs) != 1 || list.VMs[0].Name != "persons" {
		t.Fatalf("after sandbox_delete: %+v", list.VMs)
	}
	logData, _ := os.ReadFile(filepath.Join(t.Home(), "logs", "bangerd.log"))
	t.Contains("the daemon's log", string(logData), "method=vm.exec", "caller=mcp:agent")
}

// mcpHTTP: the same server over Streamable HTTP on loopback, driven by
// the Inspector with a bearer token; no token, a revoked one, a rebinding
// Host and a web page's Origin are refused.
func mcpHTTP(t *T, ref string) {
	var tok struct{ ID, Token string }
	t.JSON(&tok, "mcp", "token", "--name", "smoke")
	// A host project under the server's root, for the review loop.
	root := filepath.Join(t.home, "projects")
	proj := filepath.Join(root, "app")
	t.writeFile(proj, "calc.py", []byte("def add(a, b):\n    return a - b\n"), 0o644)
	t.gitRun(proj, "git", "init", "-q", "-b", "main")
	t.gitRun(proj, "git", "add", "-A")
	t.gitRun(proj, "git", "commit", "-qm", "start")
	cmd := exec.CommandContext(t.ctx, filepath.Join(t.bin, "banger"), "mcp", "--http", "127.0.0.1:0", "--root", root)
	cmd.Env = t.env()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("%v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	var log syncBuffer
	url := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.Write([]byte(sc.Text() + "\n"))
			if u, ok := strings.CutPrefix(sc.Text(), "banger mcp: serving "); ok {
				url <- u
			}
		}
	}()
	var endpoint string
	select {
	case endpoint = <-url:
	case <-time.After(time.Minute):
		t.Fatalf("banger mcp --http did not say where it serves:\n%s", log.String())
	}
	srv := mcpServer{endpoint, "--transport", "http", "--header", "Authorization: Bearer " + tok.Token}
	out, _ := t.inspector(srv, "--method", "tools/list")
	listed, _ := json.Marshal(out["tools"])
	t.Contains("tools/list over HTTP", string(listed), `"sandbox_create"`)
	var sb struct{ Name, State string }
	t.mcpTool(srv, &sb, "sandbox_create", "image="+ref, "name=httpbox", "memory=256M", "network=none")
	var ex struct {
		ExitCode int    `json:"exit_code"`
		Stdout   string `json:"stdout"`
	}
	t.mcpTool(srv, &ex, "sandbox_exec", "name=httpbox", `argv=["uname", "-n"]`)
	if sb.State != api.VMRunning || ex.ExitCode != 0 || strings.TrimSpace(ex.Stdout) != "httpbox" {
		t.Fatalf("over HTTP: created %+v, exec %+v", sb, ex)
	}
	var bg struct{ Handle string }
	t.mcpTool(srv, &bg, "sandbox_exec", "name=httpbox", "command=echo started; sleep 613", "background=true")
	var st struct {
		Running bool
		Stdout  string
		Error   string
	}
	t.Eventually("the background command's output", time.Minute, func() bool {
		t.mcpTool(srv, &st, "process_status", "handle="+bg.Handle)
		return st.Stdout == "started\n"
	})
	if !st.Running {
		t.Fatalf("process_status = %+v", st)
	}
	t.mcpTool(srv, &st, "process_kill", "handle="+bg.Handle)
	if st.Running || st.Error != "killed by process_kill" {
		t.Fatalf("process_kill = %+v", st)
	}
	t.Eventually("the killed command is gone from the guest", time.Minute, func() bool {
		return !strings.Contains(t.Must("vm", "exec", "httpbox", "--", "ps").stdout, "sleep 613")
	})
	// The reviewed way back: the project in, a fix in the guest, its diff,
	// and only that diff, by its hash, into the host checkout.
	t.mcpRefused(srv, "not under this server's roots", "workspace_sync_in", "name=httpbox", "path="+t.home)
	var so struct{ Dir string }
	t.mcpTool(srv, &so, "workspace_sync_in", "name=httpbox", "path="+proj)
	t.mcpTool(srv, nil, "file_write", "name=httpbox", "path="+so.Dir+"/calc.py", `content="def add(a, b):\n    return a + b\n"`)
	var df struct {
		Diff   string
		SHA256 string
		Files  []struct {
			Path           string
			Added, Deleted int
		}
	}
	t.mcpTool(srv, &df, "workspace_diff", "name=httpbox")
	if len(df.Files) != 1 || df.Files[0].Path != "calc.py" || df.Files[0].Added != 1 || !strings.Contains(df.Diff, "+    return a + b") {
		t.Fatalf("workspace_diff = %+v", df)
	}
	t.mcpRefused(srv, "no diff", "workspace_accept", "name=httpbox", "sha256="+strings.Repeat("0", 64))
	if b, _ := os.ReadFile(filepath.Join(proj, "calc.py")); !strings.Contains(string(b), "a - b") {
		t.Fatalf("the host checkout changed before accept: %s", b)
	}
	t.mcpTool(srv, nil, "workspace_accept", "name=httpbox", "sha256="+df.SHA256)
	if b, _ := os.ReadFile(filepath.Join(proj, "calc.py")); !strings.Contains(string(b), "a + b") {
		t.Fatalf("after workspace_accept the host has %s", b)
	}
	t.mcpTool(srv, nil, "sandbox_delete", "name=httpbox", "confirm=true")
	t.Contains("the server's log", log.String(), "caller=\"token "+tok.ID+"\"")

	if _, _, err := t.tryInspector(mcpServer{endpoint, "--transport", "http"}, "--method", "tools/list"); err == nil || !strings.Contains(err.Error(), "no bearer token") {
		t.Fatalf("the Inspector without a token: %v", err)
	}
	for _, tc := range []struct {
		name, token, host, origin string
		code                      int
	}{
		{"no token", "", "", "", http.StatusUnauthorized},
		{"a made-up token", "bgr_mcp_" + strings.Repeat("1", 64), "", "", http.StatusUnauthorized},
		{"a rebinding host", tok.Token, "evil.example", "", http.StatusForbidden},
		{"a web page", tok.Token, "", "https://evil.example", http.StatusForbidden},
	} {
		req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		if tc.host != "" {
			req.Host = tc.host
		}
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Fatalf("%s: HTTP %d, want %d", tc.name, resp.StatusCode, tc.code)
		}
	}
	t.Must("mcp", "token", "revoke", tok.ID)
	if _, _, err := t.tryInspector(srv, "--method", "tools/list"); err == nil || !strings.Contains(err.Error(), "not a token of this server") {
		t.Fatalf("the Inspector with a revoked token: %v", err)
	}
}

// mcpAgentLoop: a scripted agent on the TypeScript SDK's client
// (test/clients/agent-loop.mjs) runs the whole loop against real VMs:
// a failing test, checkpoint, a broken tree restored, three fixes in
// three forks, the passing one's diff accepted into a host checkout,
// everything deleted; with the refusals on the way.
func mcpAgentLoop(t *T) {
	if t.tools.clients == "" {
		t.Fatalf("no MCP clients: run scripts/deps.sh (it installs test/clients into .tools/node)")
	}
	reg := t.bootable()
	ref := reg + "/smoke/busybox:loop"
	t.Push(ref, t.busyboxImage())
	t.Must("image", "pull", ref)
	t.Must("vm", "create", "--name", "persons", "--image", ref, "--memory", "256M", "--no-start")
	root := filepath.Join(t.home, "projects")
	proj := filepath.Join(root, "calc")
	t.writeFile(proj, "calc.sh", []byte("add() { echo $(($1 - $2)); }\n"), 0o644)
	t.gitRun(proj, "git", "init", "-q", "-b", "main")
	t.gitRun(proj, "git", "add", "-A")
	t.gitRun(proj, "git", "commit", "-qm", "start")

	// Node resolves the script's imports from where it lies: beside the
	// clients' node_modules.
	body, err := os.ReadFile("test/clients/agent-loop.mjs")
	if err != nil {
		t.Fatalf("%v (run the smoke suite from the repository root)", err)
	}
	dir, err := os.MkdirTemp(t.tools.clients, "loop-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "agent-loop.mjs")
	if err := os.WriteFile(script, body, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	ctx, cancel := context.WithTimeout(t.ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	// The script's imports resolve from the npm project of the clients.
	cmd.Env = append(t.env(), "BANGER="+filepath.Join(t.bin, "banger"), "ROOT="+root, "PROJECT="+proj, "IMAGE="+ref, "PERSON=persons")
	cmd.Dir = dir
	var stderr strings.Builder // the script's errors and banger mcp's log
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the agent loop: %v\n%s\n%s", err, out, stderr.String())
	}
	var total struct {
		TotalMS int64 `json:"total_ms"`
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if json.Unmarshal([]byte(lines[len(lines)-1]), &total) != nil || total.TotalMS == 0 {
		t.Fatalf("the agent loop printed no total:\n%s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(proj, "calc.sh")); string(b) != "add() { echo $(($1 + $2)); }\n" {
		t.Fatalf("the host checkout after the loop: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(proj, "test.sh")); !strings.Contains(string(b), "PASS") {
		t.Fatalf("the agent's test did not come back: %q", b)
	}
	var list api.VMListResult
	t.JSON(&list, "vm", "list")
	if len(list.VMs) != 1 || list.VMs[0].Name != "persons" {
		t.Fatalf("after the loop: %+v", list.VMs)
	}
	fmt.Printf("     mcp-agent-loop: the whole loop took %.1f s (%d steps)\n", float64(total.TotalMS)/1000, len(lines)-1)
}
