package vm

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/store"
)

func TestCreateRefusals(t *testing.T) {
	f := newFixture(t)
	f.mustCreate("taken")
	for _, tc := range []struct {
		name   string
		p      api.VMCreateParams
		setup  func()
		want   error
		saying string
	}{
		{name: "duplicate name", p: api.VMCreateParams{Name: "taken"}, want: api.ErrAlreadyExists, saying: "pick another --name"},
		{name: "bad name", p: api.VMCreateParams{Name: "Bad_Name"}, want: api.ErrInvalidArgument, saying: "VM name"},
		{name: "too little memory", p: api.VMCreateParams{Name: "small", MemoryMiB: 64}, want: api.ErrInvalidArgument, saying: "--memory"},
		{name: "nat without a network", p: api.VMCreateParams{Name: "nn", NAT: new(true)}, want: api.ErrInvalidArgument, saying: "--nat"},
		{name: "bridge without one", p: api.VMCreateParams{Name: "br", Network: api.NetworkBridge}, want: api.ErrInvalidArgument, saying: "--network user"},
		{name: "creator not an MCP server", p: api.VMCreateParams{Name: "cr", Creator: "root"}, want: api.ErrInvalidArgument, saying: "use mcp:NAME"},
		{name: "creator with a newline", p: api.VMCreateParams{Name: "cr", Creator: "mcp:a\nlevel=ERROR"}, want: api.ErrInvalidArgument, saying: "creator"},
		{name: "creator too long", p: api.VMCreateParams{Name: "cr", Creator: "mcp:" + strings.Repeat("a", 64)}, want: api.ErrInvalidArgument, saying: "at most 63"},
		{name: "driver unavailable", p: api.VMCreateParams{Name: "nodrv"}, setup: func() { f.drv.SetUnavailable(errors.New("no VMM here")) },
			want: api.ErrInvalidArgument, saying: "no VMM here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
				defer f.drv.SetUnavailable(nil)
			}
			_, err := f.svc.Create(context.Background(), tc.p)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.saying) {
				t.Fatalf("create = %v, want %v saying %q", err, tc.want, tc.saying)
			}
		})
	}
	list, _ := f.svc.List(context.Background())
	if len(list.VMs) != 1 {
		t.Fatalf("refused creates left records: %+v", list.VMs)
	}
	// A create without a name gets a readable one.
	v := f.mustCreate("")
	// An MCP server's VM says so.
	if c, err := f.create(api.VMCreateParams{Name: "by-agent", Creator: "mcp:agent-1"}); err != nil || c.Creator != "mcp:agent-1" {
		t.Fatalf("create by mcp:agent-1 = %+v, %v", c, err)
	}
	if !validName.MatchString(v.Name) || !strings.Contains(v.Name, "-") {
		t.Fatalf("generated name %q", v.Name)
	}
}

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
