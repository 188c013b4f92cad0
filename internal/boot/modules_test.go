package boot

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/roottest"
)

// TestModulesDisk: a bundle's module tree becomes an ext4 image with
// depmod's indexes, once; the bundle's own files are untouched; a
// bundle without modules has none. As root, depmod runs as nobody.
func TestModulesDisk(t *testing.T) {
	if _, err := exec.LookPath("depmod"); err != nil {
		if _, err := os.Stat("/usr/sbin/depmod"); err != nil {
			t.Fatalf("depmod is missing (make deps installs kmod): %v", err)
		}
	}
	roottest.Require(t, "to see depmod run as nobody")
	// As the daemon runs: what it makes is its own alone.
	defer syscall.Umask(syscall.Umask(0o077))
	dir := t.TempDir()
	if p, err := ModulesDisk(context.Background(), dir, "6.1.0-test"); err != nil || p != "" {
		t.Fatalf("a bundle without modules: %q, %v", p, err)
	}
	mods := filepath.Join(bundle.Modules(dir), "kernel")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	// A real module, from this machine's kernel when it has one, so
	// modules.dep must name it; else a stand-in.
	ko := []byte("not an ELF")
	if found, _ := filepath.Glob("/lib/modules/*/kernel/drivers/net/dummy.ko"); len(found) > 0 {
		ko, _ = os.ReadFile(found[0])
	}
	if err := os.WriteFile(filepath.Join(mods, "x.ko"), ko, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := ModulesDisk(context.Background(), dir, "6.1.0-test")
	if err != nil || p != filepath.Join(dir, ModulesFile) {
		t.Fatalf("ModulesDisk = %q, %v", p, err)
	}
	out, err := exec.Command("debugfs", "-R", "ls -l /", p).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "modules.dep") || !strings.Contains(string(out), "kernel") {
		t.Fatalf("the disk holds:\n%s", out)
	}
	// The indexes were written by nobody, into the disk alone.
	if _, err := os.Stat(filepath.Join(bundle.Modules(dir), "modules.dep")); !os.IsNotExist(err) {
		t.Fatalf("depmod wrote into the bundle: %v", err)
	}
	if !strings.Contains(string(out), " 65534 ") {
		t.Fatalf("depmod's files are not nobody's:\n%s", out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mods, "x.ko"), &st); err != nil || st.Uid != uint32(os.Geteuid()) {
		t.Fatalf("the bundle's file changed owner: %v %d", err, st.Uid)
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, ".modules-*")); len(entries) != 0 {
		t.Fatalf("staging left: %v", entries)
	}
}
