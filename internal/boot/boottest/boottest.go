// Package boottest prepares what booting a real VM needs, for the VM
// tests and the boot benchmark: the guest agent built from this tree, the
// Debian kernel package of the test cache imported by the kernel service,
// banger's initramfs, and root file systems flattened by banger.
package boottest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/rootfs"
	"github.com/bangerdev/banger/internal/store"
)

// Env is a prepared set of boot artifacts under Dir.
type Env struct {
	Dir     string
	Kernel  api.Kernel // its bundle: the modules disk is built from it
	Vmlinux string
	Initrd  string
	Images  map[string]string // debian, busybox, no-shell, garbage -> rootfs image
}

// CacheDir is the test cache of scripts/testimages.sh.
func CacheDir() string {
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/banger-test"
}

// Setup builds everything under a new temporary directory (about 15 s).
func Setup() (*Env, error) {
	dir, err := os.MkdirTemp("", "vmtest-")
	if err != nil {
		return nil, err
	}
	e := &Env{Dir: dir, Images: map[string]string{}}
	ctx := context.Background()

	// The guest agent, static and stripped as make build makes it: every
	// byte of it is copied into each guest at boot.
	agentBin := filepath.Join(dir, "banger-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", agentBin, "github.com/bangerdev/banger/cmd/banger-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the agent: %v\n%s", err, out)
	}

	// The kernel, imported from Debian's package by the kernel service.
	debs, _ := filepath.Glob(filepath.Join(CacheDir(), "linux-image-*.deb"))
	if len(debs) == 0 {
		return nil, fmt.Errorf("no kernel package in %s; run scripts/testimages.sh", CacheDir())
	}
	st, err := store.Open(ctx, filepath.Join(dir, "banger.db"))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	ks, err := kernel.New(kernel.Config{Store: st, Dir: filepath.Join(dir, "kernels"), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	op, err := ks.Import(ctx, api.KernelImportParams{Deb: debs[0]})
	if err != nil {
		return nil, err
	}
	<-op.Done()
	k, err := op.Result()
	if err != nil {
		return nil, err
	}
	e.Kernel, e.Vmlinux = k, bundle.Vmlinux(k.Dir)
	agentBytes, err := os.ReadFile(agentBin)
	if err != nil {
		return nil, err
	}
	ir, err := boot.Initramfs(k.Dir, agentBytes)
	if err != nil {
		return nil, err
	}
	e.Initrd = filepath.Join(dir, "initrd.cpio")
	if err := os.WriteFile(e.Initrd, ir, 0o644); err != nil {
		return nil, err
	}

	// Root file systems.
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox-static: %w", err)
	}
	busybox := tarOf(map[string][]byte{"bin/busybox": bb}, map[string]string{"bin/sh": "busybox", "bin/echo": "busybox", "bin/cat": "busybox", "bin/uname": "busybox"})
	noShell := tarOf(map[string][]byte{"busybox": bb}, nil) // one static binary: no shell in PATH, no /bin
	layers := map[string]rootfs.Layer{
		"busybox":  memLayer(busybox),
		"no-shell": memLayer(noShell),
		"debian":   rootfs.GzipFile("debian", filepath.Join(CacheDir(), "debian-bookworm-minbase.tar.gz")),
		// systemd as /sbin/init, kmod and Docker.
		"systemd": rootfs.GzipFile("systemd", filepath.Join(CacheDir(), "debian-bookworm-systemd.tar.gz")),
	}
	for name, l := range layers {
		p := filepath.Join(dir, name+".ext4")
		f, err := os.Create(p)
		if err != nil {
			return nil, err
		}
		_, err = rootfs.Build(ctx, []rootfs.Layer{l}, f, rootfs.DefaultLimits())
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("building %s: %w", name, err)
		}
		e.Images[name] = p
	}
	garbage := filepath.Join(dir, "garbage.ext4")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a file system "), 10000), 0o644); err != nil {
		return nil, err
	}
	e.Images["garbage"] = garbage
	return e, nil
}

func tarOf(files map[string][]byte, symlinks map[string]string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, data := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	for name, target := range symlinks {
		tw.WriteHeader(&tar.Header{Name: name, Linkname: target, Typeflag: tar.TypeSymlink, Mode: 0o777})
	}
	tw.Close()
	return b.Bytes()
}

func memLayer(b []byte) rootfs.Layer {
	return rootfs.Layer{Name: "test", Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
}
