// Package boot holds what every banger guest boot shares, whichever VMM
// runs it: the initramfs for a kernel bundle, the kernel command line,
// and waiting for the guest agent to answer.
package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/initramfs"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/kmod"
	"github.com/bangerdev/banger/internal/vmm/qemu"
)

// Initramfs builds the initramfs of a kernel bundle around agent: the
// guest's modules, resolved from the bundle's own modules tree.
func Initramfs(bundleDir string, agentBin []byte) ([]byte, error) {
	modDir := filepath.Join(bundleDir, kernel.DirModules)
	var mods []kmod.Info
	idx, err := kmod.Load(modDir)
	if err != nil {
		return nil, err
	}
	if idx.Len() > 0 {
		if mods, err = idx.Resolve(kernel.GuestModules()...); err != nil {
			return nil, err
		}
	}
	var b bytes.Buffer
	if err := initramfs.Build(&b, agentBin, modDir, mods); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Cmdline is the guest kernel's command line. An emulated guest gets the
// host's TSC frequency, without which it often hangs calibrating its
// clock while the host is busy.
func Cmdline(hostname string, emulated bool) string {
	args := []string{"console=ttyS0", "reboot=t", "panic=-1", "banger.hostname=" + hostname}
	if emulated {
		if khz := qemu.TSCkHz(); khz > 0 {
			args = append(args, fmt.Sprintf("tsc_early_khz=%d", khz))
		}
	}
	return strings.Join(args, " ")
}

// ErrStopped means the VM stopped before its agent answered.
var ErrStopped = errors.New("the VM stopped before its agent answered")

// WaitAgent connects to the agent with dial and pings until the agent
// answers, the VM stops (stopped is closed) or ctx ends.
func WaitAgent(ctx context.Context, dial func(context.Context) (net.Conn, error), stopped <-chan struct{}) (*agent.Client, error) {
	var conn net.Conn
	for conn == nil {
		c, err := dial(ctx)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-stopped:
			return nil, ErrStopped
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the agent's transport: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	// The socket exists before the guest does: ping until it answers.
	c := agent.NewClient(conn)
	for {
		pctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		_, err := c.Ping(pctx)
		cancel()
		if err == nil {
			return c, nil
		}
		select {
		case <-stopped:
			c.Close()
			return nil, ErrStopped
		case <-ctx.Done():
			c.Close()
			return nil, fmt.Errorf("waiting for the agent: %w", ctx.Err())
		default:
		}
	}
}

// UnixDialer dials a unix socket, for VMMs whose agent transport is one.
func UnixDialer(path string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}
