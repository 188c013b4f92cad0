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
// kmod.Index.Resolve, dependencies first: listed in /banger/modules, the
// agent loads them at boot. later, listed in /banger/modules.later, are
// loaded once the agent serves, unless the VM has a device that needs
// them at boot (vsock).
func Build(w io.Writer, agent []byte, modDir string, mods, later []kmod.Info) error {
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
	written := map[string]string{} // module name -> its path in the archive
	n := 0
	for _, set := range []struct {
		list string
		mods []kmod.Info
	}{{"banger/modules", mods}, {"banger/modules.later", later}} {
		var list strings.Builder
		for _, m := range set.mods {
			name, ok := written[m.Name]
			if !ok {
				raw, err := os.ReadFile(filepath.Join(modDir, m.Path))
				if err != nil {
					return fmt.Errorf("reading module %s: %w", m.Name, err)
				}
				ko, err := kmod.Decompress(raw)
				if err != nil {
					return fmt.Errorf("module %s: %w", m.Name, err)
				}
				name = fmt.Sprintf("banger/mod/%02d-%s.ko", n, m.Name)
				n++
				if err := cw.File(name, 0o644, kmod.StripSignature(ko)); err != nil {
					return err
				}
				written[m.Name] = name
			}
			list.WriteString("/" + name + "\n")
		}
		if err := cw.File(set.list, 0o644, []byte(list.String())); err != nil {
			return err
		}
	}
	return cw.Close()
}
