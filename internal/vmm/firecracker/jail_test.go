package firecracker

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/vmm"
)

func touch(t *testing.T, p string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(p, []byte(filepath.Base(p)), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestJailLayout(t *testing.T) {
	src := t.TempDir()
	fc := touch(t, filepath.Join(src, "firecracker"), 0o755)
	s := vmm.Spec{
		Kernel: touch(t, filepath.Join(src, "vmlinux"), 0o644), Initrd: touch(t, filepath.Join(src, "initrd.cpio"), 0o644),
		Disks: []vmm.Disk{
			{Path: touch(t, filepath.Join(src, "rootfs.ext4"), 0o644), ReadOnly: true, Serial: proto.RootSerial},
			{Path: touch(t, filepath.Join(src, "work.ext4"), 0o600), Serial: proto.WorkSerial},
		},
	}
	j := &Jailer{Binary: "jailer", UID: os.Getuid(), GID: os.Getgid(), BaseDir: filepath.Join(src, "jail")}
	jl, err := j.prepare("vm-1", fc, s)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(src, "jail", "firecracker", "vm-1", "root"); jl.root != want {
		t.Fatalf("chroot %s, want %s", jl.root, want)
	}
	// Firecracker sees chroot paths; each is the host file itself.
	pairs := map[string]string{jl.spec.Kernel: s.Kernel, jl.spec.Initrd: s.Initrd, jl.spec.Disks[0].Path: s.Disks[0].Path, jl.spec.Disks[1].Path: s.Disks[1].Path}
	for inJail, host := range pairs {
		if !strings.HasPrefix(inJail, "/") || strings.Count(inJail, "/") != 1 {
			t.Errorf("path %q is not at the chroot's top", inJail)
		}
		a, err1 := os.Stat(filepath.Join(jl.root, inJail))
		b, err2 := os.Stat(host)
		if err1 != nil || err2 != nil || !os.SameFile(a, b) {
			t.Errorf("%s in the jail is not %s (%v, %v)", inJail, host, err1, err2)
		}
	}
	if jl.spec.Disks[1].Serial != proto.WorkSerial || !jl.spec.Disks[0].ReadOnly {
		t.Errorf("disks lost their attributes: %+v", jl.spec.Disks)
	}
	fi, _ := os.Stat(filepath.Join(jl.root, jl.spec.Disks[1].Path))
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != j.UID {
		t.Errorf("the work disk belongs to uid %d, not the jailed %d", st.Uid, j.UID)
	}
	for _, want := range [][]string{{"--id", "vm-1"}, {"--exec-file", fc}, {"--chroot-base-dir", j.BaseDir}, {"--", "--api-sock", "/firecracker.sock"}} {
		i := slices.Index(jl.args, want[0])
		if i < 0 || !slices.Equal(jl.args[i:i+len(want)], want) {
			t.Errorf("jailer args %q lack %q", jl.args, want)
		}
	}
	if jl.apiSock != filepath.Join(jl.root, "firecracker.sock") || jl.vsock != filepath.Join(jl.root, "vsock.sock") {
		t.Errorf("sockets %s %s are not in the chroot", jl.apiSock, jl.vsock)
	}
	jl.remove()
	if _, err := os.Stat(filepath.Join(src, "jail", "firecracker", "vm-1")); !os.IsNotExist(err) {
		t.Fatalf("the jail outlived remove: %v", err)
	}
	if _, err := os.Stat(s.Disks[1].Path); err != nil {
		t.Fatalf("remove took the VM's own disk: %v", err)
	}
	if _, err := j.prepare("../escape", fc, s); err == nil {
		t.Fatal("a jail id with a path in it was accepted")
	}
}
