package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/roottest"
	"github.com/bangerdev/banger/test/networld"
)

// systemHelper runs banger as it is installed: the daemon as an
// unprivileged owner, the root network helper beside it (started here as
// its unit would). The owner's daemon makes a bridge VM with NAT through
// the helper (a tap the owner's QEMU opens, its rules, the DNS socket
// handed over, the firewall's log relayed), which reaches the outside and
// is seen doing it; either process killed with SIGKILL leaves the VM
// running and both carry on; stop and delete leave no tap or rule;
// another user cannot open the daemon's socket.
func systemHelper(t *T) {
	outside := t.Outside()
	owner, other := t.throwawayUser(), t.throwawayUser()
	helperSock := filepath.Join(t.Home(), "helper", "helper.sock")
	cfg := fmt.Sprintf("[network]\nmode = \"bridge\"\ncidr = \"10.81.0.0/24\"\nhelper = %q\n", helperSock)
	if err := os.WriteFile(filepath.Join(t.Home(), "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	if err := chownTree(t.Home(), owner); err != nil {
		t.Fatalf("%v", err)
	}
	startHelper := func() *exec.Cmd {
		cmd := exec.Command("nsenter", "--net=/run/netns/"+t.Netns(), "--", filepath.Join(t.bin, "banger"), "system", "helper",
			"--owner", strconv.Itoa(owner.uid), "--socket", helperSock, "--config", filepath.Join(t.Home(), "config.toml"))
		log, err := os.OpenFile(filepath.Join(t.Home(), "helper.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatalf("%v", err)
		}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting the helper: %v", err)
		}
		go func() { _ = cmd.Wait(); log.Close() }()
		t.Eventually("the helper listens", time.Minute, func() bool {
			_, err := os.Stat(helperSock)
			return err == nil
		})
		return cmd
	}
	helper := startHelper()
	t.defer_(func() { _ = helper.Process.Kill() })

	t.user = &owner
	reg := t.bootable()
	ref := reg + "/smoke/busybox:helper"
	t.Push(ref, t.busyboxImage())
	var v api.VM
	t.JSON(&v, "vm", "create", "--name", "n", "--image", ref, "--cpus", "1", "--memory", "256M", "--nat")
	if v.Network != api.NetworkBridge || v.IP != "10.81.0.2" {
		t.Fatalf("the owner's bridge VM: %+v", v)
	}
	// Nothing of it runs as root: the daemon and QEMU are the owner's.
	for _, pid := range []int{v.PID, t.DaemonPID()} {
		if uid := processUID(pid); uid != owner.uid {
			t.Fatalf("process %d runs as uid %d, not the owner's %d", pid, uid, owner.uid)
		}
	}
	wget := []string{"vm", "exec", "n", "--", "/bin/busybox", "timeout", "10", "/bin/busybox", "wget", "-qO-", outside}
	t.Contains("the owner's VM reaches outside", t.Must(wget...).stdout, "hello from outside to "+networld.Uplink)
	t.Contains("b.vm through the handed-over DNS socket", t.Must("vm", "exec", "n", "--", "/bin/busybox", "nslookup", "n.vm").stdout, "10.81.0.2")
	t.Eventually("the relayed firewall log shows the connection", time.Minute, func() bool {
		return strings.Contains(t.Must("vm", "egress", "n").stdout, networld.Web+":8080")
	})

	// Another user may not even reach the daemon.
	t.user = &other
	if r := t.Banger("daemon", "ping"); r.code == 0 || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("another user's ping: %s", r)
	}
	t.user = &owner

	// The helper dies hard: the VM runs on; a new helper serves the
	// daemon as if nothing happened.
	_ = helper.Process.Kill()
	t.Eventually("the helper dies", time.Minute, func() bool { return syscall.Kill(helper.Process.Pid, 0) != nil })
	helper = startHelper()
	t.Contains("the VM after the helper's restart", t.Must(wget...).stdout, "hello from outside")
	// The daemon dies hard: the next one takes the VM back, and syncs
	// its rules through the helper.
	t.KillDaemon()
	t.StartDaemon()
	t.Contains("the VM after the daemon's restart", t.Must(wget...).stdout, "hello from outside")

	t.Must("vm", "stop", "n")
	if taps := t.Taps(); len(taps) != 0 {
		t.Fatalf("taps after stop: %v", taps)
	}
	t.Must("vm", "delete", "n")
	if got := t.perVM("banger-banger0"); len(got) != 0 {
		t.Fatalf("left after delete: %v", got)
	}
	if log, _ := os.ReadFile(filepath.Join(t.Home(), "helper.log")); !strings.Contains(string(log), "caller_uid="+strconv.Itoa(owner.uid)) {
		t.Fatalf("the helper's log does not name its caller:\n%s", log)
	}
}

// processUID is the real uid of pid, -1 when unknown.
func processUID(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[1])
			return uid
		}
	}
	return -1
}

// throwawayUser makes a system user for the scenario, removed after it.
func (t *T) throwawayUser() userID {
	u, remove, err := roottest.AddUser("bgs")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.defer_(remove)
	return userID{u.UID, u.GID}
}

// chownTree gives dir and everything in it to u.
func chownTree(dir string, u userID) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, u.uid, u.gid)
	})
}
