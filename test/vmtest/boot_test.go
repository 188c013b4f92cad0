// Package vmtest boots real VMs under QEMU: the Debian kernel package
// imported as banger imports it, the initramfs banger builds, the guest
// agent as PID 1, root file systems flattened by banger. The tests need
// root, QEMU and the test cache of scripts/testimages.sh; they run when
// BANGER_VM_TESTS=1 (make test sets it), and fail rather than skip then.
package vmtest

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/initramfs"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/kmod"
	"github.com/bangerdev/banger/internal/rootfs"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm/qemu"
)

// env is what every boot shares, built once.
type env struct {
	dir     string
	vmlinux string
	initrd  string
	images  map[string]string // name -> rootfs.ext4
}

var shared *env // set up once by TestMain, read-only afterwards

func TestMain(m *testing.M) {
	if os.Getenv("BANGER_VM_TESTS") != "1" {
		fmt.Println("vmtest: skipped; set BANGER_VM_TESTS=1 to boot VMs (make test does)")
		os.Exit(0)
	}
	e, err := setup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: setting up: %v\n", err)
		os.Exit(1)
	}
	shared = e
	code := m.Run()
	os.RemoveAll(e.dir)
	os.Exit(code)
}

func cacheDir() string {
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/banger-test"
}

func setup() (*env, error) {
	dir, err := os.MkdirTemp("", "vmtest-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir, images: map[string]string{}}
	ctx := context.Background()

	// The guest agent, static.
	agentBin := filepath.Join(dir, "banger-agent")
	build := exec.Command("go", "build", "-o", agentBin, "github.com/bangerdev/banger/cmd/banger-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the agent: %v\n%s", err, out)
	}

	// The kernel, imported from Debian's package by the kernel service.
	debs, _ := filepath.Glob(filepath.Join(cacheDir(), "linux-image-*.deb"))
	if len(debs) == 0 {
		return nil, fmt.Errorf("no kernel package in %s; run scripts/testimages.sh", cacheDir())
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
	e.vmlinux = filepath.Join(k.Dir, kernel.FileVmlinux)
	idx, err := kmod.Load(filepath.Join(k.Dir, kernel.DirModules))
	if err != nil {
		return nil, err
	}
	mods, err := idx.Resolve(kernel.GuestModules()...)
	if err != nil {
		return nil, err
	}
	agentBytes, err := os.ReadFile(agentBin)
	if err != nil {
		return nil, err
	}
	var ir bytes.Buffer
	if err := initramfs.Build(&ir, agentBytes, filepath.Join(k.Dir, kernel.DirModules), mods); err != nil {
		return nil, err
	}
	e.initrd = filepath.Join(dir, "initrd.cpio")
	if err := os.WriteFile(e.initrd, ir.Bytes(), 0o644); err != nil {
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
		"debian": {Name: "debian", Open: func() (io.ReadCloser, error) {
			f, err := os.Open(filepath.Join(cacheDir(), "debian-bookworm-minbase.tar.gz"))
			if err != nil {
				return nil, err
			}
			gz, err := gzip.NewReader(f)
			if err != nil {
				return nil, err
			}
			return struct {
				io.Reader
				io.Closer
			}{gz, f}, nil
		}},
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
		e.images[name] = p
	}
	garbage := filepath.Join(dir, "garbage.ext4")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a file system "), 10000), 0o644); err != nil {
		return nil, err
	}
	e.images["garbage"] = garbage
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

// vm is one booted guest.
type vm struct {
	proc    *os.Process
	done    chan struct{} // closed once QEMU exited; state holds how
	state   *os.ProcessState
	client  *agent.Client
	console string
	started time.Time
	ready   time.Duration
}

// start boots kernelPath with the rootfs image and waits for the agent;
// it fails the test if the agent does not answer. Cleanup kills QEMU if
// it still runs and checks that nothing is left.
func start(t *testing.T, kernelPath, image string, wantAgent bool) *vm {
	t.Helper()
	dir := t.TempDir()
	work := filepath.Join(dir, "work.ext4")
	if err := os.Truncate(createFile(t, work), 1<<30); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", work).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "agent.sock")
	spec := qemu.Spec{
		Kernel: kernelPath, Initrd: shared.initrd,
		Cmdline:   fmt.Sprintf("console=ttyS0 reboot=t panic=-1 tsc_early_khz=%d banger.hostname=vmtest", qemu.TSCkHz()),
		MemoryMiB: 512, VCPU: 1, Accel: "tcg",
		Disks:       []qemu.Disk{{Path: image, ReadOnly: true, Serial: "banger-root"}, {Path: work, Serial: "banger-work"}},
		AgentSocket: sock, ConsoleLog: filepath.Join(dir, "console.log"),
	}
	errLog, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	v := &vm{console: spec.ConsoleLog, started: time.Now(), done: make(chan struct{})}
	v.proc, err = qemu.Start("qemu-system-x86_64", spec, errLog)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		v.state, _ = v.proc.Wait()
		close(v.done)
	}()
	t.Cleanup(func() {
		if v.client != nil {
			v.client.Close()
		}
		select {
		case <-v.done:
		default:
			v.proc.Kill()
			<-v.done
		}
		if syscall.Kill(v.proc.Pid, 0) == nil {
			t.Errorf("QEMU (pid %d) still running", v.proc.Pid)
		}
		if t.Failed() {
			log, _ := os.ReadFile(spec.ConsoleLog)
			qlog, _ := os.ReadFile(errLog.Name())
			t.Logf("console:\n%s\nqemu:\n%s", tail(log, 40), qlog)
		}
	})
	if !wantAgent {
		return v
	}
	deadline := time.Now().Add(3 * time.Minute)
	var conn net.Conn
	for conn == nil {
		c, err := net.Dial("unix", sock)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-v.done:
			t.Fatalf("QEMU exited before its agent socket appeared: %v", v.state)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no agent socket")
		}
	}
	v.client = agent.NewClient(conn)
	// The port is open before the guest is: ping until the agent answers.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := v.client.Ping(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-v.done:
			t.Fatalf("the VM stopped before its agent answered: %v", v.state)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready after 3 minutes: %v", err)
		}
	}
	v.ready = time.Since(v.started)
	return v
}

func createFile(t *testing.T, p string) string {
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func tail(b []byte, lines int) string {
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

func (v *vm) exec(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	r, err := v.client.Exec(ctx, proto.ExecParams{Args: args}, nil, &out, &out)
	if err != nil {
		t.Fatalf("exec %v: %v", args, err)
	}
	return out.String(), r.ExitCode
}

func (v *vm) shutdown(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := v.client.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case <-v.done:
		if !v.state.Success() {
			t.Fatalf("QEMU exited with %v after a clean shutdown", v.state)
		}
	case <-time.After(time.Minute):
		t.Fatal("the VM did not power off")
	}
}

func TestBootDebian(t *testing.T) {
	v := start(t, shared.vmlinux, shared.images["debian"], true)
	out, code := v.exec(t, "uname", "-a")
	if code != 0 || !strings.Contains(out, "Linux vmtest 6.1") {
		t.Fatalf("uname -a = %q (exit %d)", out, code)
	}
	out, code = v.exec(t, "sh", "-c", "git --version && cat /etc/debian_version && echo written > /root/f && cat /root/f")
	if code != 0 || !strings.Contains(out, "git version") || !strings.Contains(out, "written") {
		t.Fatalf("git in the Debian image = %q (exit %d)", out, code)
	}
	var info proto.InfoResult
	if err := v.client.Call(context.Background(), proto.MethodInfo, nil, &info); err != nil {
		t.Fatal(err)
	}
	t.Logf("agent ready %s after QEMU started; guest clock: %+v", v.ready.Round(time.Millisecond), info.Timings)
	v.shutdown(t)
}

func TestBootBusybox(t *testing.T) {
	v := start(t, shared.vmlinux, shared.images["busybox"], true)
	out, code := v.exec(t, "sh", "-c", "echo hello from $(uname -n); exit 7")
	if code != 7 || out != "hello from vmtest\n" {
		t.Fatalf("busybox sh = %q (exit %d)", out, code)
	}
	v.shutdown(t)
}

// An image without a shell, an init or /bin still boots: the agent needs
// none of them.
func TestBootImageWithoutShell(t *testing.T) {
	v := start(t, shared.vmlinux, shared.images["no-shell"], true)
	out, code := v.exec(t, "/busybox", "echo", "no shell needed")
	if code != 0 || out != "no shell needed\n" {
		t.Fatalf("exec = %q (exit %d)", out, code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := v.client.Exec(ctx, proto.ExecParams{Args: []string{"sh"}}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("exec sh in an image without one = %v", err)
	}
	v.shutdown(t)
}

// A root file system that is not one stops the VM with the reason on the
// console, and leaves no process behind (checked by cleanup).
func TestBrokenImagePowersOff(t *testing.T) {
	v := start(t, shared.vmlinux, shared.images["garbage"], false)
	select {
	case <-v.done:
	case <-time.After(3 * time.Minute):
		t.Fatal("a VM with a broken rootfs kept running")
	}
	log, _ := os.ReadFile(v.console)
	if !strings.Contains(string(log), "banger-agent: FATAL: mounting ext4 on /mnt/lower") {
		t.Fatalf("console does not say why:\n%s", tail(log, 20))
	}
}

// A kernel QEMU cannot boot ends QEMU at once.
func TestBrokenKernelFails(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(bad, []byte("\x7fELF but not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	v := start(t, bad, shared.images["busybox"], false)
	select {
	case <-v.done:
		if v.state.Success() {
			t.Fatal("QEMU succeeded with a broken kernel")
		}
	case <-time.After(time.Minute):
		t.Fatal("QEMU kept running with a broken kernel")
	}
}
