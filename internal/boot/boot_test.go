package boot

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/kmod/kmodtest"
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

	p1, err := CachedInitramfs(dir, agent)
	if err != nil {
		t.Fatal(err)
	}
	fi1, _ := os.Stat(p1)
	p2, err := CachedInitramfs(dir, agent)
	if err != nil || p2 != p1 {
		t.Fatalf("second call = %s, %v", p2, err)
	}
	if fi2, _ := os.Stat(p2); !fi2.ModTime().Equal(fi1.ModTime()) {
		t.Fatal("the cached initramfs was rebuilt")
	}
	// A new agent build gets its own initramfs.
	os.WriteFile(agent, []byte("agent v2"), 0o755)
	p3, err := CachedInitramfs(dir, agent)
	if err != nil || p3 == p1 {
		t.Fatalf("after an agent rebuild = %s, %v", p3, err)
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, ".initrd-*")); len(matches) != 0 {
		t.Fatalf("temporary files left: %v", matches)
	}
	if _, err := CachedInitramfs(dir, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing agent binary was accepted")
	}
}
