// Command mcp benchmarks a command run through `banger mcp` against the
// same command run by `banger vm exec`, in one run on one VM: `echo` by
// sandbox_exec over stdio (one session, as an agent keeps it) and over
// Streamable HTTP on loopback (a token, stateless requests), beside `vm
// exec` (a CLI process a call, as an agent that shells out would pay) and
// the daemon's own round trip through api/client (the floor). It prints
// p50 and p95 and ratios; it asserts nothing.
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
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/bench/benchkit"
)

func main() { benchkit.Main("bench-mcp", run) }

func run(o benchkit.Opts) error {
	w, err := benchkit.NewWorld("bench-mcp", o.Bin)
	if err != nil {
		return err
	}
	defer w.Close()
	cli := w.CLI
	if err := cli.ImportBusybox(o.Crane, w.Work, "small"); err != nil {
		return err
	}
	ctx := context.Background()
	env := append(os.Environ(), "BANGER_HOME="+cli.Home)
	banger := filepath.Join(o.Bin, "banger")

	// One session over stdio, as an agent's host keeps it.
	stdioCmd := exec.Command(banger, "mcp", "--name", "bench")
	stdioCmd.Env = env
	stdio, err := sdk.NewClient(&sdk.Implementation{Name: "bench", Version: "0"}, nil).Connect(ctx, &sdk.CommandTransport{Command: stdioCmd}, nil)
	if err != nil {
		return fmt.Errorf("connecting to banger mcp: %w", err)
	}
	defer stdio.Close()
	if _, err := call(ctx, stdio, "sandbox_create", map[string]any{"image": "small", "name": "b", "memory": "256M", "network": "none", "cpus": 1}); err != nil {
		return err
	}

	// The same server over HTTP, with a token.
	tok, err := cli.Output("mcp", "token", "--json")
	if err != nil {
		return err
	}
	var t struct{ Token string }
	if err := json.Unmarshal([]byte(tok), &t); err != nil {
		return err
	}
	httpCmd := exec.Command(banger, "mcp", "--name", "bench", "--http", "127.0.0.1:0")
	httpCmd.Env = env
	stderr, err := httpCmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := httpCmd.Start(); err != nil {
		return err
	}
	defer func() { _ = httpCmd.Process.Kill(); _ = httpCmd.Wait() }()
	url, err := servingURL(bufio.NewScanner(stderr))
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: bearer(t.Token)}
	web, err := sdk.NewClient(&sdk.Implementation{Name: "bench", Version: "0"}, nil).Connect(ctx, &sdk.StreamableClientTransport{Endpoint: url, HTTPClient: hc, DisableStandaloneSSE: true}, nil)
	if err != nil {
		return fmt.Errorf("connecting over HTTP: %w", err)
	}
	defer web.Close()

	c := client.New(filepath.Join(cli.Home, "run", "bangerd.sock"), "bench")
	// The image is busybox with sh alone: echo is its builtin.
	argv := []string{"sh", "-c", "echo hi"}
	echo := map[string]any{"name": "b", "argv": argv}
	measures := []struct {
		name string
		fn   func() error
	}{
		{"daemon round trip (api/client ExecVM): the floor", func() error {
			_, err := c.ExecVM(ctx, api.VMExecParams{Name: "b", Args: argv}, func(api.VMExecEvent) error { return nil })
			return err
		}},
		{"banger vm exec b -- sh -c 'echo hi' (a process a call)", func() error { return cli.Run(append([]string{"vm", "exec", "b", "--"}, argv...)...) }},
		{"MCP sandbox_exec over stdio (one session)", func() error { _, err := call(ctx, stdio, "sandbox_exec", echo); return err }},
		{"MCP sandbox_exec over HTTP (token, stateless)", func() error { _, err := call(ctx, web, "sandbox_exec", echo); return err }},
	}
	runs := max(o.Runs, 20)
	results := make([][]time.Duration, len(measures))
	for range 3 { // warm every path first
		for _, m := range measures {
			if err := m.fn(); err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
		}
	}
	for range runs { // interleaved, so drift touches all alike
		for i, m := range measures {
			t0 := time.Now()
			if err := m.fn(); err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			results[i] = append(results[i], time.Since(t0))
		}
	}
	base := benchkit.Percentile(results[1], 50)
	fmt.Printf("\necho in a running VM, %d calls each, interleaved (TCG, 1 vCPU, 256 MiB, busybox, no network):\n", runs)
	fmt.Printf("  %-52s %9s %9s %14s\n", "", "p50", "p95", "p50 vs vm exec")
	for i, m := range measures {
		p50, p95 := benchkit.Percentile(results[i], 50), benchkit.Percentile(results[i], 95)
		fmt.Printf("  %-52s %7.1fms %7.1fms %13.2fx\n", m.name, ms(p50), ms(p95), float64(p50)/float64(base))
	}
	_, err = call(ctx, stdio, "sandbox_delete", map[string]any{"name": "b", "confirm": true})
	return err
}

func call(ctx context.Context, cs *sdk.ClientSession, tool string, args any) (*sdk.CallToolResult, error) {
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
	if err == nil && res.IsError {
		err = fmt.Errorf("%s: %s", tool, res.Content[0].(*sdk.TextContent).Text)
	}
	return res, err
}

// servingURL reads banger mcp --http's stderr until it says where it
// serves.
func servingURL(sc *bufio.Scanner) (string, error) {
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "banger mcp: serving "); ok {
			go func() {
				for sc.Scan() { // drain its log
				}
			}()
			return u, nil
		}
	}
	return "", fmt.Errorf("banger mcp --http exited without serving: %v", sc.Err())
}

type bearer string

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
