package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/test/report"
)

// smallFS mounts a new ext4 file system of size MiB, no blocks reserved
// for root (the daemon is root here), on dir, until the scenario ends.
func (t *T) smallFS(dir string, mib int) {
	img := dir + ".img"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("%v", err)
	}
	t.Run("truncate", "-s", fmt.Sprintf("%dM", mib), img)
	t.Run("mkfs.ext4", "-q", "-m", "0", "-F", img)
	t.Run("mount", "-o", "loop", img, dir)
	t.ownMounts = append(t.ownMounts, dir)
	t.defer_(func() {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		_ = os.Remove(img)
	})
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatalf("%v", err)
	}
}

// fill leaves keep bytes free on the file system at dir with one ballast
// file, and returns a function that frees the space again.
func (t *T) fill(dir string, keep int64) func() {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatalf("%v", err)
	}
	ballast := filepath.Join(dir, "ballast")
	if n := int64(st.Bavail)*st.Bsize - keep; n > 0 {
		t.Run("fallocate", "-l", fmt.Sprint(n), ballast)
	}
	return func() {
		if err := os.Remove(ballast); err != nil {
			t.Fatalf("%v", err)
		}
	}
}

// noSpace checks a failure of r: exit 1, the wire code's message naming
// the file system's mount point, and nothing left behind.
func (t *T) noSpace(what string, r run, mount string) string {
	if r.code != 1 || !strings.Contains(r.stderr, "no space left") || !strings.Contains(r.stderr, "mounted at "+mount) || !strings.Contains(r.stderr, "free space there") {
		t.Fatalf("%s on a full file system: want exit 1 and an error naming %s, got %s", what, mount, r)
	}
	if leaks := t.leaks(); len(leaks) > 0 {
		t.Fatalf("%s on a full file system left: %s", what, strings.Join(leaks, "; "))
	}
	t.Must("daemon", "status") // still serving
	return strings.ReplaceAll(strings.TrimSpace(r.stderr), t.home, "$BANGER_HOME")
}

// fullDisks (make test; its table by make reliability): the state, the
// cache and a project's file system full in turn, each a small ext4 the
// scenario mounts. An image pull with the cache full, a VM create with
// the state full, and a workspace pull with the project's file system
// full and then with the state full each fail with an error naming the
// file system, leave nothing, and work once the space is freed; the
// daemon serves throughout.
func fullDisks(t *T) {
	state, cache, projFS := filepath.Join(t.home, "state"), filepath.Join(t.home, "cache"), filepath.Join(t.home, "projfs")
	t.smallFS(state, 1536) // the kernel bundle and its modules disk take most of a GiB
	t.smallFS(cache, 32)
	t.smallFS(projFS, 160)
	reg := t.bootable()
	ref := reg + "/smoke/full:1"
	t.Push(ref, t.busyboxImage())

	// 1. A pull with the cache full: the blobs have no room.
	free := t.fill(cache, 256<<10)
	rows := [][3]string{{"`image pull`", "cache", t.noSpace("image pull", t.Banger("image", "pull", ref), cache)}}
	if imgs := t.images(); len(imgs) != 0 {
		t.Fatalf("a failed pull left an image: %+v", imgs)
	}
	if tmp := t.temporaries(); len(tmp) != 0 {
		t.Fatalf("a failed pull left %v", tmp)
	}
	free()
	t.Must("image", "pull", ref)

	// 2. A create with the state full.
	create := []string{"vm", "create", "--name", "c", "--image", ref, "--network", "none", "--memory", "256M", "--cpus", "1", "--cold", "--disk", "256M"}
	free = t.fill(state, 256<<10)
	rows = append(rows, [3]string{"`vm create`", "state", t.noSpace("vm create", t.Banger(create...), state)})
	var list api.VMListResult
	t.JSON(&list, "vm", "list")
	if len(list.VMs) != 0 {
		t.Fatalf("a failed create left VMs: %+v", list.VMs)
	}
	free()
	proj := filepath.Join(projFS, "proj")
	t.makeRepo(proj)
	t.Must(append(create, "--workspace", proj)...)

	// 3. A workspace pull with the project's file system full: the
	// guest made a file of 32 MiB that the host has no room for.
	t.Must("vm", "exec", "c", "--", "sh", "-c", "head -c 33554432 /dev/urandom > /workspace/big && echo changed > /workspace/f")
	free = t.fill(projFS, 48<<20)
	rows = append(rows, [3]string{"`vm workspace pull`", "the project's", t.noSpace("workspace pull", t.Banger("vm", "workspace", "pull", "c"), projFS)})
	if b, _ := os.ReadFile(filepath.Join(proj, "f")); string(b) != "one\n" {
		t.Fatalf("a refused pull changed the host's f to %q", b)
	}
	if _, err := os.Stat(filepath.Join(proj, "big")); err == nil {
		t.Fatalf("a refused pull left big in the project")
	}
	free()
	t.Must("vm", "workspace", "pull", "c")
	if b, _ := os.ReadFile(filepath.Join(proj, "f")); string(b) != "changed\n" {
		t.Fatalf("the pull after freeing space: f is %q", b)
	}

	// 4. A workspace pull with the state full: the sync's state, saved
	// after the host tree changes, has no room; the tree stays as it was.
	// The VM's work disk lives on the same file system: its blocks are
	// allocated first, so the guest's own writes (a journal commit, an
	// atime) still land and QEMU does not pause it for want of room,
	// which is not what this step is about.
	t.Must("vm", "exec", "c", "--", "sh", "-c", "echo again > /workspace/f")
	var c api.VM
	t.JSON(&c, "vm", "show", "c")
	disks, _ := filepath.Glob(filepath.Join(state, "vms", c.ID, "work.ext4"))
	if len(disks) != 1 {
		t.Fatalf("the work disk of vm c: %v", disks)
	}
	t.Run("fallocate", "-l", "256M", disks[0])
	free = t.fill(state, 256<<10)
	rows = append(rows, [3]string{"`vm workspace pull`", "state", t.noSpace("workspace pull", t.Banger("vm", "workspace", "pull", "c"), state)})
	if b, _ := os.ReadFile(filepath.Join(proj, "f")); string(b) != "changed\n" {
		t.Fatalf("a pull refused for a full state changed the host's f to %q", b)
	}
	free()
	t.Must("vm", "workspace", "pull", "c")
	if b, _ := os.ReadFile(filepath.Join(proj, "f")); string(b) != "again\n" {
		t.Fatalf("the pull after freeing the state: f is %q", b)
	}
	t.Must("vm", "delete", "--force", "c")
	if leaks := t.leaks(); len(leaks) > 0 {
		t.Fatalf("left at the end: %s", strings.Join(leaks, "; "))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s.\n\n| request | full file system | error (exit 1) | after freeing |\n|---|---|---|---|\n", runContext())
	for _, r := range rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | succeeded |\n", r[0], r[1], strings.ReplaceAll(r[2], "|", "\\|"))
	}
	sb.WriteString("\nEach failure left nothing (no image, VM, staging file, process, mount or store row; the store passed its integrity check), and the daemon answered `daemon status` after each.\n")
	fmt.Printf("%s:\n%s", t.name, sb.String())
	if t.tools.crashReport != "" {
		if err := report.Splice(t.tools.crashReport, "full-disks", sb.String()); err != nil {
			t.Fatalf("%v", err)
		}
	}
}
