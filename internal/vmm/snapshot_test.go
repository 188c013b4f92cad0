package vmm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateCheck(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd")
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	os.WriteFile(initrd, []byte("initrd"), 0o644)
	spec := Spec{Kernel: kernel, Initrd: initrd, MemoryMiB: 512, VCPU: 1,
		Disks: []Disk{{Serial: "banger-root", ReadOnly: true}, {Serial: "banger-work"}}, NIC: &NIC{User: true}}
	var sums Sums
	saved, err := Describe(spec, &sums)
	if err != nil {
		t.Fatal(err)
	}
	saved.VMM, saved.VMMVersion, saved.Accel = "qemu", "QEMU emulator version 7.2.15", "tcg"
	otherKernel := filepath.Join(dir, "vmlinux-2")
	os.WriteFile(otherKernel, []byte("another kernel"), 0o644)
	for _, c := range []struct {
		name   string
		change func(s *Spec, st *State)
		says   string
	}{
		{"the same", func(*Spec, *State) {}, ""},
		{"another VMM", func(_ *Spec, st *State) { st.VMM = "firecracker" }, "VMM qemu"},
		{"another QEMU", func(_ *Spec, st *State) { st.VMMVersion = "QEMU emulator version 8.2.0" }, "VMM version QEMU emulator version 7.2.15"},
		{"KVM", func(_ *Spec, st *State) { st.Accel = "kvm" }, "accelerator tcg"},
		{"another kernel", func(s *Spec, _ *State) { s.Kernel = otherKernel }, "kernel "},
		{"no initramfs", func(s *Spec, _ *State) { s.Initrd = "" }, "initramfs"},
		{"more memory", func(s *Spec, _ *State) { s.MemoryMiB = 1024 }, "memory (MiB) 512"},
		{"more CPUs", func(s *Spec, _ *State) { s.VCPU = 2 }, "CPUs 1"},
		{"a tap", func(s *Spec, _ *State) { s.NIC = &NIC{Tap: "t"} }, "network device user"},
		{"a disk less", func(s *Spec, _ *State) { s.Disks = s.Disks[:1] }, "disks"},
		{"a disk writable", func(s *Spec, _ *State) { s.Disks = []Disk{{Serial: "banger-root"}, {Serial: "banger-work"}} }, "banger-root:ro"},
	} {
		s := spec
		want := State{VMM: "qemu", VMMVersion: saved.VMMVersion, Accel: "tcg"}
		c.change(&s, &want)
		desc, err := Describe(s, &sums)
		if err != nil {
			t.Fatal(err)
		}
		desc.VMM, desc.VMMVersion, desc.Accel = want.VMM, want.VMMVersion, want.Accel
		err = saved.Check(desc)
		if c.says == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrStateMismatch) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v; want %q", c.name, err, c.says)
		}
	}
}

// A state is read whole or refused: cut short, oversized, garbage.
func TestReadState(t *testing.T) {
	write := func(state string, memory int) string {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, StateFile), []byte(state), 0o600)
		os.WriteFile(filepath.Join(dir, MemoryFile), make([]byte, memory), 0o600)
		return dir
	}
	if st, err := ReadState(write(`{"vmm":"qemu","size":100}`, 100)); err != nil || st.VMM != "qemu" {
		t.Fatalf("a whole state: %+v, %v", st, err)
	}
	for name, dir := range map[string]string{
		"cut short": write(`{"vmm":"qemu","size":100}`, 99),
		"garbage":   write(`{"vmm":`, 0),
		"oversized": write(`{"vmm":"`+strings.Repeat("x", maxState)+`"}`, 0),
		"missing":   t.TempDir(),
	} {
		if _, err := ReadState(dir); err == nil {
			t.Errorf("%s: read", name)
		}
	}
	// A mapped state's memory file is the guest's memory, no more, no
	// less.
	mapped := func(ram int64) string {
		dir := write(`{"vmm":"qemu","size":100,"memory_mib":2,"mapped":true}`, 100)
		if ram >= 0 {
			f, _ := os.Create(filepath.Join(dir, RAMFile))
			f.Truncate(ram)
			f.Close()
		}
		return dir
	}
	if st, err := ReadState(mapped(2 << 20)); err != nil || !st.Mapped {
		t.Fatalf("a whole mapped state: %+v, %v", st, err)
	}
	for name, ram := range map[string]int64{"no memory file": -1, "cut short": 1 << 20, "longer": 3 << 20} {
		if _, err := ReadState(mapped(ram)); err == nil {
			t.Errorf("a mapped state, %s: read", name)
		}
	}
	dir := t.TempDir()
	if err := WriteState(dir, State{VMM: "qemu"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteState(dir, State{VMM: "qemu"}); err == nil {
		t.Error("a second description written over the first")
	}
}

// TestStageCommit: a state appears whole under its name once committed,
// with its memory's size; staged again, what a cut-short save left goes.
func TestStageCommit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	tmp, err := StageState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "leftover"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if tmp, err = StageState(dir); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("a staged state holds %v", entries)
	}
	if fi, _ := os.Stat(tmp); fi.Mode().Perm() != 0o700 {
		t.Fatalf("staged mode %v", fi.Mode().Perm())
	}
	if err := os.WriteFile(filepath.Join(tmp, MemoryFile), make([]byte, 1234), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the state exists before its commit: %v", err)
	}
	st, err := CommitState(tmp, dir, State{VMM: "qemu"})
	if err != nil || st.Size != 1234 || st.Saved.IsZero() {
		t.Fatalf("commit = %+v, %v", st, err)
	}
	got, err := ReadState(dir)
	if err != nil || got.Size != 1234 || got.VMM != "qemu" {
		t.Fatalf("read back = %+v, %v", got, err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("the staging directory is left: %v", err)
	}
	// A mapped state counts what its sparse memory file takes.
	dir = filepath.Join(t.TempDir(), "mapped")
	if tmp, err = StageState(dir); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tmp, MemoryFile), make([]byte, 10), 0o600)
	f, _ := os.Create(filepath.Join(tmp, RAMFile))
	f.Truncate(4 << 20)
	f.WriteAt(make([]byte, 8192), 1<<20)
	f.Close()
	st, err = CommitState(tmp, dir, State{VMM: "qemu", MemoryMiB: 4, Mapped: true})
	if err != nil || st.RAM < 8192 || st.RAM >= 4<<20 || st.Bytes() != st.RAM+10 {
		t.Fatalf("a mapped commit = %+v, %v", st, err)
	}
}

// TestSumsSeeAChange: a kept digest is used while its file is the same
// one; a file changed in place, or another at that path, is read again.
func TestSumsSeeAChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmlinux")
	var sums Sums
	sum := func() string {
		t.Helper()
		s, err := sums.File(path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	os.WriteFile(path, []byte("kernel A"), 0o644)
	a := sum()
	if sum() != a {
		t.Fatal("the same file summed twice differs")
	}
	os.WriteFile(path, []byte("kernel B"), 0o644) // same size, in place
	if sum() == a {
		t.Fatal("a file changed in place kept its old digest")
	}
	os.Remove(path)
	os.WriteFile(path, []byte("kernel A"), 0o644)
	if sum() != a {
		t.Fatal("the same content sums differently")
	}
	if _, err := sums.File(path + ".missing"); err == nil {
		t.Fatal("a missing file has a digest")
	}
}
