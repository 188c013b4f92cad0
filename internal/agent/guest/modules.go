//go:build linux

package guest

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// mountModules mounts the kernel's module tree, when the VM has its
// disk, read-only at /lib/modules/<release>, over whatever the image
// has there: modprobe then finds every module of the running kernel.
// The disk is probed with the others, so it is there by now or absent.
func mountModules(order []string) error {
	dev := ""
	for i, s := range order {
		if s == proto.ModulesSerial && i < 26 {
			dev = "/dev/vd" + string(rune('a'+i))
		}
	}
	if dev == "" {
		var ok bool
		if dev, ok = named("/sys/block/vd*/serial", proto.ModulesSerial); !ok {
			return nil // a VM without one
		}
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	dir := "/lib/modules/" + unix.ByteSliceToString(u.Release[:])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, dir, "ext4", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", dev, dir, err)
	}
	return nil
}
