package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/clonefile"
	"github.com/bangerdev/banger/internal/objdir"
	"github.com/bangerdev/banger/internal/proc"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// A template is a VM booted to agent-ready with an empty work disk and
// no identity, saved: a create of the same shape restores it instead of
// booting. Its directory under Config.TemplateDir, named for its key:
//
//	key.json   what it was made for (templateKey)
//	state/     the saved memory and device state (vmm.State checks the
//	           VMM, kernel, initramfs and machine itself)
//	work.ext4  its work disk, which each VM's starts as a copy of
//
// It is made in a staging directory beside (objdir) and renamed whole
// into place.
const (
	templateKeyFile = "key.json"
	templateState   = "state"
	templateDisk    = "work.ext4"
	templatePID     = "vmm.pid"   // a building template's VMM, for a daemon that dies meanwhile
	legacyBuilding  = ".building" // an older banger's staging: KEY.building
)

// templates are the saved VMs creates start from: made once per VM
// shape, each behind its own lock (creates share it, a build or removal
// takes it alone), a failed build not tried again for a while, and those
// of deleted images and kernels, or cut short, removed.
type templates struct {
	cfg  *Config
	recs *records
	vmms *vmms

	mu     sync.Mutex
	locks  map[string]*sync.RWMutex // by template name
	failed map[string]failure       // builds that failed, by template name
}

// templateKey is what a template is made for: a VM of another image,
// kernel, size or network device cannot use it.
type templateKey struct {
	ImageID   string `json:"image_id"`
	KernelID  string `json:"kernel_id"`
	VCPU      int    `json:"vcpu"`
	MemoryMiB int    `json:"memory_mib"`
	DiskSize  int64  `json:"disk_size"`
	NIC       string `json:"nic"` // none, tap, user or user+outbound
}

func keyOf(rec store.VM) templateKey {
	nic := "none"
	switch {
	case rec.Network == api.NetworkBridge:
		nic = "tap"
	case rec.Network == api.NetworkUser && rec.NAT:
		nic = "user+outbound"
	case rec.Network == api.NetworkUser:
		nic = "user"
	}
	return templateKey{ImageID: rec.ImageID, KernelID: rec.KernelID, VCPU: rec.VCPU, MemoryMiB: rec.MemoryMiB, DiskSize: rec.DiskSize, NIC: nic}
}

// name is the template's directory name: a digest of its key.
func (k templateKey) name() string {
	b, _ := json.Marshal(k)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func (t *templates) dir(k templateKey) string {
	return filepath.Join(t.cfg.TemplateDir, k.name())
}

// runDir holds a building template's sockets: under the runtime
// directory, whose short path keeps them within a socket path's limit.
func (t *templates) runDir(k templateKey) string {
	return filepath.Join(t.cfg.RunDir, "template-"+k.name())
}

// lock is k's lock: creates restoring from it share it, a
// build or removal takes it alone.
func (t *templates) lock(k templateKey) *sync.RWMutex {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.locks == nil {
		t.locks = map[string]*sync.RWMutex{}
	}
	if t.failed == nil {
		t.failed = map[string]failure{}
	}
	m, ok := t.locks[k.name()]
	if !ok {
		m = &sync.RWMutex{}
		t.locks[k.name()] = m
	}
	return m
}

// canWarm reports whether this driver and configuration have
// templates; warm whether creates start from them.
func (t *templates) canWarm() bool {
	_, ok := t.cfg.Driver.(vmm.Snapshotter)
	return ok && t.cfg.TemplateDir != ""
}

func (t *templates) warm() bool { return t.canWarm() && !t.cfg.ColdCreate }

// get is k's template directory, made first if there is none;
// release lets it be rebuilt or removed again.
func (t *templates) get(ctx context.Context, phase func(string), k templateKey, img api.Image, kern api.Kernel) (dir string, release func(), err error) {
	m := t.lock(k)
	dir = t.dir(k)
	for range 2 {
		m.RLock()
		if _, err := os.Stat(filepath.Join(dir, templateKeyFile)); err == nil {
			if !legacy(filepath.Join(dir, templateState)) {
				return dir, m.RUnlock, nil
			}
			m.RUnlock()
			t.drop(k, "saved by an older banger, its memory to be read whole: made again, mapped")
		} else {
			m.RUnlock()
		}
		m.Lock()
		if _, err := os.Stat(filepath.Join(dir, templateKeyFile)); err != nil {
			if err := t.recentFailure(k); err != nil {
				m.Unlock()
				return "", nil, err
			}
			phase("making a template (first VM of this shape)")
			if err := t.build(ctx, k, img, kern); err != nil {
				if ctx.Err() == nil {
					t.mu.Lock()
					t.failed[k.name()] = failure{time.Now(), err}
					t.mu.Unlock()
				}
				m.Unlock()
				return "", nil, err
			}
		}
		m.Unlock()
	}
	return "", nil, fmt.Errorf("template %s: removed as soon as made", k.name())
}

// legacy says whether the state in dir is QEMU's from before mapped
// memory: it restores, but reads the whole memory and shares nothing.
func legacy(dir string) bool {
	st, err := vmm.ReadState(dir)
	return err == nil && st.VMM == "qemu" && !st.Mapped
}

// retryTemplate is how long a template that could not be made is not
// tried again: creates of its shape boot meanwhile, rather than each
// paying for a build that fails (or hangs until the boot timeout).
const retryTemplate = 10 * time.Minute

// failure is a template build's failure, and when.
type failure struct {
	at  time.Time
	err error
}

// recentFailure is the error of k's last build, if it failed lately.
func (t *templates) recentFailure(k templateKey) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.failed[k.name()]
	if !ok || time.Since(f.at) > retryTemplate {
		return nil
	}
	return fmt.Errorf("its template could not be made %s ago (tried again after %s): %w", time.Since(f.at).Round(time.Second), retryTemplate, f.err)
}

// drop removes k's template (stale: its state no longer loads).
func (t *templates) drop(k templateKey, why string) {
	m := t.lock(k)
	m.Lock()
	defer m.Unlock()
	t.cfg.Log.Info("removing a template", "template", k.name(), "image", k.ImageID, "why", why)
	t.remove(k.name())
}

// remove removes the template directory name (objdir.Remove: a kill
// midway leaves it set aside, swept at the next start).
func (t *templates) remove(name string) {
	if err := objdir.Remove(t.cfg.TemplateDir, name, "template.delete"); err != nil {
		t.cfg.Log.Warn("removing a template", "template", name, "err", err)
	}
}

// build boots a VM of key k with no identity (no hostname, no
// keys, its NIC unconfigured and, for a tap, unplugged), waits for its
// agent and SSH host key, and saves it, its VMM ending. Called with k's
// lock held.
func (t *templates) build(ctx context.Context, k templateKey, img api.Image, kern api.Kernel) error {
	start := time.Now()
	runDir := t.runDir(k)
	if err := os.RemoveAll(runDir); err != nil {
		return err
	}
	defer os.RemoveAll(runDir)
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(t.cfg.TemplateDir, 0o700); err != nil {
		return err
	}
	stage, err := objdir.Stage(t.cfg.TemplateDir, k.name(), "template.build", "template")
	if err != nil {
		return err
	}
	defer stage.Discard()
	dir := stage.Path()
	if err := boot.WorkDisk(ctx, filepath.Join(dir, templateDisk), k.DiskSize); err != nil {
		return err
	}
	spec, err := t.spec(k, img, kern, dir, runDir)
	if err != nil {
		return err
	}
	in, err := t.cfg.Driver.Start(ctx, spec)
	if err != nil {
		return err
	}
	defer func() {
		_ = in.Process().Kill()
		<-in.Done()
	}()
	id := in.ID()
	if err := os.WriteFile(filepath.Join(dir, templatePID), []byte(fmt.Sprintf("%d %d\n", id.PID, id.StartTime)), 0o600); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, t.cfg.BootTimeout)
	defer cancel()
	c, err := boot.WaitAgent(wctx, in.DialAgent, in.Done())
	if err != nil {
		return fmt.Errorf("making a template: booting: %w; %s", err, boot.Failure(in, t.cfg.Driver.Name()))
	}
	defer c.Close()
	// Info answers once the SSH server has its host key: the template
	// is saved settled, with nothing left to do at first use.
	var info proto.InfoResult
	if err := c.Call(wctx, proto.MethodInfo, nil, &info); err != nil {
		return fmt.Errorf("making a template: asking its agent: %w", err)
	}
	sn, err := t.vmms.snapshotter()
	if err != nil {
		return err
	}
	if _, err := sn.Snapshot(ctx, in, spec, filepath.Join(dir, templateState), vmm.SnapshotOptions{Stop: true}); err != nil {
		return fmt.Errorf("making a template: %w", err)
	}
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, templateKeyFile), b, 0o600); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, templatePID))
	if _, err := stage.Store(k.name()); err != nil {
		return err
	}
	t.cfg.Log.Info("template made", "template", k.name(), "image", img.Name, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// spec is how a template of key k runs: dir holds its work
// disk, runDir its sockets.
func (t *templates) spec(k templateKey, img api.Image, kern api.Kernel, dir, runDir string) (vmm.Spec, error) {
	initrd, err := t.vmms.initrd(kern)
	if err != nil {
		return vmm.Spec{}, err
	}
	var nic *vmm.NIC
	switch k.NIC {
	case "tap":
		nic = &vmm.NIC{Unplugged: true, MAC: newMAC()}
	case "user", "user+outbound":
		nic = &vmm.NIC{User: true, MAC: newMAC(), Outbound: k.NIC == "user+outbound"}
	}
	return vmm.Spec{
		Kernel: bundle.Vmlinux(kern.Dir), Initrd: initrd, Cmdline: boot.Cmdline(proto.BootParams{}, t.cfg.Emulated),
		MemoryMiB: k.MemoryMiB, VCPU: k.VCPU, Dir: runDir, NIC: nic,
		Disks: t.vmms.disks(img, kern, filepath.Join(dir, templateDisk)),
	}, nil
}

// createWarm starts rec from its shape's template (made first if there
// is none): its work disk a copy of the template's, its guest given
// rec's identity. A template its VMM no longer loads (another QEMU,
// agent or kernel) is made again, once.
func (t *templates) createWarm(ctx context.Context, phase func(string), rec store.VM, img api.Image, kern api.Kernel) (store.VM, error) {
	k := keyOf(rec)
	for try := 0; ; try++ {
		dir, release, err := t.get(ctx, phase, k, img, kern)
		if err != nil {
			return rec, err
		}
		phase("copying the work disk")
		_ = os.Remove(t.recs.work(rec.ID))
		if err := os.MkdirAll(t.recs.state(rec.ID), 0o700); err != nil {
			release()
			return rec, err
		}
		if _, err := clonefile.Copy(filepath.Join(dir, templateDisk), t.recs.work(rec.ID)); err != nil {
			release()
			return rec, err
		}
		var out store.VM
		out, err = t.vmms.startFrom(ctx, phase, rec, img, kern, filepath.Join(dir, templateState), true)
		release()
		if err == nil || !errors.Is(err, vmm.ErrStateMismatch) || try > 0 {
			return out, err
		}
		t.drop(k, err.Error())
	}
}

// warmImage makes the template of a VM shape, as the first create of
// that shape would: the image (pulled if unknown), kernel and sizes
// default as vm create's do.
func (t *templates) warmImage(ctx context.Context, phase func(string), p api.ImageWarmParams) (api.Template, error) {
	if !t.canWarm() {
		return api.Template{}, fmt.Errorf("%w: the %s driver cannot save a VM, so it has no templates", api.ErrInvalidArgument, t.cfg.Driver.Name())
	}
	rec, err := t.recs.newRecord(api.VMCreateParams{Image: p.Image, Kernel: p.Kernel, VCPU: p.VCPU, MemoryMiB: p.MemoryMiB,
		DiskSize: p.DiskSize, Network: p.Network, NAT: p.NAT})
	if err != nil {
		return api.Template{}, err
	}
	img, err := t.cfg.Images.Resolve(ctx, rec.Image)
	if errors.Is(err, api.ErrNotFound) {
		img, err = t.cfg.Images.Pull(ctx, rec.Image)
	}
	if err != nil {
		return api.Template{}, fmt.Errorf("image %s: %w", rec.Image, err)
	}
	kern, err := t.cfg.Kernel(ctx, rec.Kernel)
	if err != nil {
		return api.Template{}, err
	}
	rec.ImageID, rec.KernelID = img.ID, kern.ID
	k := keyOf(rec)
	start := time.Now()
	// Asked for, it is tried again whatever failed before.
	t.mu.Lock()
	delete(t.failed, k.name())
	t.mu.Unlock()
	_, release, err := t.get(ctx, phase, k, img, kern)
	if err != nil {
		return api.Template{}, err
	}
	release()
	tpl := t.describe(k, img.Name, kern.Name)
	tpl.Took = time.Since(start).Seconds()
	return tpl, nil
}

// describe describes k's template.
func (t *templates) describe(k templateKey, image, kernel string) api.Template {
	dir := t.dir(k)
	tpl := api.Template{ID: k.name(), Image: image, ImageID: k.ImageID, Kernel: kernel, VCPU: k.VCPU, MemoryMiB: k.MemoryMiB,
		DiskSize: k.DiskSize, NIC: k.NIC}
	if fi, err := os.Stat(filepath.Join(dir, templateKeyFile)); err == nil {
		tpl.Created = fi.ModTime().UTC()
	}
	tpl.StateBytes = dirUsed(filepath.Join(dir, templateState))
	tpl.DiskUsed = diskUsed(filepath.Join(dir, templateDisk))
	return tpl
}

// list lists the templates creates start from, oldest first.
func (t *templates) list(ctx context.Context) (api.TemplateListResult, error) {
	res := api.TemplateListResult{Templates: []api.Template{}}
	if t.cfg.TemplateDir == "" {
		return res, nil
	}
	entries, err := os.ReadDir(t.cfg.TemplateDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, err
	}
	for _, e := range entries {
		k, err := readTemplateKey(filepath.Join(t.cfg.TemplateDir, e.Name()))
		if err != nil || k.name() != e.Name() {
			continue // being built, or not one
		}
		image, kernel := k.ImageID, k.KernelID
		if img, err := t.cfg.Images.Resolve(ctx, k.ImageID); err == nil {
			image = img.Name
		}
		if kern, err := t.cfg.Kernel(ctx, k.KernelID); err == nil {
			kernel = kern.Name
		}
		res.Templates = append(res.Templates, t.describe(k, image, kernel))
	}
	slices.SortFunc(res.Templates, func(a, b api.Template) int { return a.Created.Compare(b.Created) })
	return res, nil
}

// readTemplateKey reads a template directory's key.
func readTemplateKey(dir string) (templateKey, error) {
	var k templateKey
	b, err := os.ReadFile(filepath.Join(dir, templateKeyFile))
	if err != nil {
		return k, err
	}
	if len(b) > 4<<10 {
		return k, errors.New("key.json is too big")
	}
	return k, json.Unmarshal(b, &k)
}

// dropGone removes the templates of images or kernels that are
// gone: the daemon calls it once an image is deleted, and at start
// (a kernel's are removed then, or with the next image deleted).
func (t *templates) dropGone(ctx context.Context) {
	if t.cfg.TemplateDir == "" {
		return
	}
	entries, _ := os.ReadDir(t.cfg.TemplateDir)
	for _, e := range entries {
		dir := filepath.Join(t.cfg.TemplateDir, e.Name())
		if strings.HasPrefix(e.Name(), ".") || strings.HasSuffix(e.Name(), legacyBuilding) {
			continue // a build in flight, or a removal: swept at start (sweepBuilds)
		}
		k, err := readTemplateKey(dir)
		if err != nil || k.name() != e.Name() {
			t.cfg.Log.Info("removing an unreadable template", "dir", dir, "err", err)
			t.remove(e.Name())
			continue
		}
		if _, err := t.cfg.Images.Resolve(ctx, k.ImageID); errors.Is(err, api.ErrNotFound) {
			t.drop(k, "its image was deleted")
		} else if _, err := t.cfg.Kernel(ctx, k.KernelID); errors.Is(err, api.ErrNotFound) {
			t.drop(k, "its kernel was deleted")
		}
	}
}

// sweepBuilds ends the VMMs of template builds a dead daemon left, and
// removes what they and removals cut short left (objdir.Sweep); at
// start, before any build.
func (t *templates) sweepBuilds() {
	if t.cfg.TemplateDir == "" {
		return
	}
	builds := objdir.Staged(t.cfg.TemplateDir)
	// A build an older banger left: KEY.building.
	legacy, _ := filepath.Glob(filepath.Join(t.cfg.TemplateDir, "*"+legacyBuilding))
	for _, dir := range legacy {
		builds[dir] = strings.TrimSuffix(filepath.Base(dir), legacyBuilding)
	}
	for dir, name := range builds {
		if b, err := os.ReadFile(filepath.Join(dir, templatePID)); err == nil {
			if f := strings.Fields(string(b)); len(f) == 2 {
				pid, _ := strconv.Atoi(f[0])
				st, _ := strconv.ParseUint(f[1], 10, 64)
				runDir := filepath.Join(t.cfg.RunDir, "template-"+name)
				if in, err := t.cfg.Driver.Adopt(vmm.Spec{Dir: runDir}, proc.ID{PID: pid, StartTime: st}); err == nil {
					_ = in.Process().Kill()
					<-in.Done()
				}
				_ = os.RemoveAll(runDir)
			}
		}
		t.cfg.Log.Info("removing a template build cut short", "dir", dir)
		_ = os.RemoveAll(dir)
	}
	if err := objdir.Sweep(t.cfg.TemplateDir, nil, t.cfg.Log, "template"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.cfg.Log.Warn("sweeping the templates", "err", err)
	}
}
