package boot

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/kmod/kmodtest"
	"github.com/bangerdev/banger/internal/vmm"
)

func TestCachedInitramfs(t *testing.T) {
	dir := t.TempDir()
	mods := filepath.Join(bundle.Modules(dir), "kernel")
	os.MkdirAll(mods, 0o755)
	for name, deps := range map[string]string{
		"virtio_ring": "", "virtio": "virtio_ring", "virtio_mmio": "virtio", "virtio_blk": "virtio",
		"virtio_net": "virtio", "virtio_console": "virtio", "ext4": "", "overlay": "",
	} {
		os.WriteFile(filepath.Join(mods, name+".ko"), kmodtest.Module("name="+name, "depends="+deps), 0o644)
	}
	agent := filepath.Join(t.TempDir(), "banger-agent")
	os.WriteFile(agent, []byte("agent v1"), 0o755)

	p1, err := CachedInitramfs(dir, agent, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi1, _ := os.Stat(p1)
	p2, err := CachedInitramfs(dir, agent, nil)
	if err != nil || p2 != p1 {
		t.Fatalf("second call = %s, %v", p2, err)
	}
	if fi2, _ := os.Stat(p2); !fi2.ModTime().Equal(fi1.ModTime()) {
		t.Fatal("the cached initramfs was rebuilt")
	}
	// A new agent build gets its own initramfs.
	os.WriteFile(agent, []byte("agent v2"), 0o755)
	p3, err := CachedInitramfs(dir, agent, nil)
	if err != nil || p3 == p1 {
		t.Fatalf("after an agent rebuild = %s, %v", p3, err)
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, ".initrd-*")); len(matches) != 0 {
		t.Fatalf("temporary files left: %v", matches)
	}
	if _, err := CachedInitramfs(dir, filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Fatal("a missing agent binary was accepted")
	}
}

// logs is an Instance that only has logs.
type logs struct {
	vmm.Instance
	console, vmmLog string
}

func (l logs) ConsoleLog() string { return l.console }
func (l logs) VMMLog() string     { return l.vmmLog }

// TestFailureReadsOnlyTheEnd: the console is the guest's to write, and a
// guest may fill it; saying why a boot failed reads only its end.
func TestFailureReadsOnlyTheEnd(t *testing.T) {
	dir := t.TempDir()
	console := filepath.Join(dir, "console.log")
	f, err := os.Create(console)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(512 << 20); err != nil { // sparse: half a GiB of NULs
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("\nKernel panic: the end\n"), 512<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	vmmLog := filepath.Join(dir, "vmm.log")
	if err := os.WriteFile(vmmLog, []byte("qemu: could not open disk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	msg := Failure(logs{console: console, vmmLog: vmmLog}, "qemu")
	runtime.ReadMemStats(&after)
	if !strings.Contains(msg, "Kernel panic: the end") || !strings.Contains(msg, "qemu said:\nqemu: could not open disk") {
		t.Fatalf("Failure = %q", msg)
	}
	if len(msg) > 2*failureBytes {
		t.Fatalf("Failure gave %d bytes", len(msg))
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Fatalf("Failure allocated %d MiB for a console it should only read the end of", grew>>20)
	}
	if got := Failure(logs{console: filepath.Join(dir, "none"), vmmLog: filepath.Join(dir, "none")}, "qemu"); !strings.Contains(got, "the console is empty") {
		t.Fatalf("Failure without logs = %q", got)
	}
}
