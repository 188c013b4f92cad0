package firecracker

import (
	"testing"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/vmm"
)

func TestBootArgsCarryDiskOrder(t *testing.T) {
	s := vmm.Spec{Cmdline: "console=ttyS0 banger.hostname=a", Disks: []vmm.Disk{{Serial: proto.RootSerial}, {Serial: proto.WorkSerial}}}
	got := BootArgs(s)
	p, err := proto.ParseBootParams(got)
	if err != nil || len(p.DiskOrder) != 2 || p.DiskOrder[0] != proto.RootSerial || p.DiskOrder[1] != proto.WorkSerial || p.Hostname != "a" {
		t.Fatalf("BootArgs = %q → %+v, %v", got, p, err)
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		nic *vmm.NIC
		ok  bool
	}{
		{nil, true},
		{&vmm.NIC{Tap: "tap0", MAC: "52:54:00:00:00:01"}, true},
		{&vmm.NIC{User: true}, false},
		{&vmm.NIC{MAC: "52:54:00:00:00:01"}, false},
	} {
		if err := Check(vmm.Spec{NIC: tc.nic}); (err == nil) != tc.ok {
			t.Errorf("Check(%+v) = %v", tc.nic, err)
		}
	}
}

// The Firecracker driver saves and restores VMs, as the QEMU one does.
var _ vmm.Snapshotter = (*Driver)(nil)
