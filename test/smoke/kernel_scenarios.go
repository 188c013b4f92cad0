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
