package firecracker

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/vmm"
)

// Jailer runs Firecracker under its jailer: in a chroot holding only the
// VM's files, in its own namespaces, as an unprivileged user.
type Jailer struct {
	Binary   string // the jailer binary
	UID, GID int    // who Firecracker runs as
	BaseDir  string // --chroot-base-dir
}

// jail is one VM's chroot, prepared for the jailer.
type jail struct {
	root    string   // host path of the chroot
	spec    vmm.Spec // s with every path as Firecracker sees it, inside the chroot
	args    []string // the jailer's command line
	apiSock string   // host path of the API socket
	vsock   string   // host path of the vsock socket
	binds   []string // files bind-mounted in, unmounted by remove
}

var jailID = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)

// prepare lays out the chroot for a VM named id: the kernel, initramfs
// and disks hard-linked in (bind-mounted where a link cannot cross file
// systems), writable disks owned by the jailed user.
func (j *Jailer) prepare(id, firecrackerBin string, s vmm.Spec) (*jail, error) {
	if !jailID.MatchString(id) {
		return nil, fmt.Errorf("jailer id %q: letters, digits and dashes, at most 64", id)
	}
	fc, err := exec.LookPath(firecrackerBin)
	if err != nil {
		return nil, err
	}
	jl := &jail{root: j.root(id, fc)}
	if err := os.MkdirAll(jl.root, 0o755); err != nil {
		return nil, err
	}
	// Firecracker, as the jailed user, creates its sockets here.
	if err := os.Chown(jl.root, j.UID, j.GID); err != nil {
		jl.remove()
		return nil, err
	}
	place := func(src, name string, owned bool) (string, error) {
		dst := filepath.Join(jl.root, name)
		if err := os.Link(src, dst); err != nil {
			if !errors.Is(err, unix.EXDEV) {
				return "", fmt.Errorf("linking %s into the jail: %w", src, err)
			}
			if err := os.WriteFile(dst, nil, 0o600); err != nil {
				return "", err
			}
			if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
				return "", fmt.Errorf("bind-mounting %s into the jail: %w", src, err)
			}
			jl.binds = append(jl.binds, dst)
		}
		if owned {
			if err := os.Chown(dst, j.UID, j.GID); err != nil {
				return "", err
			}
		}
		return "/" + name, nil
	}
	jl.spec = s
	if jl.spec.Kernel, err = place(s.Kernel, "vmlinux", false); err != nil {
		jl.remove()
		return nil, err
	}
	if s.Initrd != "" {
		if jl.spec.Initrd, err = place(s.Initrd, "initrd", false); err != nil {
			jl.remove()
			return nil, err
		}
	}
	jl.spec.Disks = make([]vmm.Disk, len(s.Disks))
	for i, d := range s.Disks {
		jl.spec.Disks[i] = d
		if jl.spec.Disks[i].Path, err = place(d.Path, fmt.Sprintf("disk%d.img", i), !d.ReadOnly); err != nil {
			jl.remove()
			return nil, err
		}
	}
	jl.apiSock = filepath.Join(jl.root, "firecracker.sock")
	jl.vsock = filepath.Join(jl.root, "vsock.sock")
	jl.args = []string{"--id", id, "--exec-file", fc,
		"--uid", strconv.Itoa(j.UID), "--gid", strconv.Itoa(j.GID),
		"--chroot-base-dir", j.BaseDir,
		"--", "--api-sock", "/firecracker.sock"}
	return jl, nil
}

// root is the host path of VM id's chroot.
func (j *Jailer) root(id, firecrackerBin string) string {
	return filepath.Join(j.BaseDir, filepath.Base(firecrackerBin), id, "root")
}

// remove takes the chroot down once the VM is gone.
func (jl *jail) remove() {
	for _, b := range jl.binds {
		_ = unix.Unmount(b, unix.MNT_DETACH)
	}
	_ = os.RemoveAll(filepath.Dir(jl.root)) // <base>/firecracker/<id>
}
