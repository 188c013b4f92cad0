// Package bundle is the layout of a kernel bundle directory: the files
// the kernel service writes when it imports a kernel, and what the boot
// path (the VM service, the boot check, the test environment) reads from
// it, including which modules a guest must have.
package bundle

import (
	"errors"
	"fmt"
	"path/filepath"
)

// Files of a bundle, relative to its directory.
const (
	FileKernel   = "vmlinuz" // the kernel as imported
	FileVmlinux  = "vmlinux" // the uncompressed ELF kernel
	FileConfig   = "config"  // the kernel's build configuration, when known
	DirModules   = "modules" // the /lib/modules/<version> tree
	FileManifest = "bundle.json"
)

// Vmlinux is the ELF kernel of the bundle in dir, which every VMM boots.
func Vmlinux(dir string) string { return filepath.Join(dir, FileVmlinux) }

// Modules is the modules tree of the bundle in dir.
func Modules(dir string) string { return filepath.Join(dir, DirModules) }

// GuestModules are what every guest needs to boot: virtio over MMIO, the
// block, network and console devices, ext4 for the disks and overlay to
// stack the VM's writable disk on the image. Those a kernel builds in
// need no module.
func GuestModules() []string {
	return []string{"virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "ext4", "overlay"}
}

// OptionalGuestModules go into the initramfs when the kernel has them,
// loaded at boot only where the VM has the device (else once the agent
// serves, off the boot path): the vsock transport through which
// Firecracker and vhost-vsock reach the agent, and vsock loopback, which
// lets a guest test its own vsock listener.
func OptionalGuestModules() []string {
	return []string{"vmw_vsock_virtio_transport", "vsock_loopback"}
}

// MaxRelease bounds a kernel release string (Linux's utsname holds 64
// bytes).
const MaxRelease = 64

// CheckRelease accepts only a kernel release string as uname -r prints
// one (letters, digits, '.', '-', '_', '+', starting with a letter or
// digit, at most MaxRelease bytes). A bundle's version comes from its tar
// paths or its kernel's header, both a registry's choice, and reaches
// file names, depmod's arguments and terminals: anything else is refused
// with the reason.
func CheckRelease(v string) error {
	switch {
	case v == "":
		return errors.New("the kernel release is empty")
	case len(v) > MaxRelease:
		return fmt.Errorf("the kernel release %.32q… is %d bytes, more than %d", v, len(v), MaxRelease)
	}
	for i, r := range v {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			i > 0 && (r == '.' || r == '-' || r == '_' || r == '+')
		if !ok {
			return fmt.Errorf("the kernel release %q is not one (letters, digits, '.', '-', '_' and '+', starting with a letter or digit)", v)
		}
	}
	return nil
}
