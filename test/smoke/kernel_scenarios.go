package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/api"
)

// kernelImportDebian imports the host distribution's kernel package, the
// way a fresh Debian machine gets its guest kernel, then a second name of
// it from the package file, and deletes both.
func kernelImportDebian(t *T) {
	t.StartDaemon()
	t.Contains("import --debian", t.Must("kernel", "import", "--debian").stdout, "imported kernel ", "modules")
	var k api.Kernel
	t.JSON(&k, "kernel", "show", "default")
	if !k.Default || k.Source != "debian" || k.Modules < 1000 || !strings.HasPrefix(k.Origin, "linux-image-") {
		t.Fatalf("kernel = %+v", k)
	}
	vmlinux, err := os.ReadFile(filepath.Join(k.Dir, "vmlinux"))
	if err != nil || !strings.HasPrefix(string(vmlinux[:4]), "\x7fELF") {
		t.Fatalf("the bundle's vmlinux is not an ELF kernel: %v", err)
	}
	t.Contains("kernel list", t.Must("kernel", "list").stdout, k.Name+" (default)", k.Version)
	t.MustFail(1, "exactly one of", "kernel", "import", "--debian", "--deb", "/x.deb")
	t.MustFail(1, "not a Debian package", "kernel", "import", "--deb", "/etc/hostname")
	t.Contains("delete", t.Must("kernel", "delete", k.Name).stdout, "deleted kernel "+k.Name, "freed")
	var ks api.KernelListResult
	t.JSON(&ks, "kernel", "list")
	if len(ks.Kernels) != 0 {
		t.Fatalf("kernels left: %+v", ks)
	}
	if entries, _ := os.ReadDir(filepath.Join(t.home, "state", "kernels")); len(entries) != 0 {
		t.Fatalf("left in the kernels dir: %v", entries)
	}
}

// bootable starts a registry and a daemon with the test kernel imported,
// and returns the registry's address.
func (t *T) bootable() string {
	if t.tools.kernelDeb == "" {
		t.Fatalf("no kernel package; run scripts/testimages.sh (make test does)")
	}
	reg := t.Registry()
	t.StartDaemon()
	t.Must("kernel", "import", "--deb", t.tools.kernelDeb)
	return reg
}

// vmBootTest boots through the daemon a busybox image pulled from a
// registry, which answers uname -a; then the kernel, pushed to the
// registry and pulled back, boots it again. No QEMU is left (the harness
// checks every process started under the scenario's home).
func vmBootTest(t *T) {
	reg := t.bootable()
	ref := reg + "/smoke/busybox:boot"
	t.Push(ref, t.busyboxImage())
	t.Must("image", "pull", ref)
	r := t.Must("vm", "boot-test", "--image", ref)
	t.Contains("boot-test", r.stdout, "Linux boot-test ", "agent ready", "guest: init started", "power off")
	var res api.BootTestResult
	t.JSON(&res, "vm", "boot-test", "--image", ref)
	if res.VMM != "qemu" || !strings.Contains(res.Uname, "x86_64") || len(res.Phases) < 6 {
		t.Fatalf("boot-test --json = %+v", res)
	}
	t.MustFail(1, "not found", "vm", "boot-test", "--image", "no/such:image")
	t.MustFail(1, "--image is required", "vm", "boot-test")

	// Published to the registry and pulled back, the kernel still boots.
	var k api.Kernel
	t.JSON(&k, "kernel", "show", "default")
	kref := reg + "/smoke/kernel:" + k.Version
	t.Contains("kernel push", t.Must("kernel", "push", k.Name, kref).stdout, "pushed kernel "+k.Name)
	t.Must("kernel", "delete", k.Name)
	t.Contains("kernel pull", t.Must("kernel", "pull", kref, "--name", "from-registry").stdout, "pulled kernel from-registry")
	var back api.Kernel
	t.JSON(&back, "kernel", "show", "from-registry")
	if back.ID != k.ID {
		t.Fatalf("the pulled-back kernel differs: %s, pushed %s", back.ID, k.ID)
	}
	t.Contains("boot with the pulled kernel", t.Must("vm", "boot-test", "--image", ref, "--kernel", "from-registry").stdout, "Linux boot-test "+k.Version)
}

// vmBootImages boots an alpine-like (busybox-based) image and the Debian
// image through the daemon, then the two failures a user can meet: a
// "kernel" that is no kernel, and an image whose root file system was
// damaged on disk. Each fails with its reason; the harness checks that no
// QEMU is left behind.
func vmBootImages(t *T) {
	reg := t.bootable()

	alpine := reg + "/smoke/alpine-like:3"
	t.Push(alpine, t.alpineLikeImage())
	t.Must("image", "pull", alpine)
	var res api.BootTestResult
	t.JSON(&res, "vm", "boot-test", "--image", alpine)
	if !strings.HasPrefix(res.Uname, "Linux boot-test ") || !strings.Contains(res.Uname, "x86_64") {
		t.Fatalf("alpine-like boot-test = %+v", res)
	}

	debian := reg + "/smoke/debian:bookworm"
	t.Push(debian, t.debianImage())
	t.Must("image", "pull", debian)
	t.JSON(&res, "vm", "boot-test", "--image", debian)
	if !strings.Contains(res.Uname, "GNU/Linux") {
		t.Fatalf("debian boot-test = %+v (want GNU coreutils' uname)", res)
	}

	// A file that is no kernel is refused at import; an ELF given with a
	// modules tree imports (it has the shape) but cannot boot: QEMU
	// refuses it and the error says why.
	t.MustFail(1, "cannot tell the version of kernel", "kernel", "import", "--kernel", "/bin/busybox")
	mods := filepath.Join(t.Home(), "lib", "modules", "6.1.0-fake")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	t.Must("kernel", "import", "--kernel", "/bin/busybox", "--modules", mods, "--name", "not-a-kernel")
	t.MustFail(1, "PVH ELF Note", "vm", "boot-test", "--image", alpine, "--kernel", "not-a-kernel")
	t.Must("kernel", "delete", "not-a-kernel") // the newest kernel is the default

	// A damaged root file system: the guest cannot mount it, powers off,
	// and the error carries the console's reason.
	var img api.Image
	t.JSON(&img, "image", "show", alpine)
	f, err := os.OpenFile(img.Rootfs, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("%v", err)
	}
	_, err = f.WriteAt(make([]byte, 4096), 0) // the ext4 superblock lives at 1024
	f.Close()
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.MustFail(1, "FATAL: mounting ext4 on /mnt/lower", "vm", "boot-test", "--image", alpine)
}
