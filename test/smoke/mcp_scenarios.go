package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
)

// inspector runs the MCP Inspector's CLI (npm @modelcontextprotocol/
// inspector-cli), a client nobody here wrote, against `banger mcp` over
// stdio: one method a run, as an agent's host would call it. It returns
// the JSON the Inspector prints, or the text of a tool's error.
func (t *T) inspector(args ...string) (out map[string]any, failed string) {
	if t.tools.mcpClients == "" {
		t.Fatalf("no MCP clients: run scripts/deps.sh (it installs test/mcpclients into .tools/node)")
	}
	// The Inspector's CLI looks for its package.json relative to the
	// working directory (../package.json): run it from a directory inside
	// its npm project.
	dir := filepath.Join(t.tools.mcpClients, "run")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	ctx, cancel := context.WithTimeout(t.ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{filepath.Join(t.tools.mcpClients, "node_modules/.bin/mcp-inspector-cli"),
		"--cli", filepath.Join(t.bin, "banger"), "mcp"}, args...)...)
	cmd.Dir, cmd.Env = dir, t.env()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("mcp-inspector-cli %s: %v\n%s\n%s", strings.Join(args, " "), err, stdout, stderr.String())
	}
	// It prints the result as JSON after its own notices.
	start := strings.IndexByte(string(stdout), '{')
	if start < 0 || json.Unmarshal(stdout[start:], &out) != nil {
		t.Fatalf("mcp-inspector-cli %s printed no JSON:\n%s\n%s", strings.Join(args, " "), stdout, stderr.String())
	}
	if isErr, _ := out["isError"].(bool); isErr {
		content, _ := out["content"].([]any)
		if len(content) > 0 {
			first, _ := content[0].(map[string]any)
			failed, _ = first["text"].(string)
		}
		return out, failed
	}
	return out, ""
}

// mcpTool calls one tool through the Inspector and decodes its
// structured result into v; it fails the scenario on a tool error.
func (t *T) mcpTool(v any, tool string, args ...string) {
	cli := []string{"--method", "tools/call", "--tool-name", tool}
	for _, a := range args {
		cli = append(cli, "--tool-arg", a)
	}
	out, failed := t.inspector(cli...)
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
func (t *T) mcpRefused(want, tool string, args ...string) {
	cli := []string{"--method", "tools/call", "--tool-name", tool}
	for _, a := range args {
		cli = append(cli, "--tool-arg", a)
	}
	if _, failed := t.inspector(cli...); !strings.Contains(failed, want) {
		t.Fatalf("%s %v: want a refusal saying %q, got %q", tool, args, want, failed)
	}
}

// mcpStdio: the MCP Inspector lists banger's tools and creates, runs in
// and deletes a sandbox over stdio; a person's VM is out of the server's
// reach, a delete needs confirm, and the daemon logs the server's calls.
func mcpStdio(t *T) {
	reg := t.bootable()
	ref := reg + "/smoke/busybox:mcp"
	t.Push(ref, t.busyboxImage())
	t.Must("image", "pull", ref)
	t.Must("vm", "create", "--name", "persons", "--image", ref, "--memory", "256M", "--no-start")

	out, _ := t.inspector("--method", "tools/list")
	listed, _ := json.Marshal(out["tools"])
	t.Contains("tools/list", string(listed), `"sandbox_create"`, `"sandbox_exec"`, `"sandbox_delete"`, `"readOnlyHint":true`, `"inputSchema"`)

	var sb struct {
		Name, State, Creator string
	}
	t.mcpTool(&sb, "sandbox_create", "image="+ref, "name=agentbox", "memory=256M", "network=none")
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
	t.mcpTool(&ex, "sandbox_exec", "name=agentbox", "command=echo hello-mcp; exit 4")
	if ex.ExitCode != 4 || ex.Stdout != "hello-mcp\n" || ex.Truncated {
		t.Fatalf("sandbox_exec = %+v", ex)
	}
	// 1000 lines of 100 bytes, from shell builtins alone (the image is
	// busybox with a few applets).
	line := strings.Repeat("x", 99)
	t.mcpTool(&ex, "sandbox_exec", "name=agentbox", `argv=["sh", "-c", "i=0; while [ $i -lt 1000 ]; do echo `+line+`; i=$((i+1)); done"]`, "output_cap=1000")
	if len(ex.Stdout) != 1000 || ex.StdoutBytes != 100000 || !ex.Truncated {
		t.Fatalf("capped sandbox_exec = exit %d, %d bytes kept of %d, truncated %v", ex.ExitCode, len(ex.Stdout), ex.StdoutBytes, ex.Truncated)
	}

	// Refusals: a person's VM, a delete without confirm, a relative dir.
	t.mcpRefused("touches only its own", "sandbox_exec", "name=persons", "command=exit 0")
	t.mcpRefused("touches only its own", "sandbox_delete", "name=persons", "confirm=true")
	t.mcpRefused("confirm: true", "sandbox_delete", "name=agentbox")
	t.mcpRefused("is relative", "sandbox_exec", "name=agentbox", "command=exit 0", "dir=tmp")
	var l struct{ Sandboxes []struct{ Name string } }
	t.mcpTool(&l, "sandbox_list")
	if len(l.Sandboxes) != 1 || l.Sandboxes[0].Name != "agentbox" {
		t.Fatalf("sandbox_list = %+v", l)
	}

	t.mcpTool(nil, "sandbox_delete", "name=agentbox", "confirm=true")
	var list api.VMListResult
	t.JSON(&list, "vm", "list")
	if len(list.VMs) != 1 || list.VMs[0].Name != "persons" {
		t.Fatalf("after sandbox_delete: %+v", list.VMs)
	}
	logData, _ := os.ReadFile(filepath.Join(t.Home(), "logs", "bangerd.log"))
	t.Contains("the daemon's log", string(logData), "method=vm.exec", "caller=mcp:agent")
}
