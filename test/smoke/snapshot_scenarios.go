package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/api"
)

// identity is what must differ between two VMs restored from one
// template, read from inside each.
type identity struct {
	hostname, machineID, hostKey, random, mac, addr, bootID string
}

func (t *T) identityOf(vm string) identity {
	read := func(script string) string {
		return strings.TrimSpace(t.Must("vm", "exec", vm, "--", "/bin/busybox", "sh", "-c", script).stdout)
	}
	return identity{
		hostname:  read("hostname"),
		machineID: read("cat /etc/machine-id"),
		hostKey:   read("sha256sum /etc/banger/ssh_host_ed25519_key | cut -d' ' -f1"),
		random:    read("head -c 32 /dev/urandom | sha256sum | cut -d' ' -f1"),
		mac:       read("cat /sys/class/net/eth0/address"),
		addr:      read("ip -4 -o addr show eth0 | awk '{print $4}'"),
		bootID:    read("cat /proc/sys/kernel/random/boot_id"),
	}
}

// vmWarm: `image warm` makes a template; two VMs created from it start
// from it (the same kernel boot: one boot_id) and each is its own: its
// hostname, machine-id (its VM ID), SSH host key (and ssh trusts it),
// random numbers, MAC and bridge address. --cold boots; deleting the
// image removes its templates.
func vmWarm(t *T) {
	ref := t.bridgeBusybox("10.81.0.0/24")
	shape := []string{"--cpus", "1", "--memory", "256M"}
	t.Contains("image warm", t.Must(append([]string{"image", "warm", ref}, shape...)...).stdout, "template", "ready", "nic tap")
	templates := filepath.Join(t.Home(), "state", "templates")
	var tl api.TemplateListResult
	t.JSON(&tl, "image", "templates")
	if entries, _ := os.ReadDir(templates); len(entries) != 1 || len(tl.Templates) != 1 || tl.Templates[0].Image != ref || tl.Templates[0].NIC != "tap" {
		t.Fatalf("templates after image warm: %v, %+v", entries, tl)
	}
	t.Contains("image templates", t.Must("image", "templates").stdout, "MEMORY SAVED", ref, "1 cpus, 256 MiB")
	for _, name := range []string{"twin-a", "twin-b"} {
		t.Must(append([]string{"vm", "create", "--name", name, "--image", ref}, shape...)...)
	}
	// Restored, not booted: their consoles have no kernel boot.
	for _, name := range []string{"twin-a", "twin-b"} {
		logs := t.Must("vm", "logs", name).stdout
		t.Contains(name+"'s console", logs, `restored from a saved state as "`+name+`"`)
		if strings.Contains(logs, "Linux version") {
			t.Fatalf("%s booted instead of starting from the template:\n%s", name, logs)
		}
	}
	a, b := t.identityOf("twin-a"), t.identityOf("twin-b")
	var va, vb api.VM
	t.JSON(&va, "vm", "show", "twin-a")
	t.JSON(&vb, "vm", "show", "twin-b")
	for _, c := range []struct {
		vm   string
		got  identity
		v    api.VM
		name string
	}{{"twin-a", a, va, "twin-a"}, {"twin-b", b, vb, "twin-b"}} {
		if c.got.hostname != c.name || c.got.machineID != c.v.ID || c.got.addr != c.v.IP+"/24" {
			t.Fatalf("%s took another identity: %+v (its record: id %s, ip %s)", c.vm, c.got, c.v.ID, c.v.IP)
		}
	}
	for what, pair := range map[string][2]string{
		"SSH host key": {a.hostKey, b.hostKey}, "random numbers": {a.random, b.random},
		"MAC": {a.mac, b.mac}, "address": {a.addr, b.addr}, "machine-id": {a.machineID, b.machineID}, "boot_id": {a.bootID, b.bootID},
	} {
		if pair[0] == pair[1] || pair[0] == "" {
			t.Fatalf("twin-a and twin-b share their %s: %q", what, pair[0])
		}
	}
	// ssh checks the host key the daemon learnt after the restore.
	t.Contains("ssh into a restored VM", t.Must("vm", "ssh", "twin-b", "--", "hostname").stdout, "twin-b")
	// The bridge passes each its own address: a reaches b.
	t.Must("vm", "exec", "twin-a", "--", "/bin/busybox", "ping", "-c", "1", "-W", "5", vb.IP)

	t.Must(append([]string{"vm", "create", "--name", "cold", "--cold", "--image", ref}, shape...)...)
	t.Contains("a cold VM's console", t.Must("vm", "logs", "cold").stdout, "Linux version")
	for _, name := range []string{"twin-a", "twin-b", "cold"} {
		t.Must("vm", "delete", "--force", name)
	}
	t.Must("image", "delete", ref)
	if entries, _ := os.ReadDir(templates); len(entries) != 0 {
		t.Fatalf("templates left after the image was deleted: %v", entries)
	}
}

// vmCheckpoint: a checkpoint taken, the VM changed, rolled back: the
// change is gone (disk and memory), the checkpoint stays; one of
// another shape is refused with the reason.
func vmCheckpoint(t *T) {
	reg := t.bootable()
	ref := reg + "/smoke/busybox:checkpoint"
	t.Push(ref, t.busyboxImage())
	t.Must("vm", "create", "--name", "cp", "--image", ref, "--cpus", "1", "--memory", "256M")
	t.Must("vm", "exec", "cp", "--", "sh", "-c", "echo before > /root/disk && echo before > /run/mem")
	t.Contains("snapshot create", t.Must("vm", "snapshot", "create", "cp", "clean").stdout, "saved clean of cp")
	t.Must("vm", "exec", "cp", "--", "sh", "-c", "echo after > /root/disk && echo after > /run/mem && touch /root/new")
	var l api.SnapshotListResult
	t.JSON(&l, "vm", "snapshot", "list", "cp")
	if len(l.Snapshots) != 1 || l.Snapshots[0].Tag != "clean" || l.Snapshots[0].StateBytes == 0 || l.Snapshots[0].DiskUsed == 0 {
		t.Fatalf("snapshot list: %+v", l)
	}
	t.Contains("snapshot list", t.Must("vm", "snapshot", "list", "cp").stdout, "TAG", "clean")
	t.MustFail(1, "already exists", "vm", "snapshot", "create", "cp", "clean")
	t.MustFail(1, "snapshot tag", "vm", "snapshot", "create", "cp", "../x")
	t.MustFail(1, "no snapshot", "vm", "snapshot", "restore", "cp", "nosuch")

	t.Contains("snapshot restore", t.Must("vm", "snapshot", "restore", "cp", "clean").stdout, "rolled back to snapshot clean")
	got := t.Must("vm", "exec", "cp", "--", "sh", "-c", "cat /root/disk /run/mem; ls /root/new 2>&1 || true").stdout
	t.Contains("after the rollback", got, "before\nbefore\n", "No such file")
	// Twice from the same checkpoint.
	t.Must("vm", "exec", "cp", "--", "sh", "-c", "echo again > /root/disk")
	t.Must("vm", "snapshot", "restore", "cp", "clean")
	t.Contains("second rollback", t.Must("vm", "exec", "cp", "--", "cat", "/root/disk").stdout, "before")

	// Another shape cannot load it, and says why.
	t.Must("vm", "stop", "cp")
	t.Must("vm", "set", "cp", "--memory", "320M")
	t.MustFail(1, "memory (MiB) 256", "vm", "snapshot", "restore", "cp", "clean")
	t.Must("vm", "start", "cp")
	t.Contains("boots after a refused rollback", t.Must("vm", "exec", "cp", "--", "cat", "/root/disk").stdout, "before")

	t.Contains("snapshot delete", t.Must("vm", "snapshot", "delete", "cp", "clean").stdout, "deleted clean")
	t.JSON(&l, "vm", "snapshot", "list", "cp")
	if len(l.Snapshots) != 0 {
		t.Fatalf("after delete: %+v", l)
	}
	t.Must("vm", "delete", "--force", "cp")
}

// vmFork: a fork of 2 of a running VM: both answer with their own name
// and a counter that kept counting from the original's; a write in one
// is not in the other nor in the original, which runs on.
func vmFork(t *T) {
	reg := t.bootable()
	ref := reg + "/smoke/busybox:fork"
	t.Push(ref, t.busyboxImage())
	t.Must("vm", "create", "--name", "orig", "--image", ref, "--cpus", "1", "--memory", "256M")
	t.Must("vm", "exec", "orig", "--", "sh", "-c", "echo shared > /root/f && "+
		"(i=0; while true; do i=$((i+1)); echo $i > /run/n; sleep 0.2; done) </dev/null >/dev/null 2>&1 &")
	var res api.VMForkResult
	t.JSON(&res, "vm", "fork", "orig", "--count", "2")
	if len(res.VMs) != 2 || res.VMs[0].Name != "orig-fork-1" || res.VMs[1].Name != "orig-fork-2" {
		t.Fatalf("vm fork: %+v", res)
	}
	for _, v := range append(res.VMs, api.VM{Name: "orig"}) {
		t.Contains(v.Name+" hostname", t.Must("vm", "exec", v.Name, "--", "/bin/busybox", "hostname").stdout, v.Name)
		t.Contains(v.Name+" disk", t.Must("vm", "exec", v.Name, "--", "cat", "/root/f").stdout, "shared")
		n := t.Must("vm", "exec", v.Name, "--", "cat", "/run/n").stdout
		t.Eventually(v.Name+"'s counter goes on", time.Minute, func() bool {
			return t.Must("vm", "exec", v.Name, "--", "cat", "/run/n").stdout != n
		})
	}
	t.Must("vm", "exec", "orig-fork-1", "--", "sh", "-c", "echo mine > /root/f")
	for _, name := range []string{"orig-fork-2", "orig"} {
		t.Contains(name+" after a write in orig-fork-1", t.Must("vm", "exec", name, "--", "cat", "/root/f").stdout, "shared")
	}
	t.Contains("orig-fork-1", t.Must("vm", "exec", "orig-fork-1", "--", "cat", "/root/f").stdout, "mine")
	t.MustFail(1, "already exists", "vm", "fork", "orig", "--name", "orig-fork-1")
	t.MustFail(1, "--count 17", "vm", "fork", "orig", "--count", "17")
	if r := t.Must("vm", "list"); strings.Count(r.stdout, "orig") != 3 {
		t.Fatalf("a refused fork left VMs:\n%s", r.stdout)
	}
	for _, name := range []string{"orig", "orig-fork-1", "orig-fork-2"} {
		t.Must("vm", "delete", "--force", name)
	}
}

// vmSuspendKilled: the daemon killed with SIGKILL while a suspend is
// saving; once restarted the VM is running or suspended, never both,
// and answers.
func vmSuspendKilled(t *T) {
	reg := t.bootable()
	ref := reg + "/smoke/busybox:killed"
	t.Push(ref, t.busyboxImage())
	t.Must("vm", "create", "--name", "k", "--image", ref, "--cpus", "1", "--memory", "256M")
	t.Must("vm", "exec", "k", "--", "sh", "-c", "echo kept > /run/f")
	var v api.VM
	t.JSON(&v, "vm", "show", "k")
	partial := filepath.Join(t.Home(), "state", "vms", v.ID, "suspended.partial")
	suspended := make(chan run, 1)
	go func() { suspended <- t.Banger("vm", "suspend", "k") }()
	t.Eventually("the save begins", time.Minute, func() bool {
		_, err := os.Stat(partial)
		return err == nil
	})
	t.KillDaemon()
	<-suspended // cut off with its daemon
	t.StartDaemon()
	t.JSON(&v, "vm", "show", "k")
	qemuAlive := v.PID != 0 && syscall.Kill(v.PID, 0) == nil
	switch {
	case v.State == api.VMRunning && qemuAlive && v.StateBytes == 0:
	case v.State == api.VMSuspended && v.PID == 0 && v.StateBytes > 0:
	default:
		t.Fatalf("after a kill mid-suspend: %+v (QEMU alive: %v)", v, qemuAlive)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Fatalf("a half-saved state is left: %v", err)
	}
	t.Contains("the VM answers", t.Must("vm", "exec", "k", "--", "cat", "/run/f").stdout, "kept")
	t.Must("vm", "delete", "--force", "k")
}

// vmStateRefused: a saved state is valid only for what saved it. The
// agent changes under a suspended VM (as an update brings a new one, so
// the initramfs changes): resuming it is refused with the reason and the
// way out, which works; the template of that shape, stale too, is made
// again by the next create, which still starts from it.
func vmStateRefused(t *T) {
	bin := t.ownBinaries()
	reg := t.bootable()
	ref := reg + "/smoke/busybox:refused"
	t.Push(ref, t.busyboxImage())
	shape := []string{"--image", ref, "--cpus", "1", "--memory", "256M"}
	t.Must(append([]string{"vm", "create", "--name", "s"}, shape...)...)
	t.Must("vm", "suspend", "s")
	t.Must("daemon", "stop")
	// Another agent: the same program with bytes after it (an ELF file
	// runs the same), so another initramfs.
	f, err := os.OpenFile(filepath.Join(bin, "banger-agent"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf("%v", err)
	}
	f.Write([]byte("another build"))
	f.Close()
	t.StartDaemon()
	t.MustFail(1, "it was saved with initramfs", "vm", "resume", "s")
	r := t.MustFail(1, "banger vm stop s", "vm", "exec", "s", "--", "true")
	t.Contains("the way out", r.stderr, "banger vm start s")
	var v api.VM
	t.JSON(&v, "vm", "show", "s")
	if v.State != api.VMSuspended || v.StateBytes == 0 {
		t.Fatalf("a refused resume changed the VM: %+v", v)
	}
	t.Must("vm", "stop", "s")
	t.Must("vm", "start", "s")
	t.Must("vm", "exec", "s", "--", "true")
	// The stale template is made again, and the next VM starts from it.
	t.Must(append([]string{"vm", "create", "--name", "after"}, shape...)...)
	t.Contains("a VM from the remade template", t.Must("vm", "logs", "after").stdout, `restored from a saved state as "after"`)
	for _, name := range []string{"s", "after"} {
		t.Must("vm", "delete", "--force", name)
	}
}
