package client_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/daemon"
	"github.com/bangerdev/banger/internal/paths"
	"github.com/bangerdev/banger/internal/version"
)

// TestMain runs the tests and examples against a real daemon on a
// temporary home, which BANGER_HOME names: DefaultSocket finds it as it
// finds a user's.
func TestMain(m *testing.M) {
	os.Exit(withDaemon(m.Run))
}

func withDaemon(run func() int) int {
	// A short path: a unix socket's address holds 107 bytes.
	home, err := os.MkdirTemp("", "bgc")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(home)
	os.Setenv("BANGER_HOME", home)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{
			Layout: paths.Home(home),
			Config: config.Defaults(config.Host{CPUs: 2, MemoryBytes: 4 << 30}),
			Build:  version.Info(), // what bangerd reports
			Ready:  func() { close(ready) },
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		fmt.Fprintln(os.Stderr, "the daemon exited before it was ready:", err)
		return 1
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "the daemon was not ready after 30s")
		return 1
	}
	code := run()
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "the daemon did not stop")
		return 1
	}
	return code
}
