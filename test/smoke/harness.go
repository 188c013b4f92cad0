package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// scenario is one independent end-to-end check.
type scenario struct {
	name string
	run  func(t *T)
	// hostNetwork keeps the scenario in the host's network namespace,
	// for one that must reach Debian's package mirror (through apt) and
	// starts no VM.
	hostNetwork bool
	// campaign: run only when asked (-campaign), by make reliability.
	campaign bool
}

type result struct {
	name string
	took time.Duration
	err  error
	kept string // where the failed scenario's logs were copied
}

// tools are the external parts scenarios may use.
type tools struct {
	registry string // CNCF distribution registry binary
	// clients is the npm project of the real clients, MCP's and E2B's
	// (test/clients, installed into .tools/node).
	clients   string
	debianTar string // debootstrap'd Debian tree, as a (gzipped) tarball
	// systemdTar is the same with systemd as init, kmod and Docker.
	systemdTar string
	kernelDeb  string // Debian's linux-image package
	// crashBin holds banger and bangerd built with the crashpoints tag
	// (make build-crash); crashRuns is the campaign's runs a point, its
	// report written to crashReport when set.
	crashBin    string
	crashRuns   int
	crashReport string
	// crashVerbs, when set, keeps the campaign to the cases of the
	// verbs it matches (a change's own, say).
	crashVerbs *regexp.Regexp
	// soakCycles cycles from soakClients parallel clients, each soak.
	soakCycles, soakClients int
	// porttest builds the static guest helper of test/smoke/porttest.
	porttest func() (string, error)
}

// T is a scenario's handle on its own banger home.
type T struct {
	ctx    context.Context
	name   string
	bin    string
	home   string
	tools  tools
	defers []func()
	netns  string // set by Netns: commands run inside it
	// resolver: commands run by `ip netns exec`, which gives them
	// /etc/netns/NETNS/resolv.conf (UseResolver).
	resolver bool
	// user, when set, is who later commands run as (AsUser).
	user *userID
	// extraEnv is added to the environment of commands (and so of a
	// daemon they start).
	extraEnv []string
	// ownMounts are the scenario's own mounts under its home (smallFS),
	// which leaks does not count.
	ownMounts []string
}

// userID is a user commands may run as.
type userID struct{ uid, gid int }

// defer_ runs f when the scenario ends, after its daemon stopped.
func (t *T) defer_(f func()) { t.defers = append(t.defers, f) }

// failure is how Fatalf unwinds a scenario.
type failure struct{ msg string }

// Fatalf ends the scenario as failed.
func (t *T) Fatalf(format string, args ...any) {
	panic(failure{fmt.Sprintf(format, args...)})
}

func runScenario(ctx context.Context, s scenario, binDir, outDir string, timeout time.Duration, tl tools) (res result) {
	res.name = s.name
	start := time.Now()
	defer func() { res.took = time.Since(start) }()

	// A short home: the socket path must fit in 107 bytes.
	home, err := os.MkdirTemp("", "bs-")
	if err != nil {
		res.err = err
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := &T{ctx: ctx, name: s.name, bin: binDir, home: home, tools: tl}

	// Each scenario runs in its own network namespace: whatever its
	// daemon does to the network stays there.
	res.err = t.protect(func(t *T) {
		if !s.hostNetwork {
			t.Netns()
		}
		s.run(t)
	})
	if err := t.cleanup(); err != nil && res.err == nil {
		res.err = err
	}
	for i := len(t.defers) - 1; i >= 0; i-- {
		t.defers[i]()
	}
	if res.err != nil {
		kept := filepath.Join(outDir, s.name)
		if err := copyLogs(filepath.Join(home, "logs"), kept); err == nil {
			res.kept = kept
		}
	}
	_ = os.RemoveAll(home)
	return res
}

func (t *T) protect(f func(*T)) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if f, ok := p.(failure); ok {
				err = errors.New(f.msg)
				return
			}
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	f(t)
	if t.ctx.Err() != nil {
		return fmt.Errorf("scenario deadline: %w", t.ctx.Err())
	}
	return nil
}

// cleanup stops the scenario's daemon, then makes sure nothing started
// under its home lives on: a process that survives `daemon stop` is a leak,
// and a leak fails the scenario.
func (t *T) cleanup() error {
	_ = t.exec(context.Background(), nil, "daemon", "stop")
	var leaked []string
	for _, pid := range processesOf(t.home) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		leaked = append(leaked, fmt.Sprintf("process %d", pid))
	}
	if len(leaked) > 0 {
		return fmt.Errorf("scenario left %s behind after `banger daemon stop`", strings.Join(leaked, ", "))
	}
	return nil
}

// processesOf lists the processes whose environment points at home.
func processesOf(home string) []int {
	entries, _ := os.ReadDir("/proc")
	marker := []byte("BANGER_HOME=" + home + "\x00")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		if bytes.Contains(env, marker) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func copyLogs(from, to string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// run is the outcome of one command.
type run struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r run) String() string {
	return fmt.Sprintf("`banger %s` exited %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// env is the environment of every command: the scenario's home, nothing
// of the invoking user's layout.
func (t *T) env() []string {
	env := []string{"BANGER_HOME=" + t.home, "PATH=" + os.Getenv("PATH"), "HOME=" + t.home,
		// The daemon's registry credentials: the scenario's own docker config.
		"DOCKER_CONFIG=" + filepath.Join(t.home, "docker")}
	return append(env, t.extraEnv...)
}

func (t *T) exec(ctx context.Context, stdin io.Reader, args ...string) run {
	cmd := exec.CommandContext(ctx, filepath.Join(t.bin, "banger"), args...)
	switch {
	case t.user != nil:
		// nsenter, as root, enters the namespace and then drops to the
		// user: no user may enter a namespace itself.
		cmd = exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + t.netns,
			"--setuid", strconv.Itoa(t.user.uid), "--setgid", strconv.Itoa(t.user.gid), "--", filepath.Join(t.bin, "banger")}, args...)...)
	case t.netns != "" && t.resolver:
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", t.netns, filepath.Join(t.bin, "banger")}, args...)...)
	case t.netns != "":
		cmd = exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + t.netns, "--", filepath.Join(t.bin, "banger")}, args...)...)
	}
	cmd.Env = t.env()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := run{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		r.code = -1
		r.stderr += err.Error()
	}
	return r
}

// Banger runs the CLI and returns its outcome, whatever it is.
func (t *T) Banger(args ...string) run {
	return t.exec(t.ctx, nil, args...)
}

// Must runs the CLI and fails the scenario unless it exits 0.
func (t *T) Must(args ...string) run {
	r := t.Banger(args...)
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	return r
}

// MustFail runs the CLI and fails the scenario unless it exits with code,
// printing want on stderr.
func (t *T) MustFail(code int, want string, args ...string) run {
	r := t.Banger(args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		t.Fatalf("want exit %d and stderr containing %q, got %s", code, want, r)
	}
	return r
}

// JSON runs the CLI with --json appended and decodes its output.
func (t *T) JSON(v any, args ...string) {
	r := t.Must(append(args, "--json")...)
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("decoding the JSON of %s: %v", r, err)
	}
}

// StartDaemon starts this home's daemon and remembers its pid.
func (t *T) StartDaemon() int {
	t.Must("daemon", "start")
	var st struct {
		Running bool `json:"running"`
		PID     int  `json:"pid"`
	}
	t.JSON(&st, "daemon", "status")
	if !st.Running || st.PID == 0 {
		t.Fatalf("daemon status after start: %+v", st)
	}
	return st.PID
}

// DaemonPID is the scenario's daemon's pid.
func (t *T) DaemonPID() int {
	var st struct {
		PID int `json:"pid"`
	}
	t.JSON(&st, "daemon", "status")
	return st.PID
}

// KillDaemon kills the scenario's daemon with SIGKILL and waits for it
// to be gone.
func (t *T) KillDaemon() {
	pid := t.DaemonPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	t.Eventually("daemon dies", time.Minute, func() bool { return syscall.Kill(pid, 0) != nil || isZombie(pid) })
}

// Socket is the scenario's daemon socket.
func (t *T) Socket() string { return filepath.Join(t.home, "run", "bangerd.sock") }

// Home is the scenario's BANGER_HOME.
func (t *T) Home() string { return t.home }

// Eventually polls cond until it holds or the deadline passes.
func (t *T) Eventually(what string, deadline time.Duration, cond func() bool) {
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not true after %s", what, deadline)
		}
		select {
		case <-t.ctx.Done():
			t.Fatalf("%s: %v", what, t.ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Contains fails unless s contains every one of want.
func (t *T) Contains(what, s string, want ...string) {
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Fatalf("%s does not contain %q:\n%s", what, w, s)
		}
	}
}

// Run runs another program (scp, ssh) in the scenario's environment and
// fails the scenario if it fails.
func (t *T) Run(name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = t.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
