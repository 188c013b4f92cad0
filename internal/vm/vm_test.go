package vm

import (
	"errors"
	"strings"
	"testing"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/store"
)

func TestValidate(t *testing.T) {
	ok := store.VM{Name: "dev-1", Image: "debian", VCPU: 2, MemoryMiB: 512, DiskSize: 1 << 30, Network: api.NetworkUser}
	if err := validate(ok); err != nil {
		t.Fatalf("valid VM refused: %v", err)
	}
	for _, tc := range []struct {
		change func(*store.VM)
		want   string
	}{
		{func(v *store.VM) { v.Name = "Dev" }, "VM name"},
		{func(v *store.VM) { v.Name = "-dev" }, "VM name"},
		{func(v *store.VM) { v.Name = strings.Repeat("a", 65) }, "VM name"},
		{func(v *store.VM) { v.Image = "" }, "no image"},
		{func(v *store.VM) { v.VCPU = 0 }, "--cpus"},
		{func(v *store.VM) { v.MemoryMiB = 64 }, "--memory"},
		{func(v *store.VM) { v.DiskSize = 1 << 20 }, "--disk"},
		{func(v *store.VM) { v.Network = "wifi" }, "use bridge, user or none"},
	} {
		v := ok
		tc.change(&v)
		err := validate(v)
		if !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("validate(%+v) = %v, want invalid_argument mentioning %q", v, err, tc.want)
		}
	}
}

func TestGeneratedNamesAreValid(t *testing.T) {
	for range 200 {
		if n := newName(); !validName.MatchString(n) {
			t.Fatalf("generated name %q is not a valid VM name", n)
		}
	}
	if a, b := newID(), newID(); len(a) != 32 || a == b {
		t.Fatalf("IDs %q %q", a, b)
	}
}
