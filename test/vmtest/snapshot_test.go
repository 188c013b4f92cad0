package vmtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/clonefile"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/qemu"
)

// TestSnapshotRestore: a running VM is saved and its QEMU ends; a new
// QEMU restored from that state answers without booting, with what the
// guest held only in memory (a file on a tmpfs, a process that keeps
// counting); a VM of another shape refuses the state, saying why.
func TestSnapshotRestore(t *testing.T) {
	v := start(t, shared.Vmlinux, shared.Images["busybox"], true)
	_, code := v.exec(t, "sh", "-c", "mkdir -p /run/x && echo before > /run/x/f && "+
		"(i=0; while true; do i=$((i+1)); echo $i > /run/x/n; sleep 0.2; done) </dev/null >/dev/null 2>&1 &")
	if code != 0 {
		t.Fatal("setting up the guest's state")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := &qemu.Driver{}
	dir := filepath.Join(t.TempDir(), "state")
	began := time.Now()
	st, err := d.Snapshot(ctx, v.in, v.spec, dir, vmm.SnapshotOptions{Stop: true})
	if err != nil {
		t.Fatal(err)
	}
	saved := time.Since(began)
	<-v.done
	v.client.Close()
	v.client = nil
	if st.Size == 0 || st.VMM != "qemu" || st.MemoryMiB != 512 || !strings.HasPrefix(st.VMMVersion, "QEMU emulator version") {
		t.Fatalf("state %+v", st)
	}
	// Mapped: the devices alone in the stream (a few hundred KB), the
	// memory a sparse file the size of the guest's.
	if !st.Mapped || st.Size > 4<<20 || st.RAM == 0 || st.RAM >= 512<<20 {
		t.Fatalf("state %+v: want a mapped state, devices under 4 MiB, a sparse memory file", st)
	}
	if _, err := os.Stat(dir + ".partial"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a partial state left: %v", err)
	}
	// The guest's memory is its secrets: the owner's alone.
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, vmm.MemoryFile): 0o600, filepath.Join(dir, vmm.StateFile): 0o600,
		filepath.Join(dir, vmm.RAMFile): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v, %v; want %v", path, fi.Mode().Perm(), err, want)
		}
	}

	began = time.Now()
	var recorded int
	in, err := d.Restore(ctx, v.spec, dir, func(in vmm.Instance) error { recorded = in.Process().Pid; return nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = in.Process().Kill()
		<-in.Done()
		if syscall.Kill(in.Process().Pid, 0) == nil {
			t.Errorf("restored QEMU (pid %d) still running", in.Process().Pid)
		}
	})
	if recorded != in.Process().Pid {
		t.Fatalf("started was told of pid %d, the restored QEMU is %d", recorded, in.Process().Pid)
	}
	c, err := boot.WaitAgent(ctx, in.DialAgent, in.Done())
	if err != nil {
		qlog, _ := os.ReadFile(in.VMMLog())
		t.Fatalf("the restored VM's agent: %v; qemu: %s", err, qlog)
	}
	defer c.Close()
	ready := time.Since(began)
	r := &vm{in: in, done: in.Done(), client: c}
	if out, _ := r.exec(t, "cat", "/run/x/f"); out != "before\n" {
		t.Fatalf("the tmpfs file after the restore: %q", out)
	}
	count := func() int {
		out, _ := r.exec(t, "cat", "/run/x/n")
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	first := count()
	deadline := time.Now().Add(time.Minute)
	for count() <= first {
		if time.Now().After(deadline) {
			t.Fatalf("the guest's counter stopped at %d after the restore", first)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("saved %d KB of devices and %d MB of memory in %s; restored to the agent's answer in %s (booted cold: %s)", st.Size>>10, st.RAM>>20, saved.Round(time.Millisecond), ready.Round(time.Millisecond), v.ready.Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(v.spec.Dir, "s")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the save's helper left its directory: %v", err)
	}

	other := v.spec
	other.MemoryMiB, other.Dir = 768, t.TempDir()
	if _, err := d.Restore(ctx, other, dir, func(vmm.Instance) error { return nil }); !errors.Is(err, vmm.ErrStateMismatch) || !strings.Contains(err.Error(), "memory (MiB) 512") {
		t.Fatalf("a state for another shape = %v", err)
	}
	// Another kernel (the same one with a byte more is another file).
	kernel, err := os.ReadFile(v.spec.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	other = v.spec
	other.Kernel, other.Dir = filepath.Join(t.TempDir(), "vmlinux"), t.TempDir()
	if err := os.WriteFile(other.Kernel, append(kernel, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Restore(ctx, other, dir, func(vmm.Instance) error { return nil }); !errors.Is(err, vmm.ErrStateMismatch) || !strings.Contains(err.Error(), "saved with kernel") {
		t.Fatalf("a state for another kernel = %v", err)
	}
}

// TestAdoptContinuesAPausedGuest: a daemon killed mid-save leaves its
// guest paused, with the save done or still under way; the next
// daemon's Adopt lets it run on. A save still under way is cancelled:
// were the guest continued during it, the migration's end would pause
// it again (seen as a VM taken back "running" whose agent never
// answered). The migration here goes to a socket that reads nothing
// until Adopt has returned, then everything.
func TestAdoptContinuesAPausedGuest(t *testing.T) {
	for _, midSave := range []bool{false, true} {
		t.Run(map[bool]string{false: "paused", true: "mid-save"}[midSave], func(t *testing.T) {
			v := start(t, shared.Vmlinux, shared.Images["busybox"], true)
			// QEMU serves one QMP client at a time: each command connects
			// anew, so that Adopt's own connection is served.
			qmpRun := func(cmd string) string {
				t.Helper()
				mon, err := qmp.NewSocketMonitor("unix", filepath.Join(v.spec.Dir, "qmp.sock"), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if err := mon.Connect(); err != nil {
					t.Fatal(err)
				}
				defer mon.Disconnect()
				out, err := mon.Run([]byte(cmd))
				if err != nil {
					t.Fatalf("%s: %v", cmd, err)
				}
				return string(out)
			}
			qmpRun(`{"execute":"stop"}`)
			drained := make(chan error, 1)
			release := make(chan struct{})
			if midSave {
				sock := filepath.Join(t.TempDir(), "mig.sock")
				ln, err := net.Listen("unix", sock)
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				go func() {
					c, err := ln.Accept()
					if err != nil {
						drained <- err
						return
					}
					defer c.Close()
					<-release
					_, err = io.Copy(io.Discard, c)
					drained <- err
				}()
				qmpRun(`{"execute":"migrate","arguments":{"uri":"unix:` + sock + `"}}`)
				deadline := time.Now().Add(time.Minute)
				for !strings.Contains(qmpRun(`{"execute":"query-migrate"}`), `"status": "active"`) {
					if time.Now().After(deadline) {
						t.Fatal("the migration never became active")
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, err := v.client.Ping(ctx); err == nil {
				t.Fatal("a paused guest answered")
			}
			cancel()
			if _, err := (&qemu.Driver{}).Adopt(v.spec, v.in.ID()); err != nil {
				t.Fatal(err)
			}
			if midSave {
				close(release)
				select {
				case err := <-drained:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(3 * time.Minute):
					t.Fatal("the migration never ended")
				}
			}
			if st := qmpRun(`{"execute":"query-status"}`); !strings.Contains(st, `"running": true`) {
				t.Fatalf("the adopted guest: %s", st)
			}
			ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := v.client.Ping(ctx); err != nil {
				t.Fatalf("the adopted guest: %v", err)
			}
		})
	}
}

// TestSharedPages: copies restored from one mapped state share its
// memory's pages on the host, within a sharing group alone. Two VMs of
// the saving VM's group map the state's own memory file and hold the
// guest's data as pages shared between them; a VM of another group maps
// a copy of its own (its pages its own); one that shares with none maps
// an unnamed private copy. Each still has the guest's data, and the
// group's copy is made once.
func TestSharedPages(t *testing.T) {
	v := start(t, shared.Vmlinux, shared.Images["busybox"], true)
	// 16 MB the guest holds only in memory, pages no other VM has.
	if _, code := v.exec(t, "sh", "-c", "mkdir -p /run/x && head -c 16777216 /dev/urandom > /run/x/big && md5sum /run/x/big > /run/x/sum"); code != 0 {
		t.Fatal("setting up the guest's state")
	}
	want, _ := v.exec(t, "cat", "/run/x/sum")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d := &qemu.Driver{}
	dir := filepath.Join(t.TempDir(), "state")
	spec := v.spec
	spec.Share = "cli"
	if _, err := d.Snapshot(ctx, v.in, spec, dir, vmm.SnapshotOptions{Stop: true}); err != nil {
		t.Fatal(err)
	}
	<-v.done
	v.client.Close()
	v.client = nil

	restore := func(share string) *vm {
		t.Helper()
		s := v.spec
		s.Dir, s.Share = t.TempDir(), share
		s.Disks = slices.Clone(v.spec.Disks)
		s.Disks[1].Path = filepath.Join(s.Dir, "work.ext4")
		if _, err := clonefile.Copy(v.spec.Disks[1].Path, s.Disks[1].Path); err != nil {
			t.Fatal(err)
		}
		r := restored(ctx, t, d, s, dir)
		// Reading the data faults its pages in from the memory file.
		if got, _ := r.exec(t, "sh", "-c", "md5sum /run/x/big"); got != want {
			t.Fatalf("group %q: the guest's data after the restore: %q, want %q", share, got, want)
		}
		return r
	}
	a1, a2 := restore("cli"), restore("cli")
	b := restore("e2b:key")
	none := restore("")

	own := filepath.Join(dir, vmm.RAMFile)
	for _, r := range []*vm{a1, a2} {
		m := guestMemory(t, r.in.Process().Pid)
		if m.path != own {
			t.Fatalf("a VM of the saving group maps %q, want %q", m.path, own)
		}
		if m.sharedClean < 16<<10 {
			t.Fatalf("a VM of the saving group shares %d KB of its memory's pages, want the guest's 16 MB at least (%+v)", m.sharedClean, m)
		}
	}
	mb := guestMemory(t, b.in.Process().Pid)
	if !strings.HasPrefix(mb.path, filepath.Join(dir, "ram-")) {
		t.Fatalf("a VM of another group maps %q, want its group's copy in %s", mb.path, dir)
	}
	if mb.sharedClean != 0 {
		t.Fatalf("a VM of another group shares %d KB of pages: %+v", mb.sharedClean, mb)
	}
	mn := guestMemory(t, none.in.Process().Pid)
	if !strings.HasSuffix(mn.path, "(deleted)") || strings.HasPrefix(mn.path, own) || mn.sharedClean != 0 {
		t.Fatalf("a VM that shares with none maps %+v, want an unnamed copy of its own", mn)
	}
	// The other group's copy is made once: a second VM of it maps it.
	b2 := restore("e2b:key")
	if m := guestMemory(t, b2.in.Process().Pid); m.path != mb.path || m.sharedClean < 16<<10 {
		t.Fatalf("a second VM of the other group maps %+v, want %s shared with the first", m, mb.path)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 4 { // memory, ram, ram-DIGEST, state.json
		t.Fatalf("the state directory holds %v", names)
	}
}

// restored starts a VM of spec s from the state in dir and waits for its
// agent; cleanup ends it.
func restored(ctx context.Context, t *testing.T, d *qemu.Driver, s vmm.Spec, dir string) *vm {
	t.Helper()
	in, err := d.Restore(ctx, s, dir, func(vmm.Instance) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Process().Kill(); <-in.Done() })
	c, err := boot.WaitAgent(ctx, in.DialAgent, in.Done())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &vm{in: in, done: in.Done(), client: c, spec: s}
}

// memoryMap is the guest memory's mapping in a QEMU, from smaps.
type memoryMap struct {
	path                      string
	sharedClean, privateClean int // KB
}

// guestMemory finds QEMU pid's mapping of the guest's 512 MiB.
func guestMemory(t *testing.T, pid int) memoryMap {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var cur *memoryMap
	var found []memoryMap
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"): // a mapping's first line
			if cur != nil {
				found = append(found, *cur)
			}
			cur = &memoryMap{}
			if len(f) >= 6 {
				cur.path = strings.Join(f[5:], " ")
			}
		case cur != nil && len(f) >= 2 && f[0] == "Size:":
			if f[1] != "524288" {
				cur.path = "" // not the guest's memory
			}
		case cur != nil && len(f) >= 2 && f[0] == "Shared_Clean:":
			cur.sharedClean, _ = strconv.Atoi(f[1])
		case cur != nil && len(f) >= 2 && f[0] == "Private_Clean:":
			cur.privateClean, _ = strconv.Atoi(f[1])
		}
	}
	if cur != nil {
		found = append(found, *cur)
	}
	for _, m := range found {
		if m.path != "" && m.path != "[heap]" {
			return m
		}
	}
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	t.Fatalf("QEMU %d maps no file of the guest's 512 MiB:\n%s", pid, maps)
	return memoryMap{}
}

// TestLegacyState: a state saved as banger did before mapped memory,
// memory and devices in one migration stream, still restores (read
// whole into QEMU's own memory).
func TestLegacyState(t *testing.T) {
	v := start(t, shared.Vmlinux, shared.Images["busybox"], true)
	if _, code := v.exec(t, "sh", "-c", "mkdir -p /run/x && echo legacy > /run/x/f"); code != 0 {
		t.Fatal("setting up the guest's state")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mon, err := qmp.NewSocketMonitor("unix", filepath.Join(v.spec.Dir, "qmp.sock"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	mem := filepath.Join(dir, vmm.MemoryFile)
	for _, cmd := range []string{`{"execute":"stop"}`, `{"execute":"migrate","arguments":{"uri":"exec:cat > ` + mem + `"}}`} {
		if _, err := mon.Run([]byte(cmd)); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := mon.Run([]byte(`{"execute":"query-migrate"}`))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), `"completed"`) {
			break
		}
		if time.Now().After(deadline) || strings.Contains(string(out), `"failed"`) {
			t.Fatalf("the legacy save: %s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mon.Disconnect()
	_ = v.in.Process().Kill()
	<-v.done
	v.client.Close()
	v.client = nil
	var desc vmm.Describer
	st, err := desc.Describe(ctx, v.spec, "qemu", "qemu-system-x86_64", "tcg")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(mem)
	if err != nil {
		t.Fatal(err)
	}
	st.Size, st.Saved = fi.Size(), time.Now()
	if err := vmm.WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
	r := restored(ctx, t, &qemu.Driver{}, v.spec, dir)
	if out, _ := r.exec(t, "cat", "/run/x/f"); out != "legacy\n" {
		t.Fatalf("the tmpfs file after restoring a legacy state: %q", out)
	}
}

// TestSnapshotTap: a VM on a tap is saved mapped too. Its device state
// asks for a tap (vnet_hdr), so the save's helper makes one of its own in
// a network namespace of its own: the host never sees it, and the VM's
// tap is never touched. The state restores onto the VM's tap.
func TestSnapshotTap(t *testing.T) {
	const tap = "bgrtst0"
	if out, err := exec.Command("ip", "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr").CombinedOutput(); err != nil {
		t.Fatalf("making a tap: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", tap).Run() })
	v := startVM(t, opts{kernel: shared.Vmlinux, image: shared.Images["busybox"], wantAgent: true, params: proto.BootParams{Hostname: "vmtest"},
		nic: &vmm.NIC{Tap: tap, MAC: "52:54:00:00:00:01"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := &qemu.Driver{} // a save that falls back to a stream is not mapped: checked below
	dir := filepath.Join(t.TempDir(), "state")
	saw := make(chan bool, 1)
	go func() { // the host's links while the helper runs
		for {
			select {
			case <-ctx.Done():
				return
			default:
			}
			if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), "bgr-save") {
				saw <- true
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	st, err := d.Snapshot(ctx, v.in, v.spec, dir, vmm.SnapshotOptions{Stop: true})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Mapped {
		t.Fatalf("a tap VM's state: %+v, want mapped", st)
	}
	select {
	case <-saw:
		t.Fatal("the helper's tap showed on the host")
	default:
	}
	<-v.done
	v.client.Close()
	v.client = nil
	restored(ctx, t, d, v.spec, dir)
}
