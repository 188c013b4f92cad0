// Package bootcheck is the boot check behind `banger vm boot-test`: boot a
// throwaway VM from an image and a kernel, run uname -a through the guest
// agent, power it off, and time every phase.
package bootcheck

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/vmm"
)

// Service runs boot tests.
type Service struct {
	Image   func(ctx context.Context, name string) (api.Image, error)
	Kernel  func(ctx context.Context, name string) (api.Kernel, error)
	Driver  vmm.Driver
	Agent   string // the banger-agent binary
	WorkDir string // parent of each test's runtime directory
	Log     *slog.Logger
}

// Run boots, checks and powers off one VM. Nothing outlives it: the VMM
// is killed and its directory removed whatever happens.
func (s *Service) Run(ctx context.Context, p api.BootTestParams) (api.BootTestResult, error) {
	if p.Image == "" {
		return api.BootTestResult{}, fmt.Errorf("%w: --image is required", api.ErrInvalidArgument)
	}
	if p.Kernel == "" {
		p.Kernel = "default"
	}
	img, err := s.Image(ctx, p.Image)
	if err != nil {
		return api.BootTestResult{}, err
	}
	k, err := s.Kernel(ctx, p.Kernel)
	if err != nil {
		return api.BootTestResult{}, err
	}
	if err := s.Driver.Available(); err != nil {
		return api.BootTestResult{}, err
	}
	res := api.BootTestResult{VMM: s.Driver.Name(), Kernel: k.Name, Image: img.Name}
	if err := os.MkdirAll(s.WorkDir, 0o700); err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp(s.WorkDir, "boot-test-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	phase := func(name string, d time.Duration) {
		res.Phases = append(res.Phases, api.Phase{Name: name, Seconds: d.Seconds(), Clock: "host"})
	}

	start := time.Now()
	initrdPath, err := boot.CachedInitramfs(k.Dir, s.Agent, nil)
	if err != nil {
		return res, err
	}
	work := filepath.Join(dir, "work.ext4")
	if err := boot.WorkDisk(ctx, work, 256<<20); err != nil {
		return res, err
	}
	phase("prepare (initramfs, work disk)", time.Since(start))

	start = time.Now()
	in, err := s.Driver.Start(ctx, vmm.Spec{
		Kernel: bundle.Vmlinux(k.Dir), Initrd: initrdPath, Cmdline: boot.Cmdline(proto.BootParams{Hostname: "boot-test"}, true),
		MemoryMiB: 512, VCPU: 1, Dir: dir,
		Disks: []vmm.Disk{{Path: img.Rootfs, ReadOnly: true, Serial: proto.RootSerial}, {Path: work, Serial: proto.WorkSerial}},
	})
	if err != nil {
		return res, err
	}
	defer func() {
		select {
		case <-in.Done():
		default:
			_ = in.Process().Kill()
			<-in.Done()
		}
	}()
	phase("VMM started", time.Since(start))
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c, err := boot.WaitAgent(wctx, in.DialAgent, in.Done())
	if err != nil {
		return res, fmt.Errorf("booting: %w; %s", err, boot.Failure(in, s.Driver.Name()))
	}
	defer c.Close()
	phase("agent ready", time.Since(start))
	var info proto.InfoResult
	if err := c.Call(ctx, proto.MethodInfo, nil, &info); err == nil {
		for _, t := range info.Timings {
			res.Phases = append(res.Phases, api.Phase{Name: "guest: " + t.Phase, Seconds: t.Seconds, Clock: "guest"})
		}
	}
	t0 := time.Now()
	var out bytes.Buffer
	r, err := c.Exec(ctx, proto.ExecParams{Args: []string{"uname", "-a"}}, nil, &out, &out)
	if err != nil {
		return res, fmt.Errorf("running uname -a in the guest: %w", err)
	}
	if r.ExitCode != 0 {
		return res, fmt.Errorf("uname -a in the guest exited %d: %s", r.ExitCode, strings.TrimSpace(out.String()))
	}
	res.Uname = strings.TrimSpace(out.String())
	phase("exec uname -a", time.Since(t0))
	t0 = time.Now()
	if err := c.Shutdown(ctx); err != nil {
		return res, err
	}
	select {
	case <-in.Done():
	case <-time.After(time.Minute):
		return res, fmt.Errorf("the guest did not power off within a minute")
	}
	phase("power off", time.Since(t0))
	s.Log.Info("boot test", "image", img.Name, "kernel", k.Name, "vmm", res.VMM)
	return res, nil
}
