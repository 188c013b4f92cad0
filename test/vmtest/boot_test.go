// Package vmtest boots real VMs under QEMU: the Debian kernel package
// imported as banger imports it, the initramfs banger builds, the guest
// agent as PID 1, root file systems flattened by banger. The tests need
// root, QEMU and the test cache of scripts/testimages.sh; they run when
// BANGER_VM_TESTS=1 (make test sets it), and fail rather than skip then.
package vmtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/boot/boottest"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/firecracker"
	"github.com/bangerdev/banger/internal/vmm/qemu"
)

var shared *boottest.Env // set up once by TestMain, read-only afterwards

func TestMain(m *testing.M) {
	if os.Getenv("BANGER_VM_TESTS") != "1" {
		fmt.Println("vmtest: skipped; set BANGER_VM_TESTS=1 to boot VMs (make test does)")
		os.Exit(0)
	}
	e, err := boottest.Setup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest: setting up: %v\n", err)
		os.Exit(1)
	}
	shared = e
	code := m.Run()
	os.RemoveAll(e.Dir)
	os.Exit(code)
}

// vm is one booted guest.
type vm struct {
	in      vmm.Instance
	done    <-chan struct{} // closed once QEMU exited; in.ExitState() says how
	client  *client.Client
	console string
	work    string // the work disk
	spec    vmm.Spec
	started time.Time
	ready   time.Duration
}

// state is how QEMU exited, once done is closed.
func (v *vm) state() *os.ProcessState { return v.in.ExitState() }

// start boots kernelPath with the rootfs image and waits for the agent;
// it fails the test if the agent does not answer. Cleanup kills QEMU if
// it still runs and checks that nothing is left.
func start(t *testing.T, kernelPath, image string, wantAgent bool) *vm {
	t.Helper()
	return startVM(t, opts{kernel: kernelPath, image: image, wantAgent: wantAgent, params: proto.BootParams{Hostname: "vmtest"}})
}

// opts describe a test VM.
type opts struct {
	kernel, image string
	wantAgent     bool
	params        proto.BootParams
	nic           *vmm.NIC
	disks         []vmm.Disk // after the image and the work disk
}

func startVM(t *testing.T, o opts) *vm {
	t.Helper()
	kernelPath, image, wantAgent := o.kernel, o.image, o.wantAgent
	dir := t.TempDir()
	work := filepath.Join(dir, "work.ext4")
	if err := boot.WorkDisk(context.Background(), work, 1<<30); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	spec := vmm.Spec{
		Kernel: kernelPath, Initrd: shared.Initrd,
		Cmdline: boot.Cmdline(o.params, true), NIC: o.nic,
		MemoryMiB: 512, VCPU: 1, Dir: dir,
		Disks: append([]vmm.Disk{{Path: image, ReadOnly: true, Serial: proto.RootSerial}, {Path: work, Serial: proto.WorkSerial}}, o.disks...),
	}
	in, err := (&qemu.Driver{}).Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	v := &vm{in: in, done: in.Done(), console: in.ConsoleLog(), work: work, spec: spec, started: started}
	t.Cleanup(func() {
		if v.client != nil {
			v.client.Close()
		}
		select {
		case <-v.done:
		default:
			_ = in.Process().Kill()
			<-v.done
		}
		if syscall.Kill(in.Process().Pid, 0) == nil {
			t.Errorf("QEMU (pid %d) still running", in.Process().Pid)
		}
		if t.Failed() {
			log, _ := os.ReadFile(in.ConsoleLog())
			qlog, _ := os.ReadFile(in.VMMLog())
			t.Logf("console:\n%s\nqemu:\n%s", boot.Tail(log, 40), qlog)
		}
	})
	if !wantAgent {
		return v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v.client, err = boot.WaitAgent(ctx, in.DialAgent, v.done)
	if err != nil {
		t.Fatalf("%v (QEMU: %v)", err, v.state())
	}
	v.ready = time.Since(v.started)
	return v
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
		if !v.state().Success() {
			t.Fatalf("QEMU exited with %v after a clean shutdown", v.state())
		}
	case <-time.After(time.Minute):
		t.Fatal("the VM did not power off")
	}
}

func TestBootDebian(t *testing.T) {
	v := start(t, shared.Vmlinux, shared.Images["debian"], true)
	out, code := v.exec(t, "uname", "-a")
	if code != 0 || !strings.Contains(out, "Linux vmtest 6.1") {
		t.Fatalf("uname -a = %q (exit %d)", out, code)
	}
	out, code = v.exec(t, "sh", "-c", "git --version && cat /etc/debian_version && echo written > /root/f && cat /root/f")
	if code != 0 || !strings.Contains(out, "git version") || !strings.Contains(out, "written") {
		t.Fatalf("git in the Debian image = %q (exit %d)", out, code)
	}
	// Files travel both ways through the agent.
	ctx := context.Background()
	if _, err := v.client.WriteFile(ctx, "/root/from-host", 0o600, strings.NewReader("hello guest\n")); err != nil {
		t.Fatal(err)
	}
	if out, code := v.exec(t, "stat", "-c", "%a %s", "/root/from-host"); code != 0 || out != "600 12\n" {
		t.Fatalf("stat of the written file = %q (exit %d)", out, code)
	}
	var release bytes.Buffer
	if _, err := v.client.ReadFile(ctx, "/usr/lib/os-release", &release); err != nil || !strings.Contains(release.String(), "bookworm") {
		t.Fatalf("ReadFile os-release = %q, %v", release.String(), err)
	}
	var info proto.InfoResult
	if err := v.client.Call(context.Background(), proto.MethodInfo, nil, &info); err != nil {
		t.Fatal(err)
	}
	t.Logf("agent ready %s after QEMU started; guest clock: %+v", v.ready.Round(time.Millisecond), info.Timings)
	// A background writer must not keep the disk dirty: the agent ends
	// every process and remounts read-only before powering off.
	if out, code := v.exec(t, "sh", "-c", "(while :; do date >> /root/busy; sleep 0.1; done) >/dev/null 2>&1 & echo started"); code != 0 {
		t.Fatalf("starting a writer: %q (exit %d)", out, code)
	}
	v.shutdown(t)
	sb, err := exec.Command("dumpe2fs", "-h", v.work).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs: %v\n%s", err, sb)
	}
	if !strings.Contains(string(sb), "Filesystem state:         clean") || strings.Contains(string(sb), "needs_recovery") {
		t.Fatalf("the work disk was not left clean by the power-off:\n%s", sb)
	}
}

func TestBootBusybox(t *testing.T) {
	v := start(t, shared.Vmlinux, shared.Images["busybox"], true)
	out, code := v.exec(t, "sh", "-c", "echo hello from $(uname -n); exit 7")
	if code != 7 || out != "hello from vmtest\n" {
		t.Fatalf("busybox sh = %q (exit %d)", out, code)
	}
	// cgroup2, its controllers delegated, for container runtimes.
	out, code = v.exec(t, "sh", "-c", "grep ' /sys/fs/cgroup ' /proc/mounts; cat /sys/fs/cgroup/cgroup.subtree_control; "+
		"mkdir /sys/fs/cgroup/t && echo $$ > /sys/fs/cgroup/t/cgroup.procs && echo 20M > /sys/fs/cgroup/t/memory.max && cat /sys/fs/cgroup/t/memory.max")
	if code != 0 || !strings.Contains(out, "cgroup2 /sys/fs/cgroup cgroup2") {
		t.Fatalf("cgroup2 = %q (exit %d)", out, code)
	}
	for _, c := range []string{"cpu", "memory", "pids", "io"} {
		if !strings.Contains(out, c) {
			t.Fatalf("controller %s not delegated: %q", c, out)
		}
	}
	if !strings.HasSuffix(out, "20971520\n") {
		t.Fatalf("a child group's memory limit: %q", out)
	}
	v.shutdown(t)
}

// TestModprobe: with its kernel's modules disk the guest loads modules
// the initramfs did not carry, dependencies and all (busybox's modprobe,
// from the disk's depmod indexes); the tree is read-only.
func TestModprobe(t *testing.T) {
	// Built as the daemon builds it: under its umask (what it makes is
	// its own alone), by a depmod confined to nobody when root.
	old := syscall.Umask(0o077)
	mods, err := boot.ModulesDisk(context.Background(), shared.Kernel.Dir, shared.Kernel.Version)
	syscall.Umask(old)
	if err != nil || mods == "" {
		t.Fatalf("the modules disk: %q, %v", mods, err)
	}
	v := startVM(t, opts{kernel: shared.Vmlinux, image: shared.Images["busybox"], wantAgent: true,
		params: proto.BootParams{Hostname: "vmtest"}, disks: []vmm.Disk{{Path: mods, ReadOnly: true, Serial: proto.ModulesSerial}}})
	mods5 := "br_netfilter nf_tables veth bridge"
	out, code := v.exec(t, "sh", "-c", "for m in "+mods5+"; do busybox modprobe $m || exit 1; done; cat /proc/modules | cut -d' ' -f1; "+
		"touch /lib/modules/$(uname -r)/x 2>&1 || true")
	if code != 0 {
		t.Fatalf("modprobe: %q (exit %d)", out, code)
	}
	for _, m := range append(strings.Fields(mods5), "stp", "llc") {
		if !strings.Contains(out, m+"\n") {
			t.Fatalf("%s is not loaded:\n%s", m, out)
		}
	}
	if !strings.Contains(out, "Read-only file system") {
		t.Fatalf("the module tree is writable:\n%s", out)
	}
}

// An image without a shell, an init or /bin still boots: the agent needs
// none of them.
func TestBootImageWithoutShell(t *testing.T) {
	v := start(t, shared.Vmlinux, shared.Images["no-shell"], true)
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
	v := start(t, shared.Vmlinux, shared.Images["garbage"], false)
	select {
	case <-v.done:
	case <-time.After(3 * time.Minute):
		t.Fatal("a VM with a broken rootfs kept running")
	}
	log, _ := os.ReadFile(v.console)
	if !strings.Contains(string(log), "banger-agent: FATAL: mounting ext4 on /mnt/lower") {
		t.Fatalf("console does not say why:\n%s", boot.Tail(log, 20))
	}
}

// A kernel QEMU cannot boot ends QEMU at once.
func TestBrokenKernelFails(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(bad, []byte("\x7fELF but not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	v := start(t, bad, shared.Images["busybox"], false)
	select {
	case <-v.done:
		if v.state().Success() {
			t.Fatal("QEMU succeeded with a broken kernel")
		}
	case <-time.After(time.Minute):
		t.Fatal("QEMU kept running with a broken kernel")
	}
}

// TestDriverConformance runs the same boot against every VMM driver: the
// agent answers through the driver's transport, exec works, the guest
// powers off and the VMM process ends. A driver that cannot run here
// (Firecracker without a usable KVM) is skipped with its reason; QEMU
// must run.
func TestDriverConformance(t *testing.T) {
	for _, d := range []vmm.Driver{&qemu.Driver{}, &firecracker.Driver{}} {
		t.Run(d.Name(), func(t *testing.T) {
			if err := d.Available(); err != nil {
				if d.Name() == "qemu" {
					t.Fatalf("QEMU must be available: %v", err)
				}
				t.Skipf("cannot run here: %v", err)
			}
			dir := t.TempDir()
			work := filepath.Join(dir, "work.ext4")
			if err := boot.WorkDisk(context.Background(), work, 256<<20); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			in, err := d.Start(ctx, vmm.Spec{
				Kernel: shared.Vmlinux, Initrd: shared.Initrd, Cmdline: boot.Cmdline(proto.BootParams{Hostname: "conformance"}, true),
				MemoryMiB: 256, VCPU: 1, Dir: dir,
				Disks: []vmm.Disk{{Path: shared.Images["busybox"], ReadOnly: true, Serial: proto.RootSerial}, {Path: work, Serial: proto.WorkSerial}},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				select {
				case <-in.Done():
				default:
					in.Process().Kill()
					<-in.Done()
				}
			})
			if id := in.ID(); id.PID != in.Process().Pid || !id.Alive() {
				t.Fatalf("instance ID %+v does not name the running VMM (pid %d)", id, in.Process().Pid)
			}
			c, err := boot.WaitAgent(ctx, in.DialAgent, in.Done())
			if err != nil {
				log, _ := os.ReadFile(in.ConsoleLog())
				t.Fatalf("%v\nconsole:\n%s", err, boot.Tail(log, 30))
			}
			defer c.Close()
			var out bytes.Buffer
			r, err := c.Exec(ctx, proto.ExecParams{Args: []string{"uname", "-n"}}, nil, &out, &out)
			if err != nil || r.ExitCode != 0 || out.String() != "conformance\n" {
				t.Fatalf("exec = %+v %q, %v", r, out.String(), err)
			}
			if err := c.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case <-in.Done():
			case <-ctx.Done():
				t.Fatal("the VMM did not exit after the guest powered off")
			}
			if in.ID().Alive() {
				t.Fatal("the VMM's ID still names a live process after it exited")
			}
		})
	}
}

// TestSystemdInit: told to, the agent hands PID 1 to the image's systemd
// and serves as its service (exec, the banger hostname), and a power-off
// goes through systemd and back to the agent, which leaves the work
// disk clean.
func TestSystemdInit(t *testing.T) {
	v := startVM(t, opts{kernel: shared.Vmlinux, image: shared.Images["systemd"], wantAgent: true,
		params: proto.BootParams{Hostname: "vmtest", Init: "/sbin/init"}})
	out, code := v.exec(t, "sh", "-c", "cat /proc/1/comm; systemctl is-system-running --wait; hostname; cat /proc/self/cgroup; "+
		"systemd-run --wait --quiet -p MemoryMax=32M sh -c 'cat /proc/self/cgroup > /run/unit-cgroup' && cat /run/unit-cgroup; "+
		"echo writing > /root/f")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) < 5 {
		t.Fatalf("exec under systemd: %q (exit %d)", out, code)
	}
	if lines[0] != "systemd" {
		t.Fatalf("PID 1 is %q, not systemd", lines[0])
	}
	if lines[1] != "running" && lines[1] != "degraded" {
		t.Fatalf("systemctl is-system-running = %q", lines[1])
	}
	if lines[2] != "vmtest" {
		t.Fatalf("hostname %q: not banger's", lines[2])
	}
	if !strings.Contains(lines[3], "banger-agent.service") {
		t.Fatalf("exec's process is not in the agent's unit: %q", lines[3])
	}
	if !strings.Contains(lines[4], ".service") || strings.Contains(lines[4], "banger-agent") {
		t.Fatalf("a transient unit's cgroup: %q", lines[4])
	}
	info := v.info(t)
	var handed, ready bool
	for _, p := range info.Timings {
		handed = handed || p.Phase == "init handed over"
		ready = ready || p.Phase == "agent ready"
	}
	if !handed || !ready {
		t.Fatalf("timings %+v lack the hand-over or the agent ready", info.Timings)
	}
	t.Logf("agent ready %s after QEMU started; guest clock: %+v", v.ready.Round(time.Millisecond), info.Timings)
	// The agent is systemd's to keep: killed, it is started again and
	// the host reaches it as before.
	if out, code := v.exec(t, "sh", "-c", "pid=$(systemctl show -p MainPID --value banger-agent); "+
		"(sleep 1; kill -9 $pid) </dev/null >/dev/null 2>&1 & echo $pid"); code != 0 {
		t.Fatalf("arranging the agent's end: %q (exit %d)", out, code)
	}
	v.client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		c, err := boot.WaitAgent(ctx, v.in.DialAgent, v.done)
		if err != nil {
			t.Fatalf("the agent did not come back: %v", err)
		}
		v.client = c
		// The old agent may still answer (its kill waits on a second that
		// is long under load), and die mid-call: each ask is bounded, or
		// one call to the dead agent would spend the whole wait.
		var r proto.InfoResult
		ictx, icancel := context.WithTimeout(ctx, 10*time.Second)
		err = c.Call(ictx, proto.MethodInfo, nil, &r)
		icancel()
		if err == nil && len(r.Timings) > 0 && r.Timings[len(r.Timings)-1].Seconds > info.Timings[len(info.Timings)-1].Seconds {
			break // a new agent: its ready is later
		}
		c.Close()
		time.Sleep(200 * time.Millisecond)
	}
	if out, code := v.exec(t, "systemctl", "show", "-p", "NRestarts", "--value", "banger-agent"); code != 0 || strings.TrimSpace(out) != "1" {
		t.Fatalf("the agent's restarts: %q (exit %d)", out, code)
	}
	v.shutdown(t)
	log, _ := os.ReadFile(v.console)
	if !strings.Contains(string(log), "systemd-shutdown") || !strings.Contains(string(log), "banger-agent: poweroff: file systems read-only") {
		t.Fatalf("the power-off did not go through systemd and back to the agent:\n%s", boot.Tail(log, 30))
	}
	sb, err := exec.Command("dumpe2fs", "-h", v.work).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs: %v\n%s", err, sb)
	}
	if !strings.Contains(string(sb), "Filesystem state:         clean") || strings.Contains(string(sb), "needs_recovery") {
		t.Fatalf("the work disk was not left clean by systemd's power-off:\n%s", sb)
	}
}
