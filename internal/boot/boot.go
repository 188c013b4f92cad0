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
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/initramfs"
	"github.com/bangerdev/banger/internal/kmod"
	"github.com/bangerdev/banger/internal/kvm"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/wholefile"
)

// Initramfs builds the initramfs of a kernel bundle around agent: the
// guest's modules, resolved from the bundle's own modules tree.
func Initramfs(bundleDir string, agentBin []byte) ([]byte, error) {
	modDir := bundle.Modules(bundleDir)
	var mods []kmod.Info
	idx := kmod.NewIndex(nil, nil)
	// A bundle without modules is a kernel with its drivers built in.
	if _, err := os.Stat(modDir); err == nil {
		if idx, err = kmod.Load(modDir); err != nil {
			return nil, err
		}
	}
	var later []kmod.Info
	if idx.Len() > 0 {
		var err error
		if mods, err = idx.Resolve(bundle.GuestModules()...); err != nil {
			return nil, err
		}
		var optional []string
		for _, m := range bundle.OptionalGuestModules() {
			if _, err := idx.Resolve(m); err == nil {
				optional = append(optional, m)
			}
		}
		if len(optional) > 0 {
			// Resolved together, shared dependencies are listed once.
			if later, err = idx.Resolve(optional...); err != nil {
				return nil, err
			}
		}
	}
	var b bytes.Buffer
	if err := initramfs.Build(&b, agentBin, modDir, mods, later); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// CachedInitramfs returns the initramfs of a bundle for the agent binary
// at agentPath, building it once per bundle and agent build and keeping it
// in the bundle's directory (it goes when the bundle does). Indexing a
// distribution kernel's modules takes most of a second: not something to
// redo at every boot. sums (nil: none) keeps the agent's digest between
// calls, which restores make several at once.
func CachedInitramfs(bundleDir, agentPath string, sums *vmm.Sums) (string, error) {
	sum, err := sums.File(agentPath)
	if err != nil {
		return "", fmt.Errorf("reading the guest agent (build it with `make build`): %w", err)
	}
	path := filepath.Join(bundleDir, "initrd-"+sum[:12]+".cpio")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	agentBin, err := os.ReadFile(agentPath)
	if err != nil {
		return "", fmt.Errorf("reading the guest agent (build it with `make build`): %w", err)
	}
	data, err := Initramfs(bundleDir, agentBin)
	if err != nil {
		return "", err
	}
	// Concurrent builds write the same bytes: whichever rename lands last
	// wins, and both are whole.
	if err := wholefile.Write(path, data, 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// Cmdline is the guest kernel's command line, carrying p to the agent.
// An emulated guest gets the host's TSC frequency, without which it often
// hangs calibrating its clock while the host is busy.
func Cmdline(p proto.BootParams, emulated bool) string {
	args := append([]string{"console=ttyS0", "reboot=t", "panic=-1"}, p.Args()...)
	if p.Init != "" {
		// For the image's systemd: no login prompt on the console, a log
		// file nobody types at (its getty would also wait for a udev
		// that many images lack), and only failures among its status
		// lines (its journal keeps them all; each console line costs an
		// emulated UART milliseconds).
		args = append(args, "systemd.getty_auto=0", "systemd.show_status=error")
	}
	if emulated {
		if khz := kvm.TSCkHz(); khz > 0 {
			args = append(args, fmt.Sprintf("tsc_early_khz=%d", khz))
		}
	}
	return strings.Join(args, " ")
}

// ErrStopped means the VM stopped before its agent answered.
var ErrStopped = errors.New("the VM stopped before its agent answered")

// WaitAgent connects to the agent with dial and pings until the agent
// answers, the VM stops (stopped is closed) or ctx ends.
func WaitAgent(ctx context.Context, dial func(context.Context) (net.Conn, error), stopped <-chan struct{}) (*client.Client, error) {
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
	// A ping sent before the guest opened its end is lost: retry, and
	// retry at once when the agent's hello shows it is up.
	c := client.New(conn)
	hello := c.Hello()
	for {
		pctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		if hello != nil {
			go func(h <-chan struct{}) {
				select {
				case <-h:
					cancel()
				case <-pctx.Done():
				}
			}(hello)
		}
		res, err := c.Ping(pctx)
		cancel()
		if err == nil {
			if err := proto.CheckProtocol(proto.PingProtocol(res), proto.MinProtocol); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		}
		select {
		case <-hello:
			hello = nil
		default:
		}
		select {
		case <-c.Done(): // a dead link answers no later ping either
			return nil, fmt.Errorf("waiting for the agent: %w", err)
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
