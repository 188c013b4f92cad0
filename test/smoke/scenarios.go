package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/rpc"
)

// scenarios lists every scenario. Each one is independent: it may assume
// nothing but its own empty home.
func scenarios() []scenario {
	return []scenario{
		{name: "daemon-lifecycle", run: daemonLifecycle},
		{name: "version-mismatch", run: versionMismatch},
		{name: "two-daemons-refused", run: twoDaemonsRefused},
		{name: "garbage-on-socket", run: garbageOnSocket},
		{name: "ops-list-empty", run: opsListEmpty},
		{name: "sigterm-clean-shutdown", run: sigtermCleanShutdown},
		{name: "sigkill-restart", run: sigkillRestart},
		{name: "config-errors-and-sources", run: configErrorsAndSources},
		{name: "completion", run: completion},
		{name: "image-pull-repull", run: imagePullRepull},
		{name: "image-import", run: imageImport},
		{name: "image-delete", run: imageDelete},
		{name: "image-cache-prune", run: imageCachePrune},
		{name: "image-hostile-rejected", run: imageHostile},
		{name: "image-debian", run: imageDebian},
		{name: "image-pull-auth", run: imagePullAuth},
		{name: "kernel-import-debian", run: kernelImportDebian, hostNetwork: true}, // apt reaches the mirror
		{name: "vm-boot-test", run: vmBootTest},
		{name: "vm-boot-images", run: vmBootImages},
		{name: "vm-lifecycle", run: vmLifecycle},
		{name: "vm-run", run: vmRun},
		{name: "vm-bridge", run: vmBridge},
		{name: "vm-egress", run: vmEgress},
		{name: "system-helper", run: systemHelper},
		{name: "caller-rights", run: callerRights},
		{name: "doctor", run: doctorHost},
		{name: "update", run: updateRelease},
		{name: "vm-stats-ports", run: vmStatsPorts},
		{name: "vm-auto-stop", run: vmAutoStop},
		{name: "vm-suspend", run: vmSuspend},
		{name: "vm-idle-suspend", run: vmIdleSuspend},
		{name: "vm-warm", run: vmWarm},
		{name: "vm-checkpoint", run: vmCheckpoint},
		{name: "vm-fork", run: vmFork},
		{name: "vm-suspend-killed", run: vmSuspendKilled},
		{name: "vm-state-refused", run: vmStateRefused},
		{name: "vm-workspace", run: vmWorkspace},
		{name: "vm-workspace-large", run: vmWorkspaceLarge, campaign: true}, // a scale test: make reliability
		{name: "vm-hostile-guest", run: vmHostileGuest},
		{name: "vm-systemd", run: vmSystemd},
		{name: "mcp-inspector", run: mcpInspector},
		{name: "mcp-agent-loop", run: mcpAgentLoop},
		{name: "e2b-sdk", run: e2bSDK},
		{name: "crash-points-short", run: crashPointsShort},
		{name: "crash-points", run: crashPoints, campaign: true},
		{name: "restart-many", run: restartMany, campaign: true},
		{name: "restart-many-installed", run: restartManyInstalled, campaign: true},
		{name: "full-disks", run: fullDisks},
		{name: "soak", run: soak, campaign: true},
	}
}

func daemonLifecycle(t *T) {
	r := t.Banger("daemon", "status")
	if r.code != 3 {
		t.Fatalf("status before start: want exit 3, got %s", r)
	}
	t.Contains("status before start", r.stdout, "not running", "banger daemon start")
	t.MustFail(1, "banger daemon start", "daemon", "ping")
	t.Contains("version without daemon", t.Must("version").stdout, "client: banger", "daemon: not running")

	t.Contains("start", t.Must("daemon", "start").stdout, "bangerd started", t.Socket())
	t.Contains("second start", t.Must("daemon", "start").stdout, "already running")
	t.Contains("ping", t.Must("daemon", "ping").stdout, "pong")
	t.Contains("version", t.Must("version").stdout, "client: banger", "daemon: bangerd")
	t.Contains("--version", t.Must("--version").stdout, "daemon: bangerd")

	var v struct {
		Client, Daemon *api.BuildInfo
	}
	t.JSON(&v, "version")
	if v.Client == nil || v.Daemon == nil || v.Client.Version != v.Daemon.Version || v.Daemon.Go == "" || v.Daemon.Protocol != api.ProtocolVersion {
		t.Fatalf("version --json = %+v", v)
	}

	t.Contains("status", t.Must("daemon", "status").stdout, "bangerd is running", "mode", "home", t.Home())
	var st struct {
		Running bool      `json:"running"`
		PID     int       `json:"pid"`
		Paths   api.Paths `json:"paths"`
	}
	t.JSON(&st, "daemon", "status")
	if !st.Running || st.Paths.Socket != t.Socket() {
		t.Fatalf("status --json = %+v", st)
	}
	fi, err := os.Stat(t.Socket())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v, %v", fi.Mode(), err)
	}

	t.Contains("stop", t.Must("daemon", "stop").stdout, "bangerd stopped")
	if !isZombie(st.PID) && syscall.Kill(st.PID, 0) == nil {
		t.Fatalf("pid %d alive after stop returned", st.PID)
	}
	if _, err := os.Stat(t.Socket()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket still there after stop: %v", err)
	}
	if r := t.Banger("daemon", "status"); r.code != 3 {
		t.Fatalf("status after stop: %s", r)
	}
	t.Contains("second stop", t.Must("daemon", "stop").stdout, "not running")
}

func versionMismatch(t *T) {
	t.StartDaemon()
	conn, err := rpc.Dial(t.ctx, t.Socket(), "0.0.0-old")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	conn.SetProtocolVersion(api.ProtocolVersion + 41)
	err = conn.Call(t.ctx, api.MethodPing, nil, nil, nil)
	var wire *api.Error
	if !errors.As(err, &wire) || wire.Code != api.CodeVersionMismatch {
		t.Fatalf("ping at protocol %d = %v, want version_mismatch", api.ProtocolVersion+41, err)
	}
	t.Contains("mismatch message", wire.Message, "0.0.0-old", "protocol "+strconv.Itoa(api.ProtocolVersion+41),
		"protocol "+strconv.Itoa(api.ProtocolVersion), "bangerd ")
	t.Must("daemon", "ping")
}

func twoDaemonsRefused(t *T) {
	pid := t.StartDaemon()
	for _, argv := range [][]string{
		{filepath.Join(t.bin, "bangerd")},
		{filepath.Join(t.bin, "banger"), "daemon", "run"},
	} {
		ctx, cancel := context.WithTimeout(t.ctx, time.Minute)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = t.env()
		out, err := cmd.CombinedOutput()
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("%v: want a non-zero exit, got %v\n%s", argv, err, out)
		}
		t.Contains(strings.Join(argv, " "), string(out), "already running", "banger daemon stop")
	}
	var st struct {
		PID int `json:"pid"`
	}
	t.JSON(&st, "daemon", "status")
	if st.PID != pid {
		t.Fatalf("the first daemon (pid %d) was replaced by pid %d", pid, st.PID)
	}
	t.Must("daemon", "ping")
}

func garbageOnSocket(t *T) {
	pid := t.StartDaemon()
	for _, garbage := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: banger\r\n\r\n"),
		{0x00, 0xff, 0xfe, 0x01, '\n'},
		[]byte(`{"v":1,"id":1,"method":"ping","params":{` + "\n"),
		[]byte(strings.Repeat("[", 100000) + "\n"),
		[]byte(`{"v":1,"id":1}` + "\n"),
	} {
		c, err := net.Dial("unix", t.Socket())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		_, _ = c.Write(garbage)
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || !strings.Contains(line, "invalid_request") {
			t.Fatalf("answer to %q: %q, %v", garbage, line, err)
		}
	}
	// A frame larger than the limit closes the connection, not the daemon.
	c, err := net.Dial("unix", t.Socket())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	go func() { _, _ = c.Write(make([]byte, rpc.MaxFrameSize+256<<10)) }()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, _ = io.ReadAll(c)
	c.Close()
	// Half a request, then a hang-up.
	if c, err = net.Dial("unix", t.Socket()); err == nil {
		_, _ = c.Write([]byte(`{"v":1,"id":7,"meth`))
		c.Close()
	}

	t.Must("daemon", "ping")
	var st struct {
		PID int `json:"pid"`
	}
	t.JSON(&st, "daemon", "status")
	if st.PID != pid {
		t.Fatalf("daemon restarted (pid %d, was %d)", st.PID, pid)
	}
}

func opsListEmpty(t *T) {
	t.StartDaemon()
	r := t.Must("ops", "list")
	t.Contains("ops list", r.stdout, "ID", "KIND", "STATE")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 1 {
		t.Fatalf("ops list on a new daemon has rows:\n%s", r.stdout)
	}
	var res api.OperationsListResult
	t.JSON(&res, "ops", "list")
	if res.Operations == nil || len(res.Operations) != 0 {
		t.Fatalf("ops list --json = %+v, want an empty array", res)
	}
	t.Contains("raw JSON", t.Must("ops", "list", "--json").stdout, `"operations": []`)
	t.MustFail(1, "not found", "ops", "show", "op-nope")
	t.MustFail(1, "not found", "ops", "cancel", "op-nope")
}

func sigtermCleanShutdown(t *T) {
	pid := t.StartDaemon()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("kill: %v", err)
	}
	t.Eventually("daemon exits after SIGTERM", time.Minute, func() bool { return syscall.Kill(pid, 0) != nil || isZombie(pid) })
	if _, err := os.Stat(t.Socket()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after SIGTERM: %v", err)
	}
	log, _ := os.ReadFile(filepath.Join(t.Home(), "logs", "bangerd.log"))
	t.Contains("daemon log", string(log), "bangerd stopped")
	t.StartDaemon()
	t.Must("daemon", "ping")
}

func sigkillRestart(t *T) {
	t.StartDaemon()
	var before struct {
		InstanceID string `json:"instance_id"`
	}
	t.JSON(&before, "daemon", "status")
	t.KillDaemon()
	// The socket file is left behind; the next daemon must cope.
	r := t.Banger("daemon", "status")
	if r.code != 3 {
		t.Fatalf("status with a dead daemon's socket: %s", r)
	}
	t.StartDaemon()
	var after struct {
		InstanceID string `json:"instance_id"`
	}
	t.JSON(&after, "daemon", "status")
	if after.InstanceID == "" || after.InstanceID != before.InstanceID {
		t.Fatalf("store identity changed across a crash: %q -> %q", before.InstanceID, after.InstanceID)
	}
	t.Contains("--check-migrations", t.Must("daemon", "run", "--check-migrations").stdout, "can open")
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] == 'Z'
}

func configErrorsAndSources(t *T) {
	cfg := filepath.Join(t.Home(), "config.toml")
	if err := os.WriteFile(cfg, []byte("vmm = \"qemu\"\ncolour = \"blue\"\n"), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	r := t.MustFail(1, `unknown key "colour"`, "daemon", "start")
	t.Contains("start with a bad config", r.stderr, cfg)
	if r := t.Banger("daemon", "status"); r.code != 3 {
		t.Fatalf("a daemon runs despite a bad config: %s", r)
	}

	if err := os.WriteFile(cfg, []byte("vmm = \"qemu\"\n[vm_defaults]\nvcpu = 2\n"), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	t.StartDaemon()
	out := t.Must("config", "show").stdout
	t.Contains("config show", out, "KEY", "SOURCE", "vmm", "qemu", cfg, "host (", "default")
	var res api.ConfigShowResult
	t.JSON(&res, "config", "show")
	for _, v := range res.Values {
		if v.Key == "vm_defaults.vcpu" && (v.Value != "2" || v.Source != cfg) {
			t.Fatalf("vm_defaults.vcpu = %+v", v)
		}
	}
}

func completion(t *T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Contains("completion "+shell, t.Must("completion", shell).stdout, "banger")
	}
}
