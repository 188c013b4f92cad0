package vmm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// StateFile and MemoryFile are a saved state's two files in its
// directory: what it is valid for, and the VMM's memory and device state
// (with Mapped, the device state alone). RAMFile, in a mapped state, is
// the guest's memory as a file the size of it, page for page, which a
// restore maps copy-on-write instead of reading.
const (
	StateFile  = "state.json"
	MemoryFile = "memory"
	RAMFile    = "ram"
	maxState   = 64 << 10
)

// ErrStateMismatch: a saved state is not valid for what would restore it.
var ErrStateMismatch = errors.New("saved state does not match")

// State describes a saved VM and what it is only valid for: restoring it
// under another VMM, kernel, initramfs or machine shape would hand the
// guest devices and memory it never had.
type State struct {
	VMM        string    `json:"vmm"`         // the driver's name
	VMMVersion string    `json:"vmm_version"` // what its binary says it is
	Accel      string    `json:"accel"`       // kvm or tcg: a TCG CPU is not a KVM one
	Kernel     string    `json:"kernel"`      // sha256 of the kernel
	Initrd     string    `json:"initrd"`      // sha256 of the initramfs ("" none)
	MemoryMiB  int       `json:"memory_mib"`
	VCPU       int       `json:"vcpu"`
	Disks      []string  `json:"disks"` // each disk's serial and mode, in order
	NIC        string    `json:"nic"`   // "", "tap", "user" or "user+outbound"
	Size       int64     `json:"size"`  // bytes of MemoryFile
	Saved      time.Time `json:"saved"`
	// Mapped: the guest's memory is RAMFile, MemoryFile its devices
	// alone. A state saved without (by an older banger) holds both in
	// MemoryFile and is read whole by a restore.
	Mapped bool `json:"mapped,omitempty"`
	// RAM is what RAMFile takes on disk (it is sparse: pages the guest
	// never wrote are holes).
	RAM int64 `json:"ram,omitempty"`
	// Share is the sharing group of the VM saved (Spec.Share): its
	// VMs map RAMFile itself, others a copy.
	Share string `json:"share,omitempty"`
}

// Bytes is what the state takes on disk.
func (st State) Bytes() int64 { return st.Size + st.RAM }

// Describer says what state a spec would need under one driver, keeping
// the files' digests and the binary's version between calls (a driver
// holds one). The zero value is ready.
type Describer struct {
	sums     Sums
	versions Versions
}

// Describe is the state s would need under the VMM vmm (its binary and
// the accelerator it would use).
func (d *Describer) Describe(ctx context.Context, s Spec, vmm, binary, accel string) (State, error) {
	st, err := Describe(s, &d.sums)
	if err != nil {
		return st, err
	}
	st.VMM, st.Accel = vmm, accel
	st.VMMVersion, err = d.versions.Of(ctx, binary)
	return st, err
}

// Describe is what s would need a state to be, but for the VMM's part
// (name, version, accelerator). sums (nil: none) keeps the files' digests
// between calls.
func Describe(s Spec, sums *Sums) (State, error) {
	st := State{MemoryMiB: s.MemoryMiB, VCPU: s.VCPU}
	var err error
	if st.Kernel, err = sums.File(s.Kernel); err != nil {
		return st, err
	}
	if s.Initrd != "" {
		if st.Initrd, err = sums.File(s.Initrd); err != nil {
			return st, err
		}
	}
	for _, d := range s.Disks {
		mode := "rw"
		if d.ReadOnly {
			mode = "ro"
		}
		st.Disks = append(st.Disks, d.Serial+":"+mode)
	}
	switch n := s.NIC; {
	case n == nil:
	case n.User && n.Outbound:
		st.NIC = "user+outbound"
	case n.User:
		st.NIC = "user"
	default:
		st.NIC = "tap"
	}
	return st, nil
}

// Versions keeps what VMM binaries say they are (`BINARY --version`, its
// first line), each valid while the binary file stays the same one: an
// upgraded QEMU is asked again. The zero value is ready.
type Versions struct {
	mu sync.Mutex
	m  map[sumKey]string
}

// Of is binary's version (a name looked up on PATH, or a path).
func (v *Versions) Of(ctx context.Context, binary string) (string, error) {
	path, err := exec.LookPath(binary)
	if err != nil {
		return "", fmt.Errorf("asking %s its version: %w", binary, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", fmt.Errorf("asking %s its version: %w", binary, err)
	}
	k := sumKey{path, st.Dev, st.Ino, st.Size, st.Mtim.Nano()}
	v.mu.Lock()
	ver, ok := v.m[k]
	v.mu.Unlock()
	if ok {
		return ver, nil
	}
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("asking %s its version: %w", binary, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	ver = strings.TrimSpace(line)
	v.mu.Lock()
	if v.m == nil {
		v.m = map[sumKey]string{}
	}
	v.m[k] = ver
	v.mu.Unlock()
	return ver, nil
}

// Sums keeps files' sha256 digests, each valid while the file's inode,
// size and modification time stay (a kernel and initramfs of tens of MB
// are read once, not on every restore: four at once, on two cores, were
// most of a fork's time). The zero value is ready; a nil one keeps none.
type Sums struct {
	mu sync.Mutex
	m  map[sumKey]string
}

type sumKey struct {
	path       string
	dev, ino   uint64
	size, time int64
}

// File is the sha256 of the file at path.
func (c *Sums) File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("describing the VM: %w", err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("describing the VM: %w", err)
	}
	k := sumKey{path, st.Dev, st.Ino, st.Size, st.Mtim.Nano()}
	if c != nil {
		c.mu.Lock()
		sum, ok := c.m[k]
		c.mu.Unlock()
		if ok {
			return sum, nil
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("describing the VM: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if c != nil {
		c.mu.Lock()
		if c.m == nil {
			c.m = map[sumKey]string{}
		}
		c.m[k] = sum
		c.mu.Unlock()
	}
	return sum, nil
}

// Check says why a saved state is not valid where want describes the
// restoring side, or nil.
func (st State) Check(want State) error {
	type field struct {
		name      string
		have, got any
	}
	for _, f := range []field{
		{"VMM", st.VMM, want.VMM},
		{"VMM version", st.VMMVersion, want.VMMVersion},
		{"accelerator", st.Accel, want.Accel},
		{"kernel", short(st.Kernel), short(want.Kernel)},
		{"initramfs", short(st.Initrd), short(want.Initrd)},
		{"memory (MiB)", st.MemoryMiB, want.MemoryMiB},
		{"CPUs", st.VCPU, want.VCPU},
		{"network device", st.NIC, want.NIC},
	} {
		if f.have != f.got {
			return fmt.Errorf("%w: it was saved with %s %v, and this VM has %v", ErrStateMismatch, f.name, f.have, f.got)
		}
	}
	if !slices.Equal(st.Disks, want.Disks) {
		return fmt.Errorf("%w: it was saved with disks %v, and this VM has %v", ErrStateMismatch, st.Disks, want.Disks)
	}
	return nil
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

// ReadState reads a saved state's description from dir, bounded: the
// directory is the daemon's, but a state may be old or cut short.
func ReadState(dir string) (State, error) {
	var st State
	f, err := os.Open(filepath.Join(dir, StateFile))
	if err != nil {
		return st, fmt.Errorf("reading the saved state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxState+1))
	if err != nil {
		return st, fmt.Errorf("reading the saved state: %w", err)
	}
	if len(b) > maxState {
		return st, fmt.Errorf("reading the saved state: %s is over %d bytes", StateFile, maxState)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("reading the saved state: %w", err)
	}
	fi, err := os.Stat(filepath.Join(dir, MemoryFile))
	if err != nil {
		return st, fmt.Errorf("reading the saved state: %w", err)
	}
	if fi.Size() != st.Size {
		return st, fmt.Errorf("reading the saved state: %s is %d bytes, %s says %d: cut short", MemoryFile, fi.Size(), StateFile, st.Size)
	}
	if st.Mapped {
		fi, err := os.Stat(filepath.Join(dir, RAMFile))
		if err != nil {
			return st, fmt.Errorf("reading the saved state: %w", err)
		}
		if want := int64(st.MemoryMiB) << 20; fi.Size() != want {
			return st, fmt.Errorf("reading the saved state: %s is %d bytes, the guest's memory %d", RAMFile, fi.Size(), want)
		}
	}
	return st, nil
}

// WriteState writes st as dir's description, synced.
func WriteState(dir string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, StateFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing the saved state: %w", err)
	}
	_, err = f.Write(b)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing the saved state: %w", err)
	}
	return nil
}

// SnapshotOptions say what a snapshot does besides saving.
type SnapshotOptions struct {
	// Stop ends the VMM once saved (suspend, a template); otherwise the
	// guest runs on (a checkpoint, a fork).
	Stop bool
	// Paused runs while the guest is paused, before its state is saved:
	// a copy of its work disk taken then is the disk that memory knows.
	// An error from it aborts the snapshot, the guest running on.
	Paused func() error
}

// CheckSaved says why the state saved in dir is not valid where want
// describes the restoring side (ErrStateMismatch), or cannot be read.
func CheckSaved(dir string, want State) error {
	st, err := ReadState(dir)
	if err != nil {
		return err
	}
	return st.Check(want)
}

// StageState makes dir.partial, empty and the owner's alone, where a
// driver writes a state before CommitState; the caller removes it
// whatever happens (nothing is left once it is renamed).
func StageState(dir string) (string, error) {
	tmp := dir + ".partial"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return "", fmt.Errorf("snapshot: %w", err)
	}
	return tmp, nil
}

// CommitState finishes a state written in tmp: st gets its memory
// file's size (and with Mapped its RAM file's use) and the time, is
// written beside it, and tmp is renamed to dir, synced, so a crash
// leaves the whole state or none.
func CommitState(tmp, dir string, st State) (State, error) {
	fi, err := os.Stat(filepath.Join(tmp, MemoryFile))
	if err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	st.Size, st.Saved = fi.Size(), time.Now().UTC()
	if st.Mapped {
		var ram unix.Stat_t
		if err := unix.Stat(filepath.Join(tmp, RAMFile), &ram); err != nil {
			return st, fmt.Errorf("snapshot: %w", err)
		}
		st.RAM = ram.Blocks * 512
	}
	if err := WriteState(tmp, st); err != nil {
		return st, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return st, fmt.Errorf("snapshot: %w", err)
	}
	if f, err := os.Open(filepath.Dir(dir)); err == nil {
		_ = f.Sync()
		f.Close()
	}
	return st, nil
}

// Snapshotter is a driver that saves and restores running VMs.
type Snapshotter interface {
	// Snapshot pauses in (which runs s), saves its memory and device
	// state into dir (which must not exist; it appears whole or not at
	// all), then resumes it, or with o.Stop ends its VMM.
	Snapshot(ctx context.Context, in Instance, s Spec, dir string, o SnapshotOptions) (State, error)
	// Restore starts a VMM for s from the state saved in dir, running;
	// a state not valid for s or this VMM is refused (ErrStateMismatch)
	// with the reason. started is told of the VMM as soon as it runs,
	// before the state is loaded, so the caller can record it (a daemon
	// that dies mid-restore must find the process); an error from it
	// ends the VMM and the restore.
	Restore(ctx context.Context, s Spec, dir string, started func(Instance) error) (Instance, error)
	// Loadable says why Restore would refuse the state in dir for s
	// (ErrStateMismatch), or nil: checked before anything is undone
	// for it.
	Loadable(ctx context.Context, s Spec, dir string) error
}
