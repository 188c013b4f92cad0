package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/kvm"
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
	owner, restartHelper := t.installedMode("10.81.0.0/24")
	other := t.throwawayUser()
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
	restartHelper(nil)
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

// installedMode sets the scenario up as banger runs installed: the
// daemon as an unprivileged owner (commands run as it from here), the
// root network helper beside it on the bridge network cidr, started as
// its unit would be. restartHelper kills the helper with SIGKILL, waits
// for it to die, runs meanwhile (when not nil) and starts a new one.
func (t *T) installedMode(cidr string) (owner userID, restartHelper func(meanwhile func())) {
	owner = t.throwawayUser()
	helperSock := filepath.Join(t.Home(), "helper", "helper.sock")
	cfg := fmt.Sprintf("[network]\nmode = \"bridge\"\ncidr = %q\nhelper = %q\n", cidr, helperSock)
	if err := os.WriteFile(filepath.Join(t.Home(), "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	if err := chownTree(t.Home(), owner); err != nil {
		t.Fatalf("%v", err)
	}
	startHelper := func() *exec.Cmd {
		_ = os.Remove(helperSock)
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
	return owner, func(meanwhile func()) {
		_ = helper.Process.Kill()
		t.Eventually("the helper dies", time.Minute, func() bool { return syscall.Kill(helper.Process.Pid, 0) != nil })
		if meanwhile != nil {
			meanwhile()
		}
		helper = startHelper()
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

// callerRights shares an unprivileged owner's daemon with a second user,
// as `system install --group` does, and has that user try to make the
// daemon read what only the owner or root may, through every request
// that names a host path: each is refused by name before anything is
// read, and the user's own file is read through the descriptor the check
// ended on. The owner itself is not held back, and the daemon's log
// names each call's caller. A daemon without root or the helper refuses
// the bridge network, naming how to get it.
func callerRights(t *T) {
	owner, member := t.throwawayUser(), t.throwawayUser()
	base, err := os.MkdirTemp("", "bs-rights-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.defer_(func() { os.RemoveAll(base) })
	archive := func(path, tag string, u userID, mode os.FileMode) {
		ref, _ := name.NewTag(tag)
		if err := tarball.WriteToFile(path, ref, t.busyboxImage()); err != nil {
			t.Fatalf("%v", err)
		}
		if err := errors.Join(os.Chown(path, u.uid, u.gid), os.Chmod(path, mode)); err != nil {
			t.Fatalf("%v", err)
		}
	}
	dir := func(path string, u userID, mode os.FileMode) string {
		if err := errors.Join(os.MkdirAll(path, 0o755), os.Chown(path, u.uid, u.gid), os.Chmod(path, mode)); err != nil {
			t.Fatalf("%v", err)
		}
		return path
	}
	rootUser := userID{0, 0}
	dir(base, rootUser, 0o755)
	ownerOnly := dir(filepath.Join(base, "owner"), owner, 0o700)
	archive(filepath.Join(ownerOnly, "secret.tar"), "example.com/smoke/rights:secret", owner, 0o600)
	ownerOpen := dir(filepath.Join(base, "owner-open"), owner, 0o755)
	archive(filepath.Join(ownerOpen, "private.tar"), "example.com/smoke/rights:private", owner, 0o600)
	rootOnly := dir(filepath.Join(base, "root"), rootUser, 0o700)
	archive(filepath.Join(rootOnly, "root.tar"), "example.com/smoke/rights:root", rootUser, 0o644)
	rootDir := dir(filepath.Join(base, "rootdir"), rootUser, 0o755)
	mine := dir(filepath.Join(base, "member"), member, 0o755)
	archive(filepath.Join(mine, "mine.tar"), "example.com/smoke/rights:mine", member, 0o644)
	proj := dir(filepath.Join(mine, "proj"), member, 0o755)
	if err := errors.Join(os.Symlink(filepath.Join(ownerOpen, "private.tar"), filepath.Join(mine, "link.tar")),
		os.Lchown(filepath.Join(mine, "link.tar"), member.uid, member.gid)); err != nil {
		t.Fatalf("%v", err)
	}

	// A private repository (htpasswd), whose credentials are the
	// owner's: in the docker config the owner's daemon reads.
	reg := t.AuthRegistry("owner", "0wner-s3cret")
	private := reg + "/owner/private:1"
	t.Push(private, t.busyboxImage(), remote.WithAuth(&authn.Basic{Username: "owner", Password: "0wner-s3cret"}))
	if err := os.MkdirAll(filepath.Join(t.home, "docker"), 0o700); err != nil {
		t.Fatalf("%v", err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte("owner:0wner-s3cret"))
	if err := os.WriteFile(filepath.Join(t.home, "docker", "config.json"), []byte(`{"auths":{"`+reg+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	if err := chownTree(t.Home(), owner); err != nil {
		t.Fatalf("%v", err)
	}
	t.user = &owner
	t.StartDaemon()
	t.Contains("the owner's pull of its private image", t.Must("image", "pull", private).stdout, "pulled "+private)
	// The socket shared as --group shares it (0660 in a 0750 directory,
	// for the group's members): here opened to the member by mode.
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{{t.Home(), 0o711}, {filepath.Join(t.Home(), "run"), 0o711}, {t.Socket(), 0o666}} {
		if err := os.Chmod(p.path, p.mode); err != nil {
			t.Fatalf("%v", err)
		}
	}

	t.user = &member
	for _, tc := range []struct {
		what string
		want string
		args []string
	}{
		{"the owner's private directory", "may not search", []string{"image", "import", filepath.Join(ownerOnly, "secret.tar")}},
		{"the owner's private file", "may not read", []string{"image", "import", filepath.Join(ownerOpen, "private.tar")}},
		{"root's directory", "may not search", []string{"image", "import", filepath.Join(rootOnly, "root.tar")}},
		{"a symlink of the member's to the owner's file", "may not read", []string{"image", "import", filepath.Join(mine, "link.tar")}},
		{"a directory (its files could be swapped mid-read)", "single regular files", []string{"image", "import", proj}},
		{"a kernel file", "may not read", []string{"kernel", "import", "--kernel", filepath.Join(ownerOpen, "private.tar")}},
		{"a workspace", "banger daemon start", []string{"vm", "workspace", "prepare", "x", proj}},
		{"a pull into root's directory", "banger daemon start", []string{"vm", "workspace", "pull", "x", rootDir}},
		{"a create with a workspace", "banger daemon start", []string{"vm", "create", "--name", "w", "--workspace", proj}},
	} {
		r := t.Banger(tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Fatalf("%s: want a refusal naming %q, got %s", tc.what, tc.want, r)
		}
	}
	// The owner's registry credentials serve the owner alone: the
	// member's pull goes anonymously and is refused by the registry,
	// saying why; a push (which would write to the owner's repositories)
	// is refused outright.
	r := t.MustFail(1, "pulled anonymously", "image", "pull", private)
	t.Contains("the member's refused pull", r.stderr, "UNAUTHORIZED", "serve root and uid "+strconv.Itoa(owner.uid)+" only")
	r = t.MustFail(1, "permission denied", "kernel", "push", "any", reg+"/owner/kernel:1")
	t.Contains("the member's refused push", r.stderr, "registry credentials")
	t.MustFail(1, "pulled anonymously", "kernel", "pull", reg+"/owner/kernel:1")
	t.Contains("the member's own archive", t.Must("image", "import", filepath.Join(mine, "mine.tar")).stdout, "imported example.com/smoke/rights:mine")
	if imgs := t.images(); len(imgs) != 2 {
		t.Fatalf("images after the member's attempts: %+v", imgs)
	}

	t.user = &owner
	// Without root and without an install, the bridge network is
	// refused with the way to get it.
	t.MustFail(1, "sudo banger system install", "vm", "create", "--name", "b", "--network", "bridge", "--image", "example.com/smoke/rights:mine")
	t.Contains("the owner's own archive", t.Must("image", "import", filepath.Join(ownerOnly, "secret.tar")).stdout, "imported example.com/smoke/rights:secret")
	log, _ := os.ReadFile(filepath.Join(t.Home(), "logs", "bangerd.log"))
	for _, u := range []userID{owner, member} {
		if !strings.Contains(string(log), "method=image.import") || !strings.Contains(string(log), "uid="+strconv.Itoa(u.uid)+" ") {
			t.Fatalf("the daemon's log does not name caller uid %d:\n%s", u.uid, log)
		}
	}
}

// doctorHost runs `banger doctor` on this host: without a daemon, and
// then without a kernel, it fails naming each fix; once both are there
// it passes, and what it says of KVM and the accelerator agree (here:
// no usable KVM, TCG).
func doctorHost(t *T) {
	type report struct {
		OK     bool `json:"ok"`
		Checks []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
			Detail string `json:"detail"`
			Fix    string `json:"fix"`
		} `json:"checks"`
	}
	run := func(wantCode int) report {
		r := t.Banger("doctor", "--json")
		var rep report
		if r.code != wantCode || json.Unmarshal([]byte(r.stdout), &rep) != nil {
			t.Fatalf("doctor: want exit %d and JSON, got %s", wantCode, r)
		}
		return rep
	}
	check := func(rep report, name, status, says string) {
		for _, c := range rep.Checks {
			if c.Name == name {
				if c.Status != status || !strings.Contains(c.Detail+" "+c.Fix, says) {
					t.Fatalf("doctor's %s: %+v, want %s saying %q", name, c, status, says)
				}
				return
			}
		}
		t.Fatalf("doctor has no %s check: %+v", name, rep)
	}
	check(run(1), "daemon", "fail", "banger daemon start")
	t.MustFail(1, "", "doctor") // the table, and the exit code, for a person
	t.StartDaemon()
	rep := run(1)
	check(rep, "daemon", "ok", "bangerd")
	check(rep, "kernel", "fail", "banger kernel import --debian")
	check(rep, "qemu", "ok", "QEMU emulator")
	check(rep, "bridge network", "ok", "root")
	t.Must("kernel", "import", "--deb", t.tools.kernelDeb)
	rep = run(0)
	if !rep.OK {
		t.Fatalf("doctor after the kernel: %+v", rep)
	}
	check(rep, "kernel", "ok", "the default")
	check(rep, "default image", "warn", "banger image pull")
	if kvm.PVMOnly() { // as on the machines this suite runs on
		check(rep, "kvm", "warn", "PVM-only")
	}
	kvm, accel := "", ""
	for _, c := range rep.Checks {
		switch c.Name {
		case "kvm":
			kvm = c.Status
		case "accelerator":
			accel = c.Detail
		}
	}
	if (kvm == "ok") != strings.HasPrefix(accel, "kvm") || (kvm != "ok" && !strings.HasPrefix(accel, "tcg")) {
		t.Fatalf("kvm %s but accelerator %q", kvm, accel)
	}
	t.Contains("doctor's table", t.Must("doctor").stdout, "STATUS", "accelerator", "default image: banger image pull")
}
