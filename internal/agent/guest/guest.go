//go:build linux

// Package guest is the guest agent running as PID 1 inside a VM: it
// prepares the machine (mounts, modules, the image root with the VM's
// writable disk stacked on it), then serves the agent protocol on its
// virtio-serial port or vsock, reaping every orphan the guest makes.
package guest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agent/proto"
)

// Names the host and the initramfs agree on.
const (
	ModulesList = "/banger/modules" // module files to load, in order, one per line
	defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Main runs PID 1. It never returns: on a fatal error it reports on the
// console and powers off, so the host sees the VM stop.
func Main() {
	g := &guest{start: time.Now()}
	if err := g.boot(); err != nil {
		fmt.Fprintf(os.Stderr, "banger-agent: FATAL: %v\n", err)
		time.Sleep(500 * time.Millisecond) // let the console drain
		powerOff()
	}
	g.serve()
}

type guest struct {
	start   time.Time
	timings []proto.Timing
	r       *reaper
}

func (g *guest) mark(phase string) {
	g.timings = append(g.timings, proto.Timing{Phase: phase, Seconds: uptime()})
	fmt.Fprintf(os.Stderr, "banger-agent: %s at %.3fs\n", phase, uptime())
}

func uptime() float64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

func mount(src, dst, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, dst, fstype, flags, data); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", fstype, dst, err)
	}
	return nil
}

func (g *guest) boot() error {
	os.Setenv("PATH", strings.TrimPrefix(defaultPath, "PATH="))
	for _, m := range []struct{ src, dst, fs string }{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}} {
		if err := mount(m.src, m.dst, m.fs, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return err
		}
	}
	g.mark("init started")
	if err := loadModules(ModulesList); err != nil {
		return err
	}
	g.mark("modules loaded")
	args := cmdline()
	root, err := waitForDisk(proto.RootSerial, 30*time.Second)
	if err != nil {
		return err
	}
	if err := mount(root, "/mnt/lower", "ext4", unix.MS_RDONLY, ""); err != nil {
		return err
	}
	upper := "/mnt/rw"
	if work, err := waitForDisk(proto.WorkSerial, 2*time.Second); err == nil {
		if err := mount(work, upper, "ext4", 0, ""); err != nil {
			return err
		}
	} else if err := mount("tmpfs", upper, "tmpfs", 0, "mode=0755"); err != nil {
		return err
	}
	for _, d := range []string{upper + "/upper", upper + "/work"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := mount("overlay", "/mnt/root", "overlay", 0, "lowerdir=/mnt/lower,upperdir="+upper+"/upper,workdir="+upper+"/work"); err != nil {
		return err
	}
	for _, d := range []string{"/proc", "/sys", "/dev"} {
		if err := os.MkdirAll("/mnt/root"+d, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(d, "/mnt/root"+d, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("moving %s: %w", d, err)
		}
	}
	if err := switchRoot("/mnt/root"); err != nil {
		return err
	}
	g.mark("root mounted")
	_ = mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
	_ = mount("tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
	_ = mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")
	if h := args["banger.hostname"]; h != "" {
		_ = unix.Sethostname([]byte(h))
	}
	g.r = newReaper()
	return nil
}

func switchRoot(newRoot string) error {
	if err := unix.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(newRoot, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switching root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switching root: %w", err)
	}
	return unix.Chdir("/")
}

func cmdline() map[string]string {
	b, _ := os.ReadFile("/proc/cmdline")
	out := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		k, v, _ := strings.Cut(f, "=")
		out[k] = v
	}
	return out
}

func loadModules(list string) error {
	f, err := os.Open(list)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a kernel with everything built in
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		path := strings.TrimSpace(sc.Text())
		if path == "" {
			continue
		}
		mf, err := os.Open(path)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(mf.Fd()), "", 0)
		mf.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("loading %s: %w", filepath.Base(path), err)
		}
	}
	return sc.Err()
}

// waitForDisk finds the virtio disk whose serial is serial.
func waitForDisk(serial string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		matches, _ := filepath.Glob("/sys/block/vd*/serial")
		for _, m := range matches {
			if b, err := os.ReadFile(m); err == nil && strings.TrimSpace(string(b)) == serial {
				return "/dev/" + filepath.Base(filepath.Dir(m)), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no disk with serial %s after %s", serial, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// findPort finds the virtio-serial port named name; its name arrives a
// moment after the driver binds.
func findPort(name string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		matches, _ := filepath.Glob("/sys/class/virtio-ports/vport*/name")
		for _, m := range matches {
			if b, err := os.ReadFile(m); err == nil && strings.TrimSpace(string(b)) == name {
				return "/dev/" + filepath.Base(filepath.Dir(m)), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio port named %s after %s", name, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (g *guest) serve() {
	port, err := findPort(proto.PortName, 30*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "banger-agent: FATAL: %v\n", err)
		powerOff()
	}
	g.mark("agent ready")
	srv := &agent.Server{
		Spawn: g.r.spawn,
		Ping:  func() proto.PingResult { return proto.PingResult{Uptime: uptime()} },
		Info: func() proto.InfoResult {
			var u unix.Utsname
			_ = unix.Uname(&u)
			h, _ := os.Hostname()
			return proto.InfoResult{Kernel: unix.ByteSliceToString(u.Release[:]), Hostname: h, Timings: g.timings}
		},
		Shutdown: func() {
			go func() {
				time.Sleep(100 * time.Millisecond) // let the answer leave
				powerOff()
			}()
		},
	}
	for {
		f, err := os.OpenFile(port, os.O_RDWR, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "banger-agent: opening %s: %v\n", port, err)
			time.Sleep(time.Second)
			continue
		}
		// The host end may come and go (daemon restarts); serve each time.
		_ = srv.Serve(f)
		f.Close()
	}
}

// powerOff stops the VM: a reboot that the VMM turns into an exit
// (QEMU -no-reboot, Firecracker), with every file system synced first.
func powerOff() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}

// reaper waits for every child of PID 1: those exec started (their
// status goes to the caller) and orphans (discarded).
type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
	early   map[int]syscall.WaitStatus
}

func newReaper() *reaper {
	r := &reaper{waiters: map[int]chan syscall.WaitStatus{}, early: map[int]syscall.WaitStatus{}}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		for range sigs {
			r.reap()
		}
	}()
	return r
}

func (r *reaper) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		r.mu.Lock()
		if ch, ok := r.waiters[pid]; ok {
			ch <- ws
			delete(r.waiters, pid)
		} else {
			r.early[pid] = ws
		}
		r.mu.Unlock()
	}
}

func (r *reaper) spawn(p proto.ExecParams, stdin, stdout, stderr *os.File) (func() proto.ExecResult, error) {
	if len(p.Args) == 0 {
		return nil, errors.New("no command")
	}
	env := p.Env
	if len(env) == 0 {
		env = []string{defaultPath, "HOME=/root", "TERM=xterm"}
	}
	path := p.Args[0]
	if !strings.Contains(path, "/") {
		found, err := lookPath(path, env)
		if err != nil {
			return nil, err
		}
		path = found
	}
	dir := p.Dir
	if dir == "" {
		dir = "/"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	proc, err := os.StartProcess(path, p.Args, &os.ProcAttr{Dir: dir, Env: env, Files: []*os.File{stdin, stdout, stderr},
		Sys: &syscall.SysProcAttr{Setsid: true}})
	if err != nil {
		return nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	if ws, ok := r.early[proc.Pid]; ok {
		ch <- ws
		delete(r.early, proc.Pid)
	} else {
		r.waiters[proc.Pid] = ch
	}
	_ = proc.Release()
	return func() proto.ExecResult { return agent.ExitResult(<-ch) }, nil
}

func lookPath(name string, env []string) (string, error) {
	path := strings.TrimPrefix(defaultPath, "PATH=")
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH %s", name, path)
}
