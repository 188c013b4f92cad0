package vmtest

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/bangerdev/banger/internal/boot"
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
	if _, err := os.Stat(dir + ".partial"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a partial state left: %v", err)
	}
	// The guest's memory is its secrets: the owner's alone.
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, vmm.MemoryFile): 0o600, filepath.Join(dir, vmm.StateFile): 0o600} {
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
	t.Logf("saved %d MB in %s; restored to the agent's answer in %s (booted cold: %s)", st.Size>>20, saved.Round(time.Millisecond), ready.Round(time.Millisecond), v.ready.Round(time.Millisecond))

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
