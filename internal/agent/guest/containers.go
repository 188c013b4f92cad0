//go:build linux

package guest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// containerStores are where container engines keep their layers, by the
// engine that does. Their overlay drivers cannot stack on the overlay
// root (overlayfs refuses an overlayfs upper, and Docker falls back to
// copying every layer whole), so an image with such an engine gets a
// directory of the work disk's own file system there.
var containerStores = []struct{ engine, dir string }{
	{"dockerd", "/var/lib/docker"},
	{"containerd", "/var/lib/containerd"},
	{"podman", "/var/lib/containers"},
}

// mountContainerStores binds work/containers/NAME over each store whose
// engine the image has (on the agent's PATH); work is the work disk's
// file system (through its fd).
func mountContainerStores(work string) error {
	for _, s := range containerStores {
		if _, err := exec.LookPath(s.engine); err != nil {
			continue
		}
		src := filepath.Join(work, "containers", filepath.Base(s.dir))
		if err := os.MkdirAll(src, 0o710); err != nil {
			return err
		}
		if err := os.MkdirAll(s.dir, 0o710); err != nil {
			return err
		}
		if err := unix.Mount(src, s.dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding the work disk at %s: %w", s.dir, err)
		}
	}
	return nil
}
