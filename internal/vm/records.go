package vm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/crashpoint"
	"github.com/bangerdev/banger/internal/logcap"
	"github.com/bangerdev/banger/internal/store"
)

// records are the VMs' records and leases, the places of their files,
// the lock each VM's lifecycle verbs queue on, and the events a record's
// changes announce.
type records struct {
	cfg  *Config
	keys *identity

	mu    sync.Mutex
	locks map[string]*sync.Mutex // one per VM name: its lifecycle verbs queue
}

func (r *records) run(id string) string   { return filepath.Join(r.cfg.RunDir, id) }
func (r *records) state(id string) string { return filepath.Join(r.cfg.StateDir, id) }
func (r *records) work(id string) string  { return filepath.Join(r.state(id), "work.ext4") }

// suspended holds a suspended VM's saved memory and device state.
func (r *records) suspended(id string) string { return filepath.Join(r.state(id), "suspended") }

// checkpoint holds a VM's checkpoint tag.
func (r *records) checkpoint(id, tag string) string {
	return filepath.Join(r.state(id), checkpointsDir, tag)
}

// lock serializes the lifecycle verbs of one VM.
func (r *records) lock(name string) func() {
	m := r.mutex(name)
	m.Lock()
	return m.Unlock
}

// tryLock takes name's lock only if no verb holds it.
func (r *records) tryLock(name string) (func(), bool) {
	m := r.mutex(name)
	if !m.TryLock() {
		return nil, false
	}
	return m.Unlock, true
}

func (r *records) mutex(name string) *sync.Mutex {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.locks == nil {
		r.locks = map[string]*sync.Mutex{}
	}
	m, ok := r.locks[name]
	if !ok {
		m = &sync.Mutex{}
		r.locks[name] = m
	}
	return m
}

// find reads a VM's record; a missing one is api.ErrNotFound.
func (r *records) find(ctx context.Context, name string) (store.VM, error) {
	if name == "" {
		return store.VM{}, fmt.Errorf("%w: a VM name is required (see `banger vm list`)", api.ErrInvalidArgument)
	}
	var rec store.VM
	err := r.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		rec, err = tx.VM(ctx, name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return store.VM{}, fmt.Errorf("vm %q: %w (see `banger vm list`)", name, api.ErrNotFound)
	}
	return rec, err
}

// all reads every VM's record.
func (r *records) all(ctx context.Context) ([]store.VM, error) {
	var all []store.VM
	err := r.cfg.Store.View(ctx, func(tx *store.Tx) error {
		var err error
		all, err = tx.VMs(ctx)
		return err
	})
	return all, err
}

// locked takes the lock of the VM named name and reads its record;
// unlock releases the lock.
func (r *records) locked(ctx context.Context, name string) (rec store.VM, unlock func(), err error) {
	unlock = r.lock(name)
	if rec, err = r.find(ctx, name); err != nil {
		unlock()
		return store.VM{}, nil, err
	}
	return rec, unlock, nil
}

// whenFree runs act on the running VM named name under its lock, unless
// a lifecycle verb or operation holds it (false, nothing done).
func (r *records) whenFree(ctx context.Context, name string, act func(store.VM) error) (bool, error) {
	unlock, ok := r.tryLock(name)
	if !ok {
		return false, nil
	}
	defer unlock()
	rec, err := r.find(ctx, name)
	if err != nil || rec.State != api.VMRunning {
		return false, err
	}
	if err := act(rec); err != nil {
		return false, err
	}
	return true, nil
}

func (r *records) put(ctx context.Context, rec store.VM) error {
	return r.cfg.Store.Update(ctx, func(tx *store.Tx) error { return tx.PutVM(ctx, rec) })
}

// add records rec, creating, with a lease on the bridge when it is on
// it: a taken name is api.ErrAlreadyExists.
func (r *records) add(ctx context.Context, rec *store.VM) error {
	err := r.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		if err := insert(ctx, tx, rec); err != nil {
			return err
		}
		if rec.Network != api.NetworkBridge {
			return nil
		}
		first, last := r.cfg.Bridge.Range()
		var err error
		rec.Addr, err = tx.AllocateLease(ctx, rec.ID, first, last)
		if errors.Is(err, store.ErrExhausted) {
			return fmt.Errorf("%w: the bridge network %s has no free address; delete a VM (`banger vm prune`) or widen network.cidr in config.toml", api.ErrInvalidArgument, r.cfg.Bridge.Prefix())
		}
		return err
	})
	if errors.Is(err, store.ErrAlreadyExists) {
		return fmt.Errorf("vm %q %w; pick another --name, or delete it (`banger vm delete %s`)", rec.Name, api.ErrAlreadyExists, rec.Name)
	}
	return err
}

// insert adds rec, named now if it has no name.
func insert(ctx context.Context, tx *store.Tx, rec *store.VM) error {
	if rec.Name != "" {
		return tx.InsertVM(ctx, *rec)
	}
	for range 20 {
		rec.Name = newName()
		if err := tx.InsertVM(ctx, *rec); !errors.Is(err, store.ErrAlreadyExists) {
			return err
		}
	}
	return errors.New("generating a free VM name: 20 tries taken; pass --name")
}

// addCopies records count copies of rec, creating, in one transaction:
// named prefix (count 1) or prefix-1..N with a prefix given, else
// NAME-fork-N at the first free numbers.
func (r *records) addCopies(ctx context.Context, rec store.VM, prefix string, count int) ([]store.VM, error) {
	var copies []store.VM
	err := r.cfg.Store.Update(ctx, func(tx *store.Tx) error {
		copies = copies[:0]
		next := 1
		for i := range count {
			c := rec
			c.ID, c.MAC, c.State, c.Reason, c.PID, c.PIDStart = newID(), newMAC(), api.VMCreating, "", 0, 0
			c.CreatedAt, c.StartedAt, c.StoppedAt, c.Addr = time.Now(), time.Time{}, time.Time{}, netip.Addr{}
			switch {
			case prefix != "" && count == 1:
				c.Name = prefix
			case prefix != "":
				c.Name = prefix + "-" + strconv.Itoa(i+1)
			default:
				for ; ; next++ {
					c.Name = rec.Name + "-fork-" + strconv.Itoa(next)
					if _, err := tx.VM(ctx, c.Name); errors.Is(err, store.ErrNotFound) {
						break
					} else if err != nil {
						return err
					}
				}
				next++
			}
			if err := validate(c); err != nil {
				return err
			}
			if err := tx.InsertVM(ctx, c); errors.Is(err, store.ErrAlreadyExists) {
				return fmt.Errorf("vm %q %w; pick another --name", c.Name, api.ErrAlreadyExists)
			} else if err != nil {
				return err
			}
			if c.Network == api.NetworkBridge {
				first, last := r.cfg.Bridge.Range()
				var err error
				if c.Addr, err = tx.AllocateLease(ctx, c.ID, first, last); errors.Is(err, store.ErrExhausted) {
					return fmt.Errorf("%w: the bridge network %s has no free address for %d copies; delete a VM (`banger vm prune`)", api.ErrInvalidArgument, r.cfg.Bridge.Prefix(), count)
				} else if err != nil {
					return err
				}
			}
			copies = append(copies, c)
		}
		return nil
	})
	return copies, err
}

// remove deletes a stopped VM's record, lease and files.
func (r *records) remove(ctx context.Context, rec store.VM) error {
	err := r.cfg.Store.Update(ctx, func(tx *store.Tx) error { return tx.DeleteVM(ctx, rec.Name) })
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	crashpoint.At("vm.delete", "record deleted")
	if err := r.keys.forget(rec.Name); err != nil {
		return err
	}
	if r.cfg.Removed != nil {
		r.cfg.Removed(rec.ID)
	}
	for _, dir := range []string{r.run(rec.ID), r.state(rec.ID)} {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("removing vm %s: %w", rec.Name, err)
		}
	}
	return nil
}

// setWorkspace records dir as the VM's workspace.
func (r *records) setWorkspace(ctx context.Context, name, dir string) error {
	err := r.cfg.Store.Update(ctx, func(tx *store.Tx) error { return tx.SetVMWorkspace(ctx, name, dir) })
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("vm %q: %w", name, api.ErrNotFound)
	}
	return err
}

// newRecord is the record p asks for, defaults filled and checked.
func (r *records) newRecord(p api.VMCreateParams) (store.VM, error) {
	d := r.cfg.Defaults
	rec := store.VM{
		Name: p.Name, ID: newID(), State: api.VMCreating, Image: p.Image, Kernel: p.Kernel,
		VCPU: p.VCPU, MemoryMiB: p.MemoryMiB, DiskSize: p.DiskSize, Network: p.Network,
		MAC: newMAC(), VMM: r.cfg.Driver.Name(), CreatedAt: time.Now(),
	}
	for _, f := range []struct {
		v   *string
		def string
	}{{&rec.Image, d.Image}, {&rec.Kernel, d.Kernel}, {&rec.Network, d.Network}} {
		if *f.v == "" {
			*f.v = f.def
		}
	}
	for _, f := range []struct {
		v   *int
		def int
	}{{&rec.VCPU, d.VCPU}, {&rec.MemoryMiB, d.MemoryMiB}} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if rec.DiskSize == 0 {
		rec.DiskSize = d.DiskSize
	}
	rec.Isolate = p.Isolate
	if !validCreator(p.Creator) {
		return store.VM{}, fmt.Errorf("%w: creator %q: use mcp:NAME or e2b:NAME, NAME of lowercase letters, digits, '.', '_' and '-' (at most 63)", api.ErrInvalidArgument, p.Creator)
	}
	rec.Creator = p.Creator
	rec.NoShare = p.NoShare || d.NoShare
	switch p.Init {
	case "", api.InitAgent, api.InitImage, api.InitAuto:
	default:
		return store.VM{}, fmt.Errorf("%w: --init %q: use %s (banger's agent as PID 1), %s (the image's systemd) or %s", api.ErrInvalidArgument, p.Init, api.InitAgent, api.InitImage, api.InitAuto)
	}
	given, err := applyEgress(&rec, p.Allow, p.NAT)
	switch {
	case err != nil:
		return store.VM{}, err
	case given:
	case rec.Network == api.NetworkBridge && len(d.Allow) > 0:
		rec.NAT, rec.Allow = true, d.Allow
	default:
		rec.NAT = d.NAT
	}
	if err := canonAllow(&rec); err != nil {
		return store.VM{}, err
	}
	if err := validate(rec); err != nil {
		return store.VM{}, err
	}
	if rec.Network == api.NetworkBridge && r.cfg.Bridge == nil {
		return store.VM{}, fmt.Errorf("%w: --network bridge: %s; use --network user", api.ErrInvalidArgument, r.cfg.NoBridge)
	}
	if err := r.cfg.Driver.Available(); err != nil {
		return store.VM{}, fmt.Errorf("%w: %v", api.ErrInvalidArgument, err)
	}
	return rec, nil
}

// toAPI is a record as clients see it.
func (r *records) toAPI(rec store.VM) api.VM {
	v := api.VM{
		Name: rec.Name, ID: rec.ID, State: rec.State, Reason: rec.Reason, Image: rec.Image, ImageID: rec.ImageID,
		Kernel: rec.Kernel, KernelID: rec.KernelID, VCPU: rec.VCPU, MemoryMiB: rec.MemoryMiB, DiskSize: rec.DiskSize,
		Network: rec.Network, NAT: rec.NAT, Egress: egressOf(rec), Allow: rec.Allow, Isolate: rec.Isolate, NoShare: rec.NoShare, AutoStop: rec.AutoStop, IdleAction: rec.IdleAction, Init: initName(rec.Init), Creator: rec.Creator, Workspace: rec.Workspace, VMM: rec.VMM, PID: rec.PID, CreatedAt: rec.CreatedAt,
	}
	if !rec.StartedAt.IsZero() {
		t := rec.StartedAt
		v.StartedAt = &t
	}
	if !rec.StoppedAt.IsZero() {
		t := rec.StoppedAt
		v.StoppedAt = &t
	}
	if rec.State == api.VMSuspended {
		v.StateBytes = r.stateBytes(rec.ID)
	}
	switch {
	case rec.Network == api.NetworkUser && rec.State == api.VMRunning:
		v.IP = userAddr
	case rec.Network == api.NetworkBridge && rec.Addr.IsValid():
		v.IP = rec.Addr.String() // leased for the VM's life
	}
	v.DiskUsed = diskUsed(r.work(rec.ID))
	return v
}

// stateBytes is what a VM's saved state takes on disk.
func (r *records) stateBytes(id string) int64 {
	return dirUsed(r.suspended(id))
}

// dirUsed is what the files under dir take on the host (a saved state's
// memory file is sparse).
func dirUsed(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n += diskUsed(path)
		}
		return nil
	})
	return n
}

// diskUsed is what a (sparse) disk image takes on the host.
func diskUsed(path string) int64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}

// initName is a record's Init as the API says it.
func initName(init string) string {
	if init == "" {
		return api.InitAgent
	}
	return init
}

// announce tells Config.Event of a VM's lifecycle.
func (r *records) announce(typ, name, image, reason string) {
	if r.cfg.Event != nil {
		r.cfg.Event(api.Event{Type: typ, VM: name, Image: image, Reason: reason})
	}
}

// followInterval is how often a followed console is checked for growth.
const followInterval = 200 * time.Millisecond

// follow sends what is written to rec's console at path past offset
// (where what was sent first was read to, so no line written meanwhile is
// lost), until ctx ends or the VM is deleted. A restarted VM's console
// starts over: it is sent from its start.
func (r *records) follow(ctx context.Context, rec store.VM, path string, offset int64, send func([]byte) error) error {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if cur, err := r.find(ctx, rec.Name); err != nil || cur.ID != rec.ID {
			return nil // deleted: nothing more will come
		}
		var err error
		if offset, err = logcap.From(path, offset, send); err != nil {
			return err
		}
	}
}

// validCreator says whether c may be recorded as a VM's creator: none,
// an MCP server's name ("mcp:NAME") or an E2B API key's ("e2b:NAME").
func validCreator(c string) bool {
	if c == "" {
		return true
	}
	name, ok := strings.CutPrefix(c, "mcp:")
	if !ok {
		name, ok = strings.CutPrefix(c, "e2b:")
	}
	return ok && api.ValidName(name)
}
