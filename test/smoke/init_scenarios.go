package main

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangerdev/banger/api"
)

// vmSystemd boots scripts/testimages.sh's Debian with systemd and Docker
// with the image's init: systemd is PID 1 and reaches running (or
// degraded); a unit started with systemctl serves a port that vm ports
// sees; Docker, started by systemd, loads an image from a tarball, runs
// it, and publishes a port that vm ports labels http and --forward
// reaches, while its containers reach outside no more than the VM may;
// vm stop is systemd's clean power-off, the work disk's ext4 left clean.
// --init auto (the default) picks systemd for it too. The same image with
// --init agent runs Docker without systemd (dockerd started by hand), its
// containers reaching outside with --nat. --init image on an image
// without systemd is refused with nothing made.
func vmSystemd(t *T) {
	reg := t.bootable()
	ref := reg + "/smoke/systemd:1"
	t.Push(ref, t.systemdImage())
	bb := reg + "/smoke/busybox:1"
	t.Push(bb, t.busyboxImage())
	outside := t.Outside()

	var img api.Image
	t.Must("image", "pull", ref)
	t.JSON(&img, "image", "show", ref)
	if img.Init != "/sbin/init" {
		t.Fatalf("the systemd image's init = %q, want /sbin/init", img.Init)
	}
	before := len(t.Must("vm", "list").stdout)
	t.MustFail(1, "has no systemd", "vm", "create", "--name", "nope", "--image", bb, "--init", "image")
	if after := len(t.Must("vm", "list").stdout); after != before {
		t.Fatalf("a refused --init image left a VM:\n%s", t.Must("vm", "list").stdout)
	}

	// auto (the default) takes the image's systemd.
	var v api.VM
	t.JSON(&v, "vm", "create", "--name", "auto", "--image", ref, "--no-start")
	if v.Init != api.InitImage {
		t.Fatalf("--init auto on an image with systemd gave %+v", v)
	}
	t.Must("vm", "delete", "auto")
	t.JSON(&v, "vm", "create", "--name", "sd", "--image", ref, "--init", "image", "--memory", "1G", "--network", "user")
	if v.Init != api.InitImage || v.State != api.VMRunning {
		t.Fatalf("created = %+v", v)
	}
	t.Contains("show", t.Must("vm", "show", "sd").stdout, "the image's systemd")
	out := t.Must("vm", "exec", "sd", "--", "sh", "-c", "cat /proc/1/comm; systemctl is-system-running --wait; hostname; "+
		"grep cgroup2 /proc/mounts; cat /etc/resolv.conf").stdout
	lines := strings.Split(out, "\n")
	if len(lines) < 4 || lines[0] != "systemd" || (lines[1] != "running" && lines[1] != "degraded") || lines[2] != "sd" {
		t.Fatalf("under systemd: %q\n%s", out, t.Must("vm", "exec", "sd", "--", "systemctl", "--failed", "--no-pager").stdout)
	}
	t.Contains("cgroup2 and banger's resolver", out, "cgroup2 /sys/fs/cgroup", "nameserver 10.0.2.3")
	// Stats come from the agent as systemd's service: the work disk too,
	// through the mount PID 1 handed over.
	var st api.VMStats
	t.JSON(&st, "vm", "stats", "sd")
	if st.Procs < 5 || st.MemUsed == 0 || st.DiskSize == 0 || st.DiskUsed == 0 {
		t.Fatalf("stats under systemd: %+v", st)
	}

	// A unit started with systemctl serves a port vm ports sees.
	t.Must("vm", "exec", "sd", "--", "sh", "-c", "mkdir -p /srv/hello && echo hello from a unit > /srv/hello/index.html && "+
		"printf '[Service]\\nExecStart=/usr/bin/busybox httpd -f -p 9090 -h /srv/hello\\n' > /etc/systemd/system/hello.service && "+
		"systemctl daemon-reload && systemctl start hello")
	ports := func(args ...string) map[int]api.VMPort { return t.vmPorts("sd", args...) }
	t.Eventually("the unit's port shows", time.Minute, func() bool { return ports()[9090].Scheme == "http" })

	// Docker: an image loaded from a tarball runs, and a published port
	// is seen, labelled http, and forwarded.
	// Busybox alone: Docker applies a hard link's mode to the file it
	// links to, and the shared busybox image's links say 0644.
	bin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("%v", err)
	}
	web := t.image([]string{"/bin/busybox", "sh"}, t.layer(
		entry{name: "bin/", typ: tar.TypeDir},
		entry{name: "bin/busybox", body: bin, mode: 0o755},
		entry{name: "www/", typ: tar.TypeDir},
		entry{name: "www/index.html", body: []byte("hello from a container\n")},
	))
	tag, err := name.NewTag("smoke/web:1")
	if err != nil {
		t.Fatalf("%v", err)
	}
	var archive bytes.Buffer
	if err := tarball.Write(tag, web, &archive); err != nil {
		t.Fatalf("%v", err)
	}
	load := func(vm string) {
		t.Must("vm", "exec", vm, "--", "sh", "-c", "for i in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1")
		// vm ssh carries stdin (exec does not).
		r := t.exec(t.ctx, bytes.NewReader(archive.Bytes()), "vm", "ssh", vm, "--", "docker", "load")
		if r.code != 0 || !strings.Contains(r.stdout, "smoke/web:1") {
			t.Fatalf("docker load: %s", r)
		}
		t.Contains("docker run", t.Must("vm", "exec", vm, "--", "docker", "run", "--rm", "smoke/web:1", "/bin/busybox", "echo", "hi").stdout, "hi")
	}
	load("sd")
	t.Must("vm", "exec", "sd", "--", "docker", "run", "-d", "--name", "web", "-p", "8080:80", "smoke/web:1", "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www")
	t.Eventually("the published port shows", time.Minute, func() bool { return ports()[8080].Scheme == "http" })
	fwd := ports("--forward")[8080]
	if fwd.Forward == "" {
		t.Fatalf("--forward gave the published port no forward: %+v", fwd)
	}
	t.Contains("GET through the forward", t.httpGet(fwd.Forward, 30*time.Second), "200", "hello from a container")
	// Containers reach no further than their VM: this one has no --nat.
	wget := []string{"--", "docker", "run", "--rm", "smoke/web:1", "/bin/busybox", "timeout", "10", "/bin/busybox", "wget", "-qO-", outside}
	if r := t.Banger(append([]string{"vm", "exec", "sd"}, wget...)...); r.code == 0 || strings.Contains(r.stdout, "hello from outside") {
		t.Fatalf("a container of a VM without --nat reached the outside: %s", r)
	}
	// The store is on the work disk's ext4, where overlay2 works.
	t.Contains("docker's storage", t.Must("vm", "exec", "sd", "--", "docker", "info", "--format", "{{.Driver}}").stdout, "overlay2")

	// vm stop: systemd's power-off, then the agent's last word, and a
	// clean work disk.
	t.Must("vm", "stop", "sd")
	logs := t.Must("vm", "logs", "sd").stdout
	t.Contains("power-off through systemd", logs, "systemd-shutdown", "banger-agent: poweroff: file systems read-only")
	work := filepath.Join(t.Home(), "state", "vms", v.ID, "work.ext4")
	if _, err := os.Stat(work); err != nil {
		t.Fatalf("the work disk: %v", err)
	}
	sb, err := exec.Command("dumpe2fs", "-h", work).CombinedOutput()
	if err != nil || !strings.Contains(string(sb), "Filesystem state:         clean") || strings.Contains(string(sb), "needs_recovery") {
		t.Fatalf("the work disk after systemd's power-off (%v):\n%s", err, sb)
	}
	t.Must("vm", "delete", "sd")

	// Docker without systemd: the agent is init, dockerd started by hand;
	// with --nat its containers reach the outside.
	t.JSON(&v, "vm", "create", "--name", "plain", "--image", ref, "--init", "agent", "--memory", "1G", "--network", "user", "--nat")
	if v.Init != api.InitAgent {
		t.Fatalf("--init agent gave %+v", v)
	}
	t.Contains("PID 1", t.Must("vm", "exec", "plain", "--", "cat", "/proc/1/comm").stdout, "init")
	t.Must("vm", "exec", "plain", "--", "sh", "-c", "dockerd </dev/null >/var/log/dockerd.log 2>&1 &")
	load("plain")
	t.Contains("a container with --nat", t.Must(append([]string{"vm", "exec", "plain"}, wget...)...).stdout, "hello from outside")
	t.Must("vm", "delete", "--force", "plain")
}
