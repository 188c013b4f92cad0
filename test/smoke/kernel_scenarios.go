package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/api"
)

func kernelScenarios() []scenario {
	return []scenario{
		{"kernel-import-debian", kernelImportDebian},
		{"vm-boot-test", vmBootTest},
	}
}

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

// vmBootTest boots images through the daemon: a busybox image pulled from
// a registry answers uname -a; an image whose rootfs the guest cannot run
// from fails with the console's reason; no QEMU is left either way (the
// harness checks every process started under the scenario's home).
func vmBootTest(t *T) {
	if t.tools.kernelDeb == "" {
		t.Fatalf("no kernel package; run scripts/testimages.sh (make test does)")
	}
	reg := t.Registry()
	t.StartDaemon()
	t.Must("kernel", "import", "--deb", t.tools.kernelDeb)
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
