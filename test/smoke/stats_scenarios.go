package main

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/test/networld"
)

// portsImage is the busybox image with the porttest helper and a page
// for busybox httpd.
func (t *T) portsImage() v1.Image {
	if t.tools.porttest == nil {
		t.Fatalf("no porttest builder")
	}
	bin, err := t.tools.porttest()
	if err != nil {
		t.Fatalf("%v", err)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		t.Fatalf("%v", err)
	}
	img, err := mutate.AppendLayers(t.busyboxImage(), t.layer(
		entry{name: "bin/porttest", body: body, mode: 0o755},
		entry{name: "www/", typ: tar.TypeDir},
		entry{name: "www/index.html", body: []byte("hello from busybox httpd\n")},
	))
	if err != nil {
		t.Fatalf("%v", err)
	}
	return img
}

// statsConfig makes the scenario's daemon a bridge one that polls every
// second.
func (t *T) statsConfig() {
	cfg := "stats_poll_interval = \"1s\"\n[network]\nmode = \"bridge\"\ncidr = \"10.78.0.0/24\"\n"
	if err := os.WriteFile(filepath.Join(t.Home(), "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
}

// vmStatsPorts: a guest running busybox httpd, a TLS server, a TCP echo
// and a UDP socket; `vm ports` labels each, with URLs on the bridge and
// through --forward; a port opened a moment ago shows at once; stats
// move when the guest burns CPU and allocates memory; health and ping,
// with their codes for a missing, a stopped and a frozen VM.
func vmStatsPorts(t *T) {
	t.statsConfig()
	reg := t.bootable()
	ref := reg + "/smoke/ports:1"
	t.Push(ref, t.portsImage())
	t.Must("vm", "create", "--name", "web", "--image", ref, "--cpus", "1", "--memory", "256M")
	bg := func(cmd string) {
		t.Must("vm", "exec", "web", "--", "/bin/busybox", "sh", "-c", cmd+" </dev/null >/dev/null 2>&1 &")
	}
	bg("/bin/busybox httpd -f -p 8080 -h /www")
	bg("/bin/porttest tls 8443")
	bg("/bin/porttest udp 5353")

	ports := func(args ...string) map[int]api.VMPort { return t.vmPorts("web", args...) }
	var got map[int]api.VMPort
	t.Eventually("the guest's servers listen", time.Minute, func() bool {
		got = ports()
		return got[8080].Port != 0 && got[8443].Port != 0 && got[5353].Port != 0
	})
	// A port that opened a moment ago shows on the next call: ports are
	// read live, not from the poller's cache.
	bg("/bin/porttest echo 7000")
	t.Must("vm", "exec", "web", "--", "/bin/porttest", "wait", "7000")
	start := time.Now()
	t.Eventually("port 7000 shows", 10*time.Second, func() bool { got = ports(); return got[7000].Port != 0 })
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("a new port took %s to show; want at most 2s", took)
	}
	for port, want := range map[int]string{
		8080: "http http://10.78.0.2:8080 busybox", // httpd is a busybox applet
		8443: "https https://10.78.0.2:8443 porttest",
		7000: "tcp tcp://10.78.0.2:7000 porttest",
		5353: "udp  porttest",
	} {
		p := got[port]
		if s := fmt.Sprintf("%s %s %s", p.Scheme, p.URL, p.Process); s != want {
			t.Fatalf("port %d = %q (%+v); want %q", port, s, p, want)
		}
		if p.Proto == "tcp" && (len(p.Addresses) != 1 || p.Addresses[0] != "*") {
			t.Fatalf("port %d addresses %v; want the wildcard folded to *", port, p.Addresses)
		}
	}
	t.Contains("ports table", t.Must("vm", "ports", "web").stdout, "PROTO", "http://10.78.0.2:8080", "https", "udp")
	// The URL works from the host, and --forward opens the port on the
	// daemon's loopback too.
	fwd := ports("--forward")[8080]
	if fwd.Forward == "" {
		t.Fatalf("--forward gave port 8080 no forward: %+v", fwd)
	}
	for _, addr := range []string{"10.78.0.2:8080", fwd.Forward} {
		t.Contains("GET through "+addr, t.httpGet(addr, 30*time.Second), "200", "hello from busybox httpd")
	}

	// The forward outlives a daemon killed with SIGKILL: the next one
	// opens it again on the same address.
	t.KillDaemon()
	t.StartDaemon()
	t.Eventually("the forward is back", time.Minute, func() bool {
		c, err := networld.Dial(t.netns, "tcp", fwd.Forward)
		if err != nil {
			return false
		}
		defer c.Close()
		fmt.Fprint(c, "GET / HTTP/1.0\r\n\r\n")
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		b, _ := io.ReadAll(c)
		return strings.Contains(string(b), "hello from busybox httpd")
	})
	if again := ports()[8080]; again.Forward != fwd.Forward {
		t.Fatalf("after a restart port 8080 is forwarded at %q, was %q", again.Forward, fwd.Forward)
	}

	// Stats move with the guest's load.
	var before api.VMStats
	t.JSON(&before, "vm", "stats", "web")
	if before.MemTotal == 0 || before.DiskSize == 0 || before.Procs == 0 || before.HostRSS == 0 {
		t.Fatalf("stats = %+v", before)
	}
	bg("/bin/porttest burn")
	bg("/bin/porttest alloc 96")
	var after api.VMStats
	t.Eventually("CPU and memory rise", 2*time.Minute, func() bool {
		after = api.VMStats{}
		t.JSON(&after, "vm", "stats", "web")
		return after.CPUPercent > 60 && after.MemUsed > before.MemUsed+80<<20
	})
	if after.HostCPUPercent < 30 || len(after.History) < 2 {
		t.Fatalf("after load: %+v", after)
	}
	t.Contains("stats", t.Must("vm", "stats", "web").stdout, "cpu history:", "memory:", "load:")
	t.Contains("top, not a terminal", t.Must("vm", "top").stdout, "NAME", "HISTORY", "web")

	// Health and ping, and the codes of what cannot answer.
	t.Contains("health", t.Must("vm", "health", "web").stdout, "vm web is healthy: agent 0.1.0-dev")
	t.Contains("ping", t.Must("vm", "ping", "web").stdout, "pong from web in")
	t.MustFail(1, "not found", "vm", "ping", "nope")
	var v api.VM
	t.JSON(&v, "vm", "show", "web")
	if err := syscall.Kill(v.PID, syscall.SIGSTOP); err != nil { // the guest freezes; its VMM stays
		t.Fatalf("%v", err)
	}
	r := t.Banger("vm", "health", "web")
	_ = syscall.Kill(v.PID, syscall.SIGCONT)
	if r.code != 1 || !strings.Contains(r.stderr, "did not answer within") {
		t.Fatalf("health of a frozen VM: %s", r)
	}
	// And back: the thawed guest (still under load, its timers catching
	// up) answers again; how soon is not this check's business.
	t.Eventually("health after the thaw", time.Minute, func() bool { return t.Banger("vm", "health", "web").code == 0 })
	t.Must("vm", "stop", "web")
	t.MustFail(1, "not running", "vm", "health", "web")
	t.MustFail(1, "not running", "vm", "stats", "web")
	t.Must("vm", "delete", "web")
}

// vmAutoStop: two VMs with a short auto-stop; the one with an open ssh
// session stays up, the idle one is stopped with the reason and time in
// `vm show` and a line in the daemon's log.
func vmAutoStop(t *T) {
	start := time.Now()
	t.statsConfig()
	reg := t.bootable()
	ref := reg + "/smoke/busybox:idle"
	t.Push(ref, t.busyboxImage())
	for _, name := range []string{"idle", "twin"} {
		t.Must("vm", "create", "--name", name, "--image", ref, "--cpus", "1", "--memory", "256M")
	}
	// An ssh session into twin, open for the whole test.
	ssh := exec.Command("nsenter", "--net=/run/netns/"+t.netns, "--", filepath.Join(t.bin, "banger"), "vm", "ssh", "twin", "--", "sleep", "600")
	ssh.Env = t.env()
	if err := ssh.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	t.defer_(func() { _ = ssh.Process.Kill(); _ = ssh.Wait() })
	t.Eventually("twin's ssh session is open", time.Minute, func() bool {
		var st api.VMStats
		t.JSON(&st, "vm", "stats", "twin")
		return st.Sessions > 0
	})
	for _, name := range []string{"idle", "twin"} {
		t.Must("vm", "set", name, "--auto-stop", "15s")
	}
	var v api.VM
	t.Eventually("idle is stopped", 3*time.Minute, func() bool {
		v = api.VM{}
		t.JSON(&v, "vm", "show", "idle")
		return v.State == api.VMStopped
	})
	if !strings.Contains(v.Reason, "stopped automatically: idle for") || v.StoppedAt == nil {
		t.Fatalf("idle after its auto-stop: %+v", v)
	}
	t.Contains("vm show", t.Must("vm", "show", "idle").stdout, "stopped automatically", "stopped:")
	var twin api.VM
	t.JSON(&twin, "vm", "show", "twin")
	if twin.State != api.VMRunning {
		t.Fatalf("twin, with an open ssh session, was stopped: %+v", twin)
	}
	log, _ := os.ReadFile(filepath.Join(t.Home(), "logs", "bangerd.log"))
	t.Contains("daemon log", string(log), "vm auto-stopped")
	_ = ssh.Process.Kill()

	// The same told as events, kept across a daemon restart.
	want := []string{api.EventVMCreated, api.EventVMStarted, api.EventVMStopped + " stopped automatically: idle for"}
	t.sawEvents("idle", start, want)
	t.KillDaemon()
	t.StartDaemon()
	t.sawEvents("idle", start, want)
	// Followed: the deletes, as they happen (from start on, so a delete
	// before the follower is in is not missed).
	follow := exec.Command(filepath.Join(t.bin, "banger"), "events", "--json", "--type", api.EventVMDeleted,
		"--since", start.Format(time.RFC3339Nano))
	follow.Env = t.env()
	out, err := follow.StdoutPipe()
	if err != nil {
		t.Fatalf("%v", err)
	}
	if err := follow.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	t.defer_(func() { _ = follow.Process.Kill(); _ = follow.Wait() })
	lines := make(chan api.Event, 4)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var e api.Event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				lines <- e
			}
		}
		close(lines)
	}()
	t.Must("vm", "delete", "--force", "idle", "twin")
	deleted := map[string]bool{}
	for len(deleted) < 2 {
		select {
		case e, ok := <-lines:
			if !ok {
				t.Fatalf("banger events ended early")
			}
			deleted[e.VM] = e.Type == api.EventVMDeleted
		case <-time.After(time.Minute):
			t.Fatalf("banger events did not show both deletes: %v", deleted)
		}
	}
	if !deleted["idle"] || !deleted["twin"] {
		t.Fatalf("followed %v", deleted)
	}
	t.sawEvents("idle", start, append(want, api.EventVMDeleted))
	t.MustFail(1, "no event type", "events", "--type", "vm.exploded", "--no-follow")
}

// sawEvents checks that the kept events of vm since start are want, in
// order: each a type, and after a space the start of its reason.
func (t *T) sawEvents(vm string, start time.Time, want []string) {
	var got struct{ Events []api.Event }
	t.JSON(&got, "events", "--no-follow", "--vm", vm, "--since", start.Format(time.RFC3339Nano))
	var seen []string
	for _, e := range got.Events {
		seen = append(seen, e.Type+" "+e.Reason)
	}
	if len(seen) != len(want) {
		t.Fatalf("events of %s: %q, want %q", vm, seen, want)
	}
	for i, w := range want {
		if !strings.HasPrefix(seen[i], w) {
			t.Fatalf("events of %s: %q, want %q", vm, seen, want)
		}
	}
}

// vmPorts is `vm ports NAME ARGS --json`, by port.
func (t *T) vmPorts(name string, args ...string) map[int]api.VMPort {
	var r api.VMPortsResult
	t.JSON(&r, append([]string{"vm", "ports", name}, args...)...)
	out := map[int]api.VMPort{}
	for _, p := range r.Ports {
		out[p.Port] = p
	}
	return out
}

// httpGet fetches / from addr in the scenario's namespace, within
// timeout, and returns the response.
func (t *T) httpGet(addr string, timeout time.Duration) string {
	c, err := networld.Dial(t.netns, "tcp", addr)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET / HTTP/1.0\r\n\r\n")
	_ = c.SetDeadline(time.Now().Add(timeout))
	var resp strings.Builder
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		resp.WriteString(sc.Text() + "\n")
	}
	return resp.String()
}

// vmIdleSuspend: an idle VM whose idle action is suspend is suspended by
// the sweep, saying why; a connection to its forwarded port wakes it and
// is served; idle again, vm exec wakes it.
func vmIdleSuspend(t *T) {
	t.statsConfig()
	reg := t.bootable()
	ref := reg + "/smoke/ports:idle"
	t.Push(ref, t.portsImage())
	t.Must("vm", "create", "--name", "web", "--image", ref, "--cpus", "1", "--memory", "256M")
	t.Must("vm", "exec", "web", "--", "/bin/busybox", "sh", "-c", "/bin/busybox httpd -f -p 8080 -h /www </dev/null >/dev/null 2>&1 &")
	var fwd string
	t.Eventually("httpd listens, forwarded", time.Minute, func() bool {
		var r api.VMPortsResult
		t.JSON(&r, "vm", "ports", "web", "--forward")
		for _, p := range r.Ports {
			if p.Port == 8080 && p.Forward != "" {
				fwd = p.Forward
			}
		}
		return fwd != ""
	})
	t.Contains("vm set", t.Must("vm", "set", "web", "--auto-stop", "10s", "--idle-action", "suspend").stdout, "idle action suspend")
	state := func() api.VM {
		var v api.VM
		t.JSON(&v, "vm", "show", "web")
		return v
	}
	t.Eventually("web is suspended once idle", 3*time.Minute, func() bool { return state().State == api.VMSuspended })
	if v := state(); !strings.Contains(v.Reason, "suspended automatically: idle for") {
		t.Fatalf("suspended: %+v", v)
	}
	// A connection to its forwarded port wakes it, and is served.
	t.Contains("GET through the forward of a suspended VM", t.httpGet(fwd, 2*time.Minute), "200", "hello from busybox httpd")
	if v := state(); v.State != api.VMRunning {
		t.Fatalf("after a connection to its forward: %+v", v)
	}
	t.Eventually("web is suspended again once idle", 3*time.Minute, func() bool { return state().State == api.VMSuspended })
	t.Contains("vm exec wakes it", t.Must("vm", "exec", "web", "--", "echo", "awake").stdout, "awake")
	t.Must("vm", "delete", "--force", "web")
}
