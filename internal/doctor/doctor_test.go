package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
)

// host is a healthy machine; each case breaks one thing.
func host() Host {
	return Host{
		KVM: func() error { return nil },
		Program: func(name string) (string, string, error) {
			return "/usr/bin/" + name, name + " 1.0", nil
		},
		Stat:   func(path string) (fs.FileInfo, error) { return os.Stat("/dev/null") }, // a character device
		Free:   func(string) (uint64, error) { return 100 << 30, nil },
		Now:    func() time.Time { return time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC) },
		Root:   true,
		Helper: func() (string, error) { return "", nil },
	}
}

var build = api.BuildInfo{Version: "1.0", Protocol: 3, Date: "2026-12-01T00:00:00Z"}

func healthy() Daemon {
	return Daemon{
		Info:    api.DaemonInfo{PID: 7, Mode: "user", Build: build, Paths: api.Paths{StateDir: "/s", CacheDir: "/c"}, StartedAt: time.Date(2026, 12, 3, 11, 0, 0, 0, time.UTC)},
		Config:  map[string]string{"vmm": "auto", "network.mode": "user", "default_image_name": "docker.io/library/debian:bookworm"},
		Kernels: []api.Kernel{{Name: "6.1.0", Version: "6.1.0-40-amd64", Default: true}},
		Images:  []api.Image{{Name: "docker.io/library/debian:bookworm"}},
	}
}

func find(checks []Check, name string) Check {
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	return Check{}
}

// without takes programs off the host's PATH.
func without(names ...string) func(*Host) {
	return func(h *Host) {
		found := h.Program
		h.Program = func(n string) (string, string, error) {
			for _, m := range names {
				if n == m {
					return "", "", errors.New("not found")
				}
			}
			return found(n)
		}
	}
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name   string
		host   func(*Host)
		daemon func(*Daemon)
		check  string
		status Status
		says   string // in the detail or the fix
	}{
		{"healthy", nil, nil, "kvm", OK, "native speed"},
		{"no /dev/kvm", func(h *Host) {
			h.KVM = func() error { return &fs.PathError{Op: "open", Path: "/dev/kvm", Err: fs.ErrNotExist} }
		}, nil, "kvm", Warn, "TCG"},
		{"tcg named", func(h *Host) { h.KVM = func() error { return fs.ErrNotExist } }, nil, "accelerator", OK, "tcg"},
		{"kvm closed", func(h *Host) { h.KVM = func() error { return fs.ErrPermission } }, nil, "kvm", Warn, "usermod -aG kvm"},
		{"PVM-only", func(h *Host) {
			h.KVM = func() error { return errors.New("no KVM: this host's KVM is PVM-only (kvm_pvm, no vmx/svm)") }
		}, nil, "kvm", Warn, "PVM-only"},
		{"no qemu", without("qemu-system-x86_64"), nil, "qemu", Fail, "apt-get install qemu-system-x86"},
		{"no firecracker", without("firecracker"), nil, "firecracker", OK, "QEMU"},
		{"firecracker without kvm", func(h *Host) { h.KVM = func() error { return fs.ErrNotExist } }, nil, "firecracker", Warn, "needs KVM"},
		{"no passt", without("passt"), nil, "passt", Warn, "apt-get install passt"},
		{"no tun", func(h *Host) { h.Stat = func(string) (fs.FileInfo, error) { return nil, fs.ErrNotExist } }, nil, "tun", Warn, "modprobe tun"},
		{"no tun, bridge mode", func(h *Host) { h.Stat = func(string) (fs.FileInfo, error) { return nil, fs.ErrNotExist } },
			func(d *Daemon) { d.Config["network.mode"] = "bridge" }, "tun", Fail, "modprobe tun"},
		{"not root, not installed", func(h *Host) { h.Root = false }, nil, "bridge network", Warn, "sudo banger system install"},
		{"installed", func(h *Host) { h.Root = false; h.Helper = func() (string, error) { return "/run/h.sock", nil } }, nil, "bridge network", OK, "/run/h.sock"},
		{"helper down", func(h *Host) {
			h.Helper = func() (string, error) { return "/run/h.sock", errors.New("connection refused") }
		}, nil, "bridge network", Fail, "systemctl restart banger-helper"},
		{"no daemon", nil, func(d *Daemon) { d.Err = errors.New("not running") }, "daemon", Fail, "banger daemon start"},
		{"an older daemon", nil, func(d *Daemon) { d.Info.Build.Version = "0.9" }, "daemon", Fail, "daemon stop"},
		{"a full disk", func(h *Host) { h.Free = func(p string) (uint64, error) { return 100 << 20, nil } }, nil, "state disk", Fail, "prune"},
		{"a tight disk", func(h *Host) { h.Free = func(p string) (uint64, error) { return 3 << 30, nil } }, nil, "cache disk", Warn, "3 GiB free"},
		{"no kernel", nil, func(d *Daemon) { d.Kernels = nil }, "kernel", Fail, "kernel import --debian"},
		{"no default kernel", nil, func(d *Daemon) { d.Kernels[0].Default = false }, "kernel", Fail, "kernel import"},
		{"no image", nil, func(d *Daemon) { d.Images = nil }, "default image", Warn, "image pull docker.io/library/debian:bookworm"},
		{"clock behind the build", func(h *Host) { h.Now = func() time.Time { return time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC) } }, nil, "clock", Fail, "set-ntp"},
		{"clock went back", func(h *Host) { h.Now = func() time.Time { return time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC) } }, nil, "clock", Fail, "went back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, d := host(), healthy()
			if tc.host != nil {
				tc.host(&h)
			}
			if tc.daemon != nil {
				tc.daemon(&d)
			}
			checks := Run(h, build, d)
			c := find(checks, tc.check)
			if c.Status != tc.status || !strings.Contains(c.Detail+" "+c.Fix, tc.says) {
				t.Fatalf("%s = %+v, want %s saying %q", tc.check, c, tc.status, tc.says)
			}
			if c.Status != OK && c.Fix == "" && tc.check != "accelerator" {
				t.Errorf("%s is %s without a fix", c.Name, c.Status)
			}
			if Failed(checks) != (tc.status == Fail) {
				t.Errorf("Failed = %v with %s", Failed(checks), fmt.Sprint(checks))
			}
		})
	}
}
