//go:build linux

// Package guest is the guest agent running as PID 1 inside a VM: it
// prepares the machine (mounts, modules, the image root with the VM's
// writable disk stacked on it), then serves the agent protocol on its
// virtio-serial port or vsock, reaping every orphan the guest makes.
package guest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/link"
	"github.com/bangerdev/banger/internal/agent/procfs"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/server"
	"github.com/bangerdev/banger/internal/agent/spawn"
	"github.com/bangerdev/banger/internal/agent/sshd"
	"github.com/bangerdev/banger/internal/sshkey"
	"github.com/bangerdev/banger/internal/version"
)

// Names the host and the initramfs agree on.
const (
	ModulesList = "/banger/modules"       // module files to load, in order, one per line
	LaterList   = "/banger/modules.later" // loaded once serving, or at boot for a vsock device
)

// VsockPing dials the agent over vsock at cid (1 is the guest itself,
// through vsock loopback) and pings it: a check of the agent's vsock
// listener run from inside the guest, as `/proc/1/exe vsock-ping`.
func VsockPing(cid uint32) error {
	// Right after boot vsock and the listener may still be coming up.
	deadline := time.Now().Add(10 * time.Second)
	var fd int
	for {
		var err error
		fd, err = unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			if err = unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: proto.VsockPort}); err == nil {
				break
			}
			unix.Close(fd)
		}
		retry := err == unix.EAFNOSUPPORT || err == unix.ECONNRESET || err == unix.ECONNREFUSED
		if !retry || time.Now().After(deadline) {
			return fmt.Errorf("connecting to vsock %d:%d: %w", cid, proto.VsockPort, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The link itself, not the host's client: guest code links no host
	// code.
	l := link.New(os.NewFile(uintptr(fd), "vsock"))
	go l.Run(nil)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r proto.PingResult
	ch, err := l.Open(1)
	if err == nil {
		err = l.Call(ctx, 1, ch, proto.MethodPing, nil, &r)
	}
	if err != nil {
		return fmt.Errorf("pinging the agent over vsock: %w", err)
	}
	fmt.Printf("agent answered over vsock %d:%d, guest uptime %.2fs\n", cid, proto.VsockPort, r.Uptime)
	return nil
}

// Main runs PID 1. It never returns: on a fatal error it reports on the
// console and powers off, so the host sees the VM stop.
func Main() {
	g := &guest{start: time.Now(), sshReady: make(chan struct{})}
	if err := g.boot(); err != nil {
		g.fatal(err)
	}
	if g.params.Init != "" {
		// On success this never returns: the image's init is PID 1 now.
		err := g.handOver()
		fmt.Fprintf(os.Stderr, "banger-agent: handing PID 1 to %s: %v; the agent stays init\n", g.params.Init, err)
	}
	g.fatal(g.serve())
}

type guest struct {
	start   time.Time
	timings []proto.Timing
	r       *reaper
	params  proto.BootParams
	addrs   []string        // configured by bringUpNetwork
	later   []*os.File      // modules to load once serving
	virtio  map[string]bool // IDs of the VM's virtio devices
	workFD  int             // O_PATH of the work disk's mount; 0: none
	// service: the agent runs as a service of the image's init, not as
	// PID 1: it asks that init to power off, and leaves orphans to it.
	service bool

	// sshReady is closed once the SSH server started (or could not);
	// mu guards what identify changes after that.
	sshReady  chan struct{}
	mu        sync.Mutex
	sshSrv    *sshd.Server
	sshSigner ssh.Signer
	hostKey   string // sshSigner's public half, authorized_keys format
}

// mark records a boot phase. Only the first goes to the console at once
// (it is the floor benchmark's marker): an emulated serial port costs
// milliseconds a line, so the rest are printed together once serving.
func (g *guest) mark(phase string) {
	g.timings = append(g.timings, proto.Timing{Phase: phase, Seconds: uptime()})
	if len(g.timings) == 1 {
		fmt.Fprintf(os.Stderr, "banger-agent: %s at %.3fs\n", phase, g.timings[0].Seconds)
	}
}

// printTimings reports the boot phases on the console, for vm logs.
func printTimings(ts []proto.Timing) {
	var b strings.Builder
	b.WriteString("banger-agent: boot:")
	for _, t := range ts {
		fmt.Fprintf(&b, " %s at %.3fs;", t.Phase, t.Seconds)
	}
	fmt.Fprintln(os.Stderr, strings.TrimSuffix(b.String(), ";"))
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
	os.Setenv("PATH", spawn.DefaultPath)
	for _, m := range []struct{ src, dst, fs string }{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}} {
		if err := mount(m.src, m.dst, m.fs, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return err
		}
	}
	g.mark("init started")
	if err := loadModules(ModulesList); err != nil {
		return err
	}
	g.virtio = virtioDevices()
	if g.virtio[virtioVsock] {
		if err := loadModules(LaterList); err != nil {
			return err
		}
	} else {
		// Kept open: the initramfs is out of reach once root switches.
		var err error
		if g.later, err = openModules(LaterList); err != nil {
			return err
		}
	}
	g.mark("modules loaded")
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	if g.params, err = proto.ParseBootParams(string(cmdline)); err != nil {
		return err
	}
	root, err := waitForDisk(proto.RootSerial, g.params.DiskOrder, 30*time.Second)
	if err != nil {
		return err
	}
	if err := mount(root, "/mnt/lower", "ext4", unix.MS_RDONLY, ""); err != nil {
		return err
	}
	upper := "/mnt/rw"
	if work, err := waitForDisk(proto.WorkSerial, g.params.DiskOrder, 2*time.Second); err == nil {
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
	// Kept for the power-off, which remounts the work disk read-only
	// through it: once root switches, no path reaches that mount.
	if fd, err := unix.Open("/mnt/rw", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		g.workFD = fd
	}
	if err := switchRoot("/mnt/root"); err != nil {
		return err
	}
	g.mark("root mounted")
	_ = mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
	_ = mount("tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
	_ = mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")
	// As systemd does: AppArmor's tools (Docker loads its profile with
	// apparmor_parser) and other LSMs' read and write it.
	_ = mount("securityfs", "/sys/kernel/security", "securityfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err := mountCgroups(); err != nil {
		// Container runtimes and systemd-run need it; exec and ssh do not.
		fmt.Fprintf(os.Stderr, "banger-agent: cgroup2: %v\n", err)
	}
	if err := mountModules(g.params.DiskOrder); err != nil {
		fmt.Fprintf(os.Stderr, "banger-agent: the kernel's modules: %v\n", err)
	}
	if g.workFD > 0 {
		if err := mountContainerStores(fmt.Sprintf("/proc/self/fd/%d", g.workFD)); err != nil {
			fmt.Fprintf(os.Stderr, "banger-agent: container storage: %v\n", err)
		}
	}
	// A workspace placed read-only stays so across reboots.
	if b, err := os.ReadFile(server.ReadOnlyMarker); err == nil {
		for _, dir := range strings.Fields(string(b)) {
			if err := server.MountReadOnly(dir); err != nil {
				fmt.Fprintf(os.Stderr, "banger-agent: workspace %s: %v\n", dir, err)
			}
		}
	}
	if h := g.params.Hostname; h != "" {
		_ = unix.Sethostname([]byte(h))
	}
	if id := g.params.MachineID; id != "" {
		if err := provide("/etc/machine-id", id+"\n"); err != nil {
			return fmt.Errorf("writing the machine id: %w", err)
		}
	}
	g.r = newReaper()
	if g.addrs, err = bringUpNetwork(g.params.Net, g.params.Hostname); err != nil {
		return err
	}
	g.mark("network up")
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

func loadModules(list string) error {
	files, err := openModules(list)
	if err != nil {
		return err
	}
	return loadOpened(files)
}

// openModules opens the module files a list names, in order.
func openModules(list string) ([]*os.File, error) {
	b, err := os.ReadFile(list)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // a kernel with everything built in
	}
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, line := range strings.Split(string(b), "\n") {
		path := strings.TrimSpace(line)
		if path == "" {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// loadOpened loads modules in order and closes their files; one already
// loaded is fine.
func loadOpened(files []*os.File) error {
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, f := range files {
		err := unix.FinitModule(int(f.Fd()), "", 0)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("loading %s: %w", filepath.Base(f.Name()), err)
		}
	}
	return nil
}

// waitForDisk finds the virtio disk whose serial is serial, or, for a
// VMM whose disks have none, the one at serial's place in order.
func waitForDisk(serial string, order []string, limit time.Duration) (string, error) {
	return poll(limit, "no disk with serial "+serial, func() (string, bool) {
		for i, s := range order {
			if s == serial && i < 26 {
				dev := "/dev/vd" + string(rune('a'+i))
				if _, err := os.Stat(dev); err == nil {
					return dev, true
				}
			}
		}
		return named("/sys/block/vd*/serial", serial)
	})
}

// findPort finds the virtio-serial port named name; its name arrives a
// moment after the driver binds.
func findPort(name string, limit time.Duration) (string, error) {
	return poll(limit, "no virtio port named "+name, func() (string, bool) {
		return named("/sys/class/virtio-ports/vport*/name", name)
	})
}

// named is the device whose sysfs attribute file (matched by pattern,
// /sys/.../DEVICE/ATTR) holds want.
func named(pattern, want string) (string, bool) {
	matches, _ := filepath.Glob(pattern)
	for _, m := range matches {
		if b, err := os.ReadFile(m); err == nil && strings.TrimSpace(string(b)) == want {
			return "/dev/" + filepath.Base(filepath.Dir(m)), true
		}
	}
	return "", false
}

// poll asks find every few milliseconds until it finds, or limit passes
// (then the error says missing).
func poll(limit time.Duration, missing string, find func() (string, bool)) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		if v, ok := find(); ok {
			return v, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s after %s", missing, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hostKeyPath keeps the SSH host key on the VM's writable disk.
const hostKeyPath = "/etc/banger/ssh_host_ed25519_key"

// Virtio device IDs (/sys/bus/virtio/devices/*/device).
const (
	virtioConsole = "0x0003"
	virtioVsock   = "0x0013"
)

// virtioDevices lists the IDs of the VM's virtio devices, enumerated as
// soon as virtio_mmio loads (their drivers may load later).
func virtioDevices() map[string]bool {
	ids := map[string]bool{}
	matches, _ := filepath.Glob("/sys/bus/virtio/devices/*/device")
	for _, m := range matches {
		if b, err := os.ReadFile(m); err == nil {
			ids[strings.TrimSpace(string(b))] = true
		}
	}
	return ids
}

// serve serves the host until the machine stops; it returns only an
// error that keeps it from serving.
func (g *guest) serve() error {
	// The SSH server starts once the agent serves, off the boot's
	// critical path (a first boot generates the host key); what needs it
	// waits.
	startSSH := func() {
		defer close(g.sshReady)
		hk, err := sshkey.LoadOrCreate(hostKeyPath)
		if err != nil {
			fmt.Fprintf(os.Stderr, "banger-agent: no SSH: loading the host key: %v\n", err)
			return
		}
		g.mu.Lock()
		g.sshSigner, g.hostKey = hk, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk.PublicKey())))
		g.sshSrv = sshd.New(sshd.Config{HostKey: hk, Authorized: g.params.SSHKeys, Spawn: g.r.spawn,
			Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		sshSrv := g.sshSrv
		g.mu.Unlock()
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", proto.SSHPort))
		if err != nil {
			fmt.Fprintf(os.Stderr, "banger-agent: no SSH on the network: %v\n", err)
			return
		}
		go func() { _ = sshSrv.Serve(l) }()
	}
	sshServer := func() *sshd.Server {
		<-g.sshReady
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.sshSrv
	}
	srv := &server.Server{
		Spawn: g.r.spawn,
		SSH: func(c net.Conn) {
			srv := sshServer()
			if srv == nil {
				c.Close()
				return
			}
			srv.ServeConn(c)
		},
		Identity: g.identify,
		Ping: func() proto.PingResult {
			return proto.PingResult{Uptime: uptime(), Version: version.Version, Protocol: proto.Protocol}
		},
		Stats: func() (proto.StatsResult, error) {
			r, err := procfs.Stats("/proc", g.workDiskUsage)
			select {
			case <-g.sshReady:
				if srv := sshServer(); srv != nil {
					r.Sessions = srv.Connections()
				}
			default:
			}
			return r, err
		},
		Ports: func() ([]proto.Socket, error) { return procfs.Listening("/proc") },
		Info: func() proto.InfoResult {
			<-g.sshReady
			var u unix.Utsname
			_ = unix.Uname(&u)
			h, _ := os.Hostname()
			g.mu.Lock()
			defer g.mu.Unlock()
			return proto.InfoResult{Kernel: unix.ByteSliceToString(u.Release[:]), Hostname: h, Timings: g.timings,
				SSHHostKey: g.hostKey, Addresses: g.addrs}
		},
		Shutdown: func() {
			go func() {
				time.Sleep(100 * time.Millisecond) // let the answer leave
				if g.service {
					g.initPowerOff()
					return
				}
				g.shutdown()
			}()
		},
	}
	serveVsock := func(fd int) {
		acceptVsock(fd, func(f *os.File) {
			_ = srv.Serve(f)
			f.Close()
		})
	}
	// The host reaches the agent through vsock or a virtio-serial port,
	// whichever device the VMM gave the guest.
	vsockDev := g.virtio[virtioVsock]
	vsock := -1
	if vsockDev {
		var err error
		if vsock, err = listenVsock(proto.VsockPort); err != nil {
			return err
		}
	}
	port := ""
	if g.virtio[virtioConsole] {
		var err error
		if port, err = findPort(proto.PortName, 30*time.Second); err != nil {
			return err
		}
	}
	if port == "" && !vsockDev {
		return errors.New("the VM has neither a vsock device nor a virtio-serial port for the agent")
	}
	g.mark("agent ready") // before serving: Info reads the timings
	if vsock >= 0 {
		go serveVsock(vsock)
	}
	if port != "" {
		go servePort(srv, port)
	}
	go startSSH()
	if !vsockDev {
		// Without a vsock device the listener still serves vsock
		// loopback (banger-agent vsock-ping), once its modules load.
		go func() {
			if err := loadOpened(g.later); err != nil {
				fmt.Fprintf(os.Stderr, "banger-agent: %v\n", err)
			}
			if fd, err := listenVsock(proto.VsockPort); err == nil {
				serveVsock(fd)
			}
		}()
	}
	printTimings(g.timings)
	select {}
}

// servePort serves the virtio-serial port: the host end may come and go
// (daemon restarts), so it is opened again each time.
func servePort(srv *server.Server, port string) {
	for {
		f, err := os.OpenFile(port, os.O_RDWR, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "banger-agent: opening %s: %v\n", port, err)
			time.Sleep(time.Second)
			continue
		}
		_ = srv.Serve(f)
		f.Close()
	}
}

func (g *guest) fatal(err error) {
	fmt.Fprintf(os.Stderr, "banger-agent: FATAL: %v\n", err)
	time.Sleep(500 * time.Millisecond) // let the console drain
	powerOff()
}

// shutdown powers off cleanly: every process is asked to end, then
// killed; the root and the work disk are remounted read-only, so the
// work disk's file system is clean (no journal to replay) next time.
func (g *guest) shutdown() {
	_ = unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && othersAlive() {
		time.Sleep(50 * time.Millisecond)
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	for i := 0; i < 40 && othersAlive(); i++ {
		time.Sleep(25 * time.Millisecond)
	}
	unix.Sync()
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		fmt.Fprintf(os.Stderr, "banger-agent: remounting / read-only: %v\n", err)
	}
	if g.workFD > 0 {
		if err := unix.Mount("", fmt.Sprintf("/proc/self/fd/%d", g.workFD), "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			fmt.Fprintf(os.Stderr, "banger-agent: remounting the work disk read-only: %v\n", err)
		}
	}
	powerOff()
}

// othersAlive tells whether any process but PID 1 and kernel threads
// remains.
func othersAlive() bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		// Kernel threads have an empty command line.
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && len(b) > 0 {
			return true
		}
	}
	return false
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

func (r *reaper) spawn(p proto.ExecParams, stdin, stdout, stderr *os.File) (spawn.Process, error) {
	c, err := spawn.Prepare("/", p)
	if err != nil {
		return spawn.Process{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	proc, err := os.StartProcess(c.Path, c.Args, &os.ProcAttr{Dir: c.Dir, Env: c.Env, Files: []*os.File{stdin, stdout, stderr}, Sys: c.Sys})
	if err != nil {
		return spawn.Process{}, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	if ws, ok := r.early[proc.Pid]; ok {
		ch <- ws
		delete(r.early, proc.Pid)
	} else {
		r.waiters[proc.Pid] = ch
	}
	pid := proc.Pid
	_ = proc.Release()
	return spawn.Process{Pid: pid, Wait: func() proto.ExecResult { return spawn.ExitResult(<-ch) }}, nil
}

// workDiskUsage is the used and total bytes of the work disk's file
// system (the overlay's upper layer), through the fd kept since the root
// switch.
func (g *guest) workDiskUsage() (used, size uint64) {
	if g.workFD <= 0 {
		return 0, 0
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(g.workFD, &st); err != nil {
		return 0, 0
	}
	bs := uint64(st.Bsize)
	return (st.Blocks - st.Bfree) * bs, st.Blocks * bs
}
