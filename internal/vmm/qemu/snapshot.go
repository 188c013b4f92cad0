package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/clonefile"
	"github.com/bangerdev/banger/internal/vmm"
)

// qmpSocket is a VM's QMP control socket in its runtime directory.
const qmpSocket = "qmp.sock"

// Snapshots travel over a file descriptor handed to QEMU (QMP getfd):
// no shell (an exec: URI would run one) and no path QEMU must open.
const snapFD = "banger-state"

// describe is the state s would need, under this QEMU here.
func (d *Driver) describe(ctx context.Context, s vmm.Spec) (vmm.State, error) {
	return d.states.Describe(ctx, s, d.Name(), d.binary(), d.machineOf(s).Accel)
}

// monitor is a QMP connection to one QEMU.
type monitor struct{ m *qmp.SocketMonitor }

// dialQMP connects to QEMU's control socket, waiting for it while QEMU
// starts (until ctx ends or QEMU does).
func dialQMP(ctx context.Context, path string, exited <-chan struct{}) (*monitor, error) {
	for {
		m, err := qmp.NewSocketMonitor("unix", path, 5*time.Second)
		if err == nil {
			if err = m.Connect(); err == nil {
				return &monitor{m: m}, nil
			}
			_ = m.Disconnect()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to QEMU's control socket: %w (last: %v)", ctx.Err(), err)
		case <-exited:
			return nil, errors.New("QEMU exited before its control socket answered")
		case <-time.After(5 * time.Millisecond): // QEMU makes its socket early: a restore waits on this
		}
	}
}

func (m *monitor) close() { _ = m.m.Disconnect() }

// run executes a QMP command and decodes its return value into out
// (nil: ignored).
func (m *monitor) run(command string, args any, out any, file ...*os.File) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var raw []byte
	if len(file) > 0 {
		raw, err = m.m.RunWithFile(b, file[0])
	} else {
		raw, err = m.m.Run(b)
	}
	if err != nil {
		return fmt.Errorf("QMP %s: %w", command, err)
	}
	if out == nil {
		return nil
	}
	var resp struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		return fmt.Errorf("QMP %s: reading its answer: %w", command, err)
	}
	if err := json.Unmarshal(resp.Return, out); err != nil {
		return fmt.Errorf("QMP %s: reading its answer: %w", command, err)
	}
	return nil
}

// migration is what query-migrate answers (the part read here).
type migration struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
}

// waitMigration polls a migration until it completed or failed.
func (m *monitor) waitMigration(ctx context.Context, exited <-chan struct{}) error {
	for {
		var st migration
		if err := m.run("query-migrate", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("QEMU's migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			_ = m.run("migrate_cancel", nil, nil)
			return ctx.Err()
		case <-exited:
			return errors.New("QEMU exited during the migration")
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Snapshot saves in's memory and device state into dir, mapped: the
// guest's memory as a file (vmm.RAMFile) a restore maps copy-on-write,
// its devices alone in vmm.MemoryFile. QEMU 7.2 writes memory only as a
// migration stream, so the guest, paused, migrates into a helper QEMU
// whose memory is that file (shared): once it has the whole state, the
// helper saves its devices with x-ignore-shared, which leaves out memory
// a file backs, and quits. Where no helper starts (a tap VM's needs a
// network namespace of its own, which takes a user namespace when not
// root), the state is one stream, as older bangers saved it. The
// description is written last and the directory renamed into place, so
// a crash leaves a whole state or none. The VM then runs on, or with
// stop its QEMU quits.
func (d *Driver) Snapshot(ctx context.Context, vin vmm.Instance, s vmm.Spec, dir string, o vmm.SnapshotOptions) (vmm.State, error) {
	in, ok := vin.(*instance)
	if !ok {
		return vmm.State{}, fmt.Errorf("snapshot: not a QEMU VM")
	}
	st, err := d.describe(ctx, s)
	if err != nil {
		return st, err
	}
	if _, err := os.Stat(in.qmp); err != nil {
		return st, fmt.Errorf("snapshot: this VM's QEMU has no control socket (it was started by an older banger): restart the VM first")
	}
	tmp, err := vmm.StageState(dir)
	if err != nil {
		return st, err
	}
	defer os.RemoveAll(tmp)
	ram := filepath.Join(tmp, vmm.RAMFile)
	rf, err := os.OpenFile(ram, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	defer rf.Close()
	if err := rf.Truncate(int64(s.MemoryMiB) << 20); err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	// Started before the guest is paused: its start is not the guest's
	// pause. One that cannot start (no user namespace for a tap's) makes
	// a state as older bangers did, memory and devices in one stream.
	h, err := d.startHelper(ctx, s, ram)
	if err != nil {
		if ctx.Err() != nil {
			return st, fmt.Errorf("snapshot: %w", err)
		}
		if d.Log != nil {
			d.Log.Warn("a VM is saved with its memory in a stream (read whole when restored, shared with none)", "reason", err)
		}
		rf.Close()
		if err := os.Remove(ram); err != nil {
			return st, fmt.Errorf("snapshot: %w", err)
		}
	}
	end := func() {
		if h != nil {
			h.end()
		}
	}
	mon, err := dialQMP(ctx, in.qmp, in.Done())
	if err != nil {
		end()
		return st, fmt.Errorf("snapshot: %w", err)
	}
	defer mon.close()
	if err := mon.run("stop", nil, nil); err != nil {
		end()
		return st, fmt.Errorf("snapshot: pausing the VM: %w", err)
	}
	saved := false
	defer func() {
		// The helper first: it holds the disks' locks once it has the
		// state, and the guest takes them back when it runs again.
		end()
		if !saved || !o.Stop {
			_ = mon.run("cont", nil, nil) // running again, whatever happened
		}
	}()
	if o.Paused != nil {
		if err := o.Paused(); err != nil {
			return st, fmt.Errorf("snapshot: %w", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(tmp, vmm.MemoryFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	defer f.Close()
	if h != nil {
		if err := migrateTo(ctx, mon, in.Done(), h); err != nil {
			return st, fmt.Errorf("snapshot: %w", err)
		}
		if err := h.saveDevices(ctx, f); err != nil {
			return st, fmt.Errorf("snapshot: the helper saving the devices: %w", err)
		}
		if err := rf.Sync(); err != nil {
			return st, fmt.Errorf("snapshot: %w", err)
		}
		st.Mapped, st.Share = true, s.Share
	} else if err := migrateOut(ctx, mon, in.Done(), f); err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	if st, err = vmm.CommitState(tmp, dir, st); err != nil {
		return st, err
	}
	saved = true
	if o.Stop {
		end()
		_ = mon.run("quit", nil, nil)
		select {
		case <-in.Done():
		case <-ctx.Done():
			_ = in.Process().Kill()
			<-in.Done()
		}
	}
	return st, nil
}

// migrateOut migrates the paused guest behind mon into f (a file, or a
// socket to a helper), memory and devices in one stream.
func migrateOut(ctx context.Context, mon *monitor, exited <-chan struct{}, f *os.File) error {
	// A VM restored from a mapped state has x-ignore-shared on from its
	// restore; its own memory is not shared, and the stream must say
	// the same as whoever loads it.
	if err := setCaps(mon, map[string]bool{"x-ignore-shared": false}); err != nil {
		return err
	}
	// QEMU caps a migration at 128 MiB/s by default: a local one wants
	// none.
	if err := mon.run("migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return err
	}
	if err := mon.run("getfd", map[string]any{"fdname": snapFD}, nil, f); err != nil {
		return err
	}
	if err := mon.run("migrate", map[string]any{"uri": "fd:" + snapFD}, nil); err != nil {
		return err
	}
	return mon.waitMigration(ctx, exited)
}

// migrateTo migrates the paused guest behind mon into the helper h over
// a socket pair, and waits until both ends are done.
func migrateTo(ctx context.Context, mon *monitor, exited <-chan struct{}, h *helper) error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	out, in := os.NewFile(uintptr(fds[0]), "migration-out"), os.NewFile(uintptr(fds[1]), "migration-in")
	defer out.Close() // each QEMU has its own copy
	defer in.Close()
	if err := h.mon.run("getfd", map[string]any{"fdname": snapFD}, nil, in); err != nil {
		return fmt.Errorf("the helper: %w", err)
	}
	if err := h.mon.run("migrate-incoming", map[string]any{"uri": "fd:" + snapFD}, nil); err != nil {
		return fmt.Errorf("the helper: %w", err)
	}
	if err := migrateOut(ctx, mon, exited, out); err != nil {
		return err
	}
	if err := h.mon.waitMigration(ctx, h.in.Done()); err != nil {
		return fmt.Errorf("the helper: %w; %s", err, tail(h.in.VMMLog()))
	}
	return nil
}

// setCaps sets migration capabilities.
func setCaps(mon *monitor, caps map[string]bool) error {
	var list []map[string]any
	for name, on := range caps {
		list = append(list, map[string]any{"capability": name, "state": on})
	}
	return mon.run("migrate-set-capabilities", map[string]any{"capabilities": list}, nil)
}

// helper is a save's second QEMU: the guest migrates into it, its
// memory the state's RAM file.
type helper struct {
	in  *instance
	mon *monitor
	dir string
}

// helperDir is a helper's runtime directory in its VM's: short, so its
// sockets' paths stay within the limit.
const helperDir = "s"

// helperTap is the tap a helper makes in its own network namespace.
const helperTap = "bgr-save"

// startHelper starts a helper for a VM of spec s, paused and waiting for
// the incoming state, its memory the file ram. Its devices are s's, but
// for the network's host end: none (a NIC with no cable) where s's would
// hold a tap or a socket, and a user-mode stack with no forwards where
// its state is part of the VM's (QEMU's slirp).
func (d *Driver) startHelper(ctx context.Context, s vmm.Spec, ram string) (*helper, error) {
	hs := s
	hs.Dir = filepath.Join(s.Dir, helperDir)
	if err := os.RemoveAll(hs.Dir); err != nil {
		return nil, err
	}
	if err := os.Mkdir(hs.Dir, 0o700); err != nil {
		return nil, err
	}
	netns := false
	switch n := s.NIC; {
	case n == nil:
	case n.User && !n.Outbound:
		c := *n
		c.Forwards = nil
		hs.NIC = &c
	case !n.User && !n.Unplugged:
		// A tap's device state asks for a tap (vnet_hdr): one of the
		// helper's own, in a network namespace of its own.
		hs.NIC, netns = &vmm.NIC{MAC: n.MAC, Tap: helperTap}, true
	default:
		hs.NIC = &vmm.NIC{MAC: n.MAC, Unplugged: true}
	}
	in, _, err := d.launch(hs, launchOpts{ram: &ramFile{Path: ram, Shared: true}, extra: []string{"-incoming", "defer", "-S"}, helper: true, netns: netns})
	if err != nil {
		os.RemoveAll(hs.Dir)
		return nil, fmt.Errorf("starting the helper: %w", err)
	}
	h := &helper{in: in, dir: hs.Dir}
	if h.mon, err = dialQMP(ctx, in.qmp, in.Done()); err != nil {
		h.end()
		return nil, fmt.Errorf("the helper: %w; %s", err, tail(in.VMMLog()))
	}
	if err := setCaps(h.mon, map[string]bool{"x-ignore-shared": false}); err != nil {
		h.end()
		return nil, fmt.Errorf("the helper: %w", err)
	}
	return h, nil
}

// saveDevices saves the helper's devices to f: with x-ignore-shared its
// memory, a shared file, is left out. Then it quits.
func (h *helper) saveDevices(ctx context.Context, f *os.File) error {
	if err := setCaps(h.mon, map[string]bool{"x-ignore-shared": true}); err != nil {
		return err
	}
	if err := h.mon.run("getfd", map[string]any{"fdname": snapFD}, nil, f); err != nil {
		return err
	}
	if err := h.mon.run("migrate", map[string]any{"uri": "fd:" + snapFD}, nil); err != nil {
		return err
	}
	if err := h.mon.waitMigration(ctx, h.in.Done()); err != nil {
		return err
	}
	_ = h.mon.run("quit", nil, nil)
	select {
	case <-h.in.Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// end ends the helper, if it runs, and removes its directory.
func (h *helper) end() {
	if h.mon != nil {
		h.mon.close()
		h.mon = nil
	}
	_ = h.in.Process().Kill()
	<-h.in.Done()
	os.RemoveAll(h.dir)
}

// tail is the end of a QEMU's own log, for an error.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 512 {
		b = b[len(b)-512:]
	}
	return "QEMU said: " + strings.TrimSpace(string(b))
}

// Restore starts QEMU for s from the state in dir: refused, with the
// reason, unless the state was saved by this QEMU, here, for the same
// kernel, initramfs and machine. A mapped state's memory file is mapped
// copy-on-write (see ramOf) and its devices loaded through a
// descriptor; a state of an older banger's, memory and devices in one
// stream, is read whole into anonymous memory as it was. Then it runs.
func (d *Driver) Restore(ctx context.Context, s vmm.Spec, dir string, started func(vmm.Instance) error) (vmm.Instance, error) {
	st, err := d.loadable(ctx, s, dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, vmm.MemoryFile))
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	o := launchOpts{extra: []string{"-incoming", "defer"}}
	if st.Mapped {
		path, private, err := d.ramOf(dir, st, s.Share)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		if private != nil {
			defer private.Close() // QEMU has opened it by then
			o.files = []*os.File{private}
		}
		o.ram = &ramFile{Path: path}
	}
	in, _, err := d.launch(s, o)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (vmm.Instance, error) {
		_ = in.Process().Kill()
		<-in.Done()
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := started(in); err != nil {
		return fail(err)
	}
	mon, err := dialQMP(ctx, in.qmp, in.Done())
	if err != nil {
		return fail(err)
	}
	defer mon.close()
	// The saving helper's stream says x-ignore-shared, and a stream
	// loads only where the capability is the same.
	if err := setCaps(mon, map[string]bool{"x-ignore-shared": st.Mapped}); err != nil {
		return fail(err)
	}
	if err := mon.run("getfd", map[string]any{"fdname": snapFD}, nil, f); err != nil {
		return fail(err)
	}
	if err := mon.run("migrate-incoming", map[string]any{"uri": "fd:" + snapFD}, nil); err != nil {
		return fail(err)
	}
	if err := mon.waitMigration(ctx, in.Done()); err != nil {
		return fail(fmt.Errorf("%w; %s", err, tail(in.VMMLog())))
	}
	if err := mon.run("cont", nil, nil); err != nil {
		return fail(err)
	}
	return in, nil
}

// ramOf is the memory file a VM of sharing group share maps from the
// mapped state in dir. Pages of one file are shared by every VM that maps
// it, so a VM maps the state's own file only in the group that saved it;
// another group maps a copy of its own, made once and kept beside
// (ram-DIGEST: a reflink where the file system has them, still its own
// page cache); a VM that shares with none (share "") an unnamed copy
// (O_TMPFILE), passed as a descriptor, gone with its QEMU.
func (d *Driver) ramOf(dir string, st vmm.State, share string) (path string, private *os.File, err error) {
	src := filepath.Join(dir, vmm.RAMFile)
	switch {
	case share != "" && share == st.Share:
		return src, nil, nil
	case share != "":
		sum := sha256.Sum256([]byte(share))
		path := filepath.Join(dir, "ram-"+hex.EncodeToString(sum[:8]))
		unlock := d.lockPath(path)
		defer unlock()
		if _, err := os.Stat(path); err == nil {
			return path, nil, nil
		}
		if _, err := clonefile.Copy(src, path); err != nil {
			return "", nil, fmt.Errorf("copying the saved memory for its group: %w", err)
		}
		return path, nil, nil
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("copying the saved memory: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ram")
	if _, err := clonefile.Into(f, src); err != nil {
		f.Close()
		return "", nil, err
	}
	return "/dev/fd/3", f, nil
}

// lockPath serializes what is done to one path (a group's copy, made
// once); unlock releases it.
func (d *Driver) lockPath(path string) (unlock func()) {
	d.mu.Lock()
	if d.paths == nil {
		d.paths = map[string]*sync.Mutex{}
	}
	m, ok := d.paths[path]
	if !ok {
		m = &sync.Mutex{}
		d.paths[path] = m
	}
	d.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// Loadable says why the state in dir would not load for s here.
func (d *Driver) Loadable(ctx context.Context, s vmm.Spec, dir string) error {
	_, err := d.loadable(ctx, s, dir)
	return err
}

// loadable is the state in dir if it would load for s here.
func (d *Driver) loadable(ctx context.Context, s vmm.Spec, dir string) (vmm.State, error) {
	want, err := d.describe(ctx, s)
	if err != nil {
		return want, err
	}
	st, err := vmm.ReadState(dir)
	if err != nil {
		return st, err
	}
	return st, st.Check(want)
}

// unpause continues a guest left paused, if its QEMU has a control
// socket and says so.
func (in *instance) unpause() {
	if _, err := os.Stat(in.qmp); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mon, err := dialQMP(ctx, in.qmp, in.Done())
	if err != nil {
		return
	}
	defer mon.close()
	// A save still under way is cancelled first: continued during the
	// migration, the guest would be paused again when it completes.
	var mig migration
	if mon.run("query-migrate", nil, &mig) == nil && migrating(mig.Status) {
		_ = mon.run("migrate_cancel", nil, nil)
		_ = mon.waitMigration(ctx, in.Done()) // "cancelled" is its expected error
	}
	var st struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if mon.run("query-status", nil, &st) == nil && !st.Running && st.Status != "inmigrate" {
		_ = mon.run("cont", nil, nil)
	}
}

// migrating says whether a query-migrate status is of an outgoing
// migration not yet over.
func migrating(status string) bool {
	switch status {
	case "", "none", "completed", "failed", "cancelled":
		return false
	}
	return true
}
