package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"

	"github.com/bangerdev/banger/api"
)

// vmLifecycle takes one VM through create, exec, stop, start, a daemon
// killed with SIGKILL and restarted (the VM keeps running and is taken
// back), and delete; with the refusals on the way: a duplicate name, a
// running VM deleted without --force, a network that does not exist.
func vmLifecycle(t *T) {
	reg := t.bootable()
	ref := reg + "/smoke/busybox:vm"
	t.Push(ref, t.busyboxImage())

	var v api.VM
	t.JSON(&v, "vm", "create", "--name", "box", "--image", ref, "--cpus", "1", "--memory", "256M", "--disk", "1G", "--network", "none")
	if v.Name != "box" || v.State != api.VMRunning || v.Image == "" || v.DiskSize != 1<<30 || v.PID == 0 {
		t.Fatalf("created vm = %+v", v)
	}
	t.MustFail(1, `vm "box" already exists`, "vm", "create", "--name", "box", "--image", ref)
	t.MustFail(1, "use bridge, user or none", "vm", "create", "--image", ref, "--network", "wifi")
	t.MustFail(1, "VM name", "vm", "create", "--name", "Bad_Name", "--image", ref)
	t.MustFail(1, "in use by 1 running VM", "image", "delete", ref)
	t.MustFail(1, "in use", "kernel", "delete", v.Kernel)

	r := t.Banger("vm", "exec", "box", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("exec = %s", r)
	}
	t.Contains("hostname", t.Must("vm", "exec", "box", "--", "uname", "-n").stdout, "box")
	// The kernel's whole module tree, from its read-only disk: a module
	// the initramfs does not carry loads, its dependencies too; and the
	// agent mounted cgroup2.
	t.Contains("modprobe", t.Must("vm", "exec", "box", "--", "sh", "-c", "busybox modprobe br_netfilter && cut -d' ' -f1 /proc/modules; grep cgroup2 /proc/mounts").stdout,
		"br_netfilter\n", "bridge\n", "cgroup2 /sys/fs/cgroup")
	t.Contains("ps", t.Must("ps").stdout, "box", "running")
	var list api.VMListResult
	t.JSON(&list, "vm", "list")
	if len(list.VMs) != 1 || list.VMs[0].Name != "box" {
		t.Fatalf("vm list = %+v", list)
	}

	// ssh through the agent: the VM has no network at all.
	r = t.Banger("vm", "ssh", "box", "--", "sh", "-c", "echo via ssh; exit 7")
	if r.code != 7 || r.stdout != "via ssh\n" {
		t.Fatalf("vm ssh = %s", r)
	}
	t.MustFail(1, "not found", "vm", "ssh", "nosuch", "--", "true")
	cfg := filepath.Join(t.Home(), "ssh_config")
	if err := os.WriteFile(cfg, []byte(t.Must("vm", "ssh-config").stdout), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	payload := filepath.Join(t.Home(), "payload")
	data := bytes.Repeat([]byte("banger scp\x00\xff"), 40000)
	if err := os.WriteFile(payload, data, 0o640); err != nil {
		t.Fatalf("%v", err)
	}
	t.Run("scp", "-F", cfg, "-q", payload, "box.vm:/root/payload")
	t.Run("scp", "-F", cfg, "-q", "box.vm:/root/payload", payload+".back")
	if back, err := os.ReadFile(payload + ".back"); err != nil || !bytes.Equal(back, data) {
		t.Fatalf("scp round trip: %d bytes back of %d, %v", len(back), len(data), err)
	}

	t.MustFail(1, "is running", "vm", "delete", "box")
	t.Contains("stop", t.Must("vm", "stop", "box").stdout, "stopped vm box (stopped)")
	v = api.VM{} // omitted fields must not keep old values
	t.JSON(&v, "vm", "show", "box")
	if v.State != api.VMStopped || !strings.Contains(v.Reason, "banger vm stop") || v.PID != 0 {
		t.Fatalf("stopped vm = %+v", v)
	}
	t.MustFail(1, "not running", "vm", "exec", "box", "--", "true")
	t.MustFail(1, "not running", "vm", "ssh", "box", "--", "true")
	t.Contains("start", t.Must("vm", "start", "box").stdout, "started vm box (running)")
	t.Must("vm", "exec", "box", "--", "sh", "-c", "echo kept > /root/state")

	// The daemon dies hard; the VM does not, and the next daemon takes
	// it back.
	v = api.VM{} // omitted fields must not keep old values
	t.JSON(&v, "vm", "show", "box")
	vmmPID := v.PID
	t.KillDaemon()
	if syscall.Kill(vmmPID, 0) != nil {
		t.Fatalf("the VMM (pid %d) died with the daemon", vmmPID)
	}
	t.StartDaemon()
	v = api.VM{} // omitted fields must not keep old values
	t.JSON(&v, "vm", "show", "box")
	if v.State != api.VMRunning || v.PID != vmmPID {
		t.Fatalf("after a daemon restart: %+v (VMM was pid %d)", v, vmmPID)
	}
	t.Contains("exec after restart", t.Must("vm", "exec", "box", "--", "cat", "/root/state").stdout, "kept")
	t.Contains("ssh after restart", t.Must("vm", "ssh", "box", "--", "cat", "/root/state").stdout, "kept")
	t.Contains("logs", t.Must("vm", "logs", "box", "--tail", "50").stdout, "banger-agent: boot:")

	t.Contains("delete --force", t.Must("vm", "delete", "--force", "box").stdout, "deleted vm box")
	t.Eventually("the VMM ends", time.Minute, func() bool { return syscall.Kill(vmmPID, 0) != nil || isZombie(vmmPID) })
	t.JSON(&list, "vm", "list")
	if len(list.VMs) != 0 {
		t.Fatalf("vms left: %+v", list.VMs)
	}
	t.MustFail(1, "not found", "vm", "show", "box")
}

// vmRun: a throwaway VM for one command, whose exit code passes through
// and which leaves nothing behind; a detached one, then reused by name; a
// VM that cannot come up is kept, failed, with its reason.
func vmRun(t *T) {
	reg := t.bootable()
	ref := reg + "/smoke/busybox:run"
	t.Push(ref, t.busyboxImage())
	t.Must("image", "pull", ref)

	r := t.Banger("vm", "run", "--rm", "--image", ref, "--memory", "256M", "--", "sh", "-c", "uname -n >&2; exit 5")
	if r.code != 5 || !strings.Contains(r.stderr, "-") { // a generated name: adjective-noun
		t.Fatalf("vm run --rm = %s", r)
	}
	var list api.VMListResult
	t.JSON(&list, "vm", "list")
	if len(list.VMs) != 0 {
		t.Fatalf("vm run --rm left %+v", list.VMs)
	}
	if entries, _ := os.ReadDir(filepath.Join(t.Home(), "state", "vms")); len(entries) != 0 {
		t.Fatalf("vm run --rm left files: %v", entries)
	}

	t.Contains("run -d", t.Must("vm", "run", "-d", "--name", "keep", "--image", ref, "--memory", "256M").stdout, "keep")
	t.Contains("run again", t.Must("vm", "run", "--name", "keep", "--", "cat /proc/1/comm").stdout, "init")
	t.MustFail(1, "workspace /some/path: not a directory", "vm", "run", "/some/path", "--", "true")

	// vm logs -f prints the console, then what comes; Ctrl-C ends it.
	follow := exec.Command(filepath.Join(t.bin, "banger"), "vm", "logs", "-f", "keep")
	follow.Env = t.env()
	var followed syncBuffer
	follow.Stdout = &followed
	if err := follow.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	t.Eventually("vm logs -f prints the console", time.Minute, func() bool { return strings.Contains(followed.String(), "banger-agent: boot:") })
	t.Must("vm", "exec", "keep", "--", "sh", "-c", "echo followed-line > /dev/console")
	t.Eventually("vm logs -f prints new lines", time.Minute, func() bool { return strings.Contains(followed.String(), "followed-line") })
	_ = follow.Process.Signal(os.Interrupt)
	if err := follow.Wait(); err != nil {
		t.Fatalf("vm logs -f after Ctrl-C: %v", err)
	}

	// Sizes change while stopped only; the disk grows with its ext4.
	t.MustFail(1, "only while it is stopped", "vm", "set", "keep", "--cpus", "2")
	t.Must("vm", "set", "keep", "--auto-stop", "30m") // any time
	t.Must("vm", "stop", "keep")
	t.MustFail(1, "only grows", "vm", "set", "keep", "--disk", "100M")
	t.Must("vm", "set", "keep", "--cpus", "2", "--disk", "12G", "--memory", "300M")
	t.Must("vm", "start", "keep")
	t.Contains("cpus after set", t.Must("vm", "exec", "keep", "--", "ls", "/sys/devices/system/cpu").stdout, "cpu1")
	t.Contains("disk after set", t.Must("vm", "exec", "keep", "--", "cat", "/sys/block/vdb/size").stdout, "25165824")
	var v api.VM
	t.JSON(&v, "vm", "show", "keep")
	if v.VCPU != 2 || v.MemoryMiB != 300 || v.AutoStop != "30m" {
		t.Fatalf("after vm set: %+v", v)
	}

	// vm kill ends the VMM at once; prune asks, or takes -f.
	t.Contains("kill", t.Must("vm", "kill", "keep").stdout, "killed vm keep (stopped)")
	v = api.VM{}
	t.JSON(&v, "vm", "show", "keep")
	if v.State != api.VMStopped || !strings.Contains(v.Reason, "SIGKILL") {
		t.Fatalf("after vm kill: %+v", v)
	}
	t.MustFail(1, "pass -f", "vm", "prune")
	t.Contains("prune", t.Must("vm", "prune", "-f").stdout, "deleted 1 VM(s): keep")

	// Outbound connections from a user-mode VM are opt-in, and never to
	// the host's loopback (which QEMU's own user networking maps to
	// 10.0.2.2: with --nat, passt carries the VM). The servers are in the
	// scenario's namespace, where QEMU and passt are, and beyond it.
	outside := t.Outside()
	web := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "reached the host") }))
	web.Listener.Close()
	web.Listener = t.ListenInNetns("127.0.0.1:0")
	web.Start()
	defer web.Close()
	loopback := fmt.Sprintf("http://10.0.2.2:%d/", web.Listener.Addr().(*net.TCPAddr).Port)
	wget := func(url string) []string {
		return []string{"--", "/bin/busybox", "timeout", "10", "/bin/busybox", "wget", "-qO-", url}
	}
	t.Must("vm", "create", "--name", "sandboxed", "--image", ref, "--memory", "256M", "--network", "user")
	t.Must("vm", "create", "--name", "open", "--image", ref, "--memory", "256M", "--network", "user", "--nat")
	for _, vm := range []string{"sandboxed", "open"} {
		if r := t.Banger(append([]string{"vm", "exec", vm}, wget(loopback)...)...); r.code == 0 {
			t.Fatalf("%s reached the host's loopback: %s", vm, r)
		}
	}
	if r := t.Banger(append([]string{"vm", "exec", "sandboxed"}, wget(outside)...)...); r.code == 0 {
		t.Fatalf("a VM without --nat reached the outside: %s", r)
	}
	t.Contains("--nat", t.Must(append([]string{"vm", "exec", "open"}, wget(outside)...)...).stdout, "hello from outside")
	t.Must("vm", "delete", "--force", "sandboxed", "open")

	// A kernel that cannot boot: the VM is kept as failed, with the reason.
	mods := filepath.Join(t.Home(), "lib", "modules", "6.1.0-fake")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	t.Must("kernel", "import", "--kernel", "/bin/busybox", "--modules", mods, "--name", "broken")
	t.MustFail(1, "PVH ELF Note", "vm", "run", "--rm", "--name", "doomed", "--image", ref, "--kernel", "broken", "--", "true")
	v = api.VM{}
	t.JSON(&v, "vm", "show", "doomed")
	if v.State != api.VMFailed || !strings.Contains(v.Reason, "PVH ELF Note") {
		t.Fatalf("failed vm = %+v", v)
	}
	t.Must("vm", "delete", "doomed")
	t.Must("kernel", "delete", "broken")
}

// syncBuffer is a buffer a child process writes while the scenario reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// vmBridge runs a root daemon's bridge network inside a namespace of the
// scenario's own: two VMs reach each other by name and the host; a
// sandboxed VM reaches nothing beyond, one with --nat does; the host
// resolves NAME.vm; a daemon killed with SIGKILL comes back to find its
// VM running, and removes what a VM that died meanwhile left (its tap,
// and a stray rule); leases are kept across stop and start and freed on
// delete; nothing is left when the VMs go.
func vmBridge(t *T) {
	outside := t.Outside()
	ref := t.bridgeBusybox("10.77.0.0/24")
	const table = "banger-banger0"

	var a, b api.VM
	t.JSON(&a, "vm", "create", "--name", "a", "--image", ref, "--cpus", "1", "--memory", "256M")
	t.JSON(&b, "vm", "create", "--name", "b", "--image", ref, "--cpus", "1", "--memory", "256M", "--nat")
	if a.Network != api.NetworkBridge || a.IP != "10.77.0.2" || b.IP != "10.77.0.3" {
		t.Fatalf("bridge VMs: a %s %s, b %s", a.Network, a.IP, b.IP)
	}
	bb := func(vm string, args ...string) run {
		return t.Banger(append([]string{"vm", "exec", vm, "--", "/bin/busybox"}, args...)...)
	}
	mustBB := func(vm string, args ...string) string {
		r := bb(vm, args...)
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		return r.stdout
	}
	// Each reaches the other by name, through the daemon's DNS; the host
	// itself answers neither (only its DNS server is open to VMs).
	t.Contains("a pings b.vm", mustBB("a", "ping", "-c", "1", "-W", "10", "b.vm"), "10.77.0.3", "1 packets received")
	t.Contains("b pings a.vm", mustBB("b", "ping", "-c", "1", "-W", "10", "a.vm"), "10.77.0.2", "1 packets received")
	if r := bb("a", "ping", "-c", "1", "-W", "3", "10.77.0.1"); r.code == 0 {
		t.Fatalf("a VM pinged the host: %s", r)
	}
	// The host resolves NAME.vm at the bridge's address, and reaches the
	// VM: the agent's SSH server answers on port 22.
	addrs, err := t.Lookup("10.77.0.1", "a.vm.")
	if err != nil || len(addrs) != 1 || addrs[0] != "10.77.0.2" {
		t.Fatalf("a.vm from the host = %v, %v", addrs, err)
	}
	if _, err := t.Lookup("10.77.0.1", "nope.vm."); err == nil {
		t.Fatalf("nope.vm resolved")
	}
	if banner, err := t.DialInNetns("10.77.0.2:22"); err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
		t.Fatalf("the host to a:22: %q, %v", banner, err)
	}
	// A guest that takes another address gets nowhere with it: frames
	// from its tap must carry its own MAC and leased address.
	mustBB("a", "ip", "addr", "add", "10.77.0.50/24", "dev", "eth0")
	if r := bb("a", "ping", "-c", "1", "-W", "5", "-I", "10.77.0.50", "10.77.0.3"); r.code == 0 {
		t.Fatalf("a spoofed source address reached b: %s", r)
	}
	mustBB("a", "ip", "addr", "del", "10.77.0.50/24", "dev", "eth0")
	t.Contains("a pings b again", mustBB("a", "ping", "-c", "1", "-W", "10", "10.77.0.3"), "1 packets received")
	// Outbound: b (--nat) reaches the outside, a (sandbox) does not, and
	// its DNS queries for other names are refused.
	wget := []string{"timeout", "10", "/bin/busybox", "wget", "-qO-", outside}
	t.Contains("b reaches outside", mustBB("b", wget...), "hello from outside to 198.51.100.1:") // masqueraded
	if r := bb("a", wget...); r.code == 0 {
		t.Fatalf("a sandboxed VM reached the outside: %s", r)
	}
	if r := bb("a", "nslookup", "example.com"); r.code == 0 {
		t.Fatalf("a sandboxed VM resolved an outside name: %s", r)
	}
	// One tap per VM; NAT rules for b only.
	if taps, want := t.Taps(), slices.Sorted(slices.Values([]string{"bg-" + a.ID[:12], "bg-" + b.ID[:12]})); !slices.Equal(taps, want) {
		t.Fatalf("taps = %v", taps)
	}
	// Per-VM rules in the shared chains: the way out and to the host for
	// each (logged), masquerading for b.
	owned := func() []string {
		var out []string
		for _, c := range t.RuleComments(table) {
			chain, owner, _ := strings.Cut(c, ": banger vm=")
			if owner != "" && slices.Contains([]string{"egress", "to-host", "isolation", "postrouting"}, chain) && !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
		return out
	}
	rulesOf := func(vms ...api.VM) []string {
		var want []string
		for _, v := range vms {
			want = append(want, "egress: banger vm="+v.ID, "to-host: banger vm="+v.ID)
			if v.NAT {
				want = append(want, "postrouting: banger vm="+v.ID)
			}
		}
		slices.Sort(want)
		return want
	}
	if got := owned(); !slices.Equal(got, rulesOf(a, b)) {
		t.Fatalf("per-VM rules = %v; want %v", got, rulesOf(a, b))
	}
	if got := t.RuleCommentsOf(nftables.TableFamilyBridge, table); len(got) != 8 {
		t.Fatalf("anti-spoofing rules = %v; want four per VM", got)
	}
	// Nothing but IPv4 and ARP leaves a tap: to an all-nodes ping only
	// the guest itself answers; the host's bridge and VM b (their
	// link-local addresses) would show as duplicates.
	if r := bb("a", "ping", "-6", "-c", "2", "-W", "2", "ff02::1%eth0"); strings.Contains(r.stdout, "DUP") {
		t.Fatalf("a VM reached the host or another VM over IPv6: %s", r)
	}

	// The daemon dies hard; a's VMM dies too while it is down, and a
	// stray tap and rule appear. The next daemon keeps b, and removes
	// what no live VM owns.
	t.KillDaemon()
	_ = syscall.Kill(a.PID, syscall.SIGKILL)
	t.Eventually("a's VMM dies", time.Minute, func() bool { return syscall.Kill(a.PID, 0) != nil || isZombie(a.PID) })
	// The stray tap is marked as this daemon's (a VM it no longer has);
	// a tap named as a VM's but not banger's (unmarked, on no bridge)
	// is someone else's and must be left alone.
	const stray, foreign = "57575757575757575757575757575757", "bg-c0ffeec0ffee"
	t.AddStray(table, stray)
	t.AddForeignTap(foreign)
	t.StartDaemon()
	a, b = api.VM{}, api.VM{}
	t.JSON(&a, "vm", "show", "a")
	t.JSON(&b, "vm", "show", "b")
	if a.State != api.VMStopped || b.State != api.VMRunning {
		t.Fatalf("after the restart: a %s, b %s", a.State, b.State)
	}
	if taps := t.Taps(); !slices.Equal(taps, slices.Sorted(slices.Values([]string{"bg-" + b.ID[:12], foreign}))) {
		t.Fatalf("taps after the restart = %v; want b's and the foreign one only", taps)
	}
	if got := owned(); !slices.Equal(got, rulesOf(b)) {
		t.Fatalf("per-VM rules after the restart = %v; want %v", got, rulesOf(b))
	}
	t.Contains("b still reaches outside", mustBB("b", wget...), "hello from outside")
	if addrs, err := t.Lookup("10.77.0.1", "b.vm."); err != nil || len(addrs) != 1 {
		t.Fatalf("b.vm after the restart = %v, %v", addrs, err)
	}

	// a comes back on its lease.
	t.Must("vm", "start", "a")
	a = api.VM{}
	t.JSON(&a, "vm", "show", "a")
	if a.IP != "10.77.0.2" {
		t.Fatalf("a restarted on %s; its lease is 10.77.0.2", a.IP)
	}
	t.Contains("b pings a.vm again", mustBB("b", "ping", "-c", "1", "-W", "10", "a.vm"), "1 packets received")

	// Delete frees the lease: the next VM gets a's address.
	t.Must("vm", "delete", "--force", "a")
	var c api.VM
	t.JSON(&c, "vm", "create", "--name", "c", "--image", ref, "--cpus", "1", "--memory", "256M", "--no-start")
	if c.IP != "10.77.0.2" {
		t.Fatalf("c leased %s; a's freed 10.77.0.2 comes first", c.IP)
	}
	t.Must("vm", "delete", "--force", "b", "c")
	if taps := t.Taps(); !slices.Equal(taps, []string{foreign}) {
		t.Fatalf("taps left after delete: %v; want the foreign one alone", taps)
	}
	t.DelLink(foreign)
	for _, c := range t.RuleComments(table) {
		if strings.Contains(c, "banger vm=") {
			t.Fatalf("per-VM rules left after delete: %v", t.RuleComments(table))
		}
	}
	if got := t.RuleCommentsOf(nftables.TableFamilyBridge, table); len(got) != 0 {
		t.Fatalf("anti-spoofing rules left after delete: %v", got)
	}
}

// vmSuspend: a suspended VM has no QEMU and a saved state on disk, stays
// suspended across kill -9 of the daemon, and vm exec brings it back with
// what it held in memory: a file on a tmpfs, a process still counting.
func vmSuspend(t *T) {
	reg := t.bootable()
	ref := reg + "/smoke/busybox:suspend"
	t.Push(ref, t.busyboxImage())
	t.Must("vm", "create", "--name", "sleepy", "--image", ref, "--cpus", "1", "--memory", "256M")
	t.Must("vm", "exec", "sleepy", "--", "sh", "-c", "echo kept > /run/before && "+
		"(i=0; while true; do i=$((i+1)); echo $i > /run/n; sleep 0.2; done) </dev/null >/dev/null 2>&1 &")
	var v api.VM
	t.JSON(&v, "vm", "show", "sleepy")
	pid := v.PID
	t.Contains("vm suspend", t.Must("vm", "suspend", "sleepy").stdout, "suspended")
	suspended := func(when string) {
		var s api.VM
		t.JSON(&s, "vm", "show", "sleepy")
		if s.State != api.VMSuspended || s.PID != 0 || s.StateBytes == 0 {
			t.Fatalf("%s: %+v", when, s)
		}
	}
	suspended("after vm suspend")
	if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
		t.Fatalf("QEMU (pid %d) still runs while suspended", pid)
	}
	t.Contains("vm show", t.Must("vm", "show", "sleepy").stdout, "saved state", "no host memory")
	t.KillDaemon()
	t.StartDaemon()
	suspended("after kill -9 of the daemon")

	// vm exec resumes it, as it was.
	t.Contains("the tmpfs file", t.Must("vm", "exec", "sleepy", "--", "cat", "/run/before").stdout, "kept")
	count := func() int {
		n, _ := strconv.Atoi(strings.TrimSpace(t.Must("vm", "exec", "sleepy", "--", "cat", "/run/n").stdout))
		return n
	}
	first := count()
	t.Eventually("the guest's counter goes on", time.Minute, func() bool { return count() > first })
	t.JSON(&v, "vm", "show", "sleepy")
	if v.State != api.VMRunning || v.StateBytes != 0 {
		t.Fatalf("after the resume: %+v", v)
	}
	t.Must("vm", "suspend", "sleepy")
	t.Contains("vm resume", t.Must("vm", "resume", "sleepy").stdout, "resumed")
	t.Contains("after vm resume", t.Must("vm", "exec", "sleepy", "--", "cat", "/run/before").stdout, "kept")
	var got struct{ Events []api.Event }
	t.JSON(&got, "events", "--no-follow", "--vm", "sleepy", "--type", api.EventVMSuspended, "--type", api.EventVMResumed)
	if len(got.Events) != 4 {
		t.Fatalf("suspend and resume events: %+v", got.Events)
	}
	t.Must("vm", "delete", "--force", "sleepy")
}
