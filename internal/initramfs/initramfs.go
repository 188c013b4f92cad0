// Package initramfs builds the initramfs banger boots every guest with:
// the guest agent as /init and, decompressed and in load order, exactly
// the kernel modules the guest needs.
package initramfs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/cpio"
	"github.com/bangerdev/banger/internal/kmod"
)

// Build writes an uncompressed newc archive: the kernel loads it without
// a decompression step, which under emulation is worth more than the
// bytes. modDir is the bundle's modules tree; mods come from
// kmod.Index.Resolve, dependencies first.
func Build(w io.Writer, agent []byte, modDir string, mods []kmod.Info) error {
	cw := cpio.NewWriter(w)
	for _, d := range []string{"dev", "proc", "sys", "mnt", "banger", "banger/mod"} {
		if err := cw.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := cw.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := cw.File("init", 0o755, agent); err != nil {
		return err
	}
	var list strings.Builder
	for i, m := range mods {
		raw, err := os.ReadFile(filepath.Join(modDir, m.Path))
		if err != nil {
			return fmt.Errorf("reading module %s: %w", m.Name, err)
		}
		ko, err := kmod.Decompress(raw)
		if err != nil {
			return fmt.Errorf("module %s: %w", m.Name, err)
		}
		name := fmt.Sprintf("banger/mod/%02d-%s.ko", i, m.Name)
		if err := cw.File(name, 0o644, kmod.StripSignature(ko)); err != nil {
			return err
		}
		list.WriteString("/" + name + "\n")
	}
	if err := cw.File("banger/modules", 0o644, []byte(list.String())); err != nil {
		return err
	}
	return cw.Close()
}
