package qemu

import (
	"context"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/vmm"
)

func TestArgsNetwork(t *testing.T) {
	for _, tc := range []struct {
		name string
		nic  *vmm.NIC
		want []string // substrings of the joined command line
		not  []string
	}{
		{"none", nil, nil, []string{"-netdev"}},
		{"tap", &vmm.NIC{Tap: "bgr-tap1", MAC: "52:54:00:aa:bb:cc"},
			[]string{"-netdev tap,id=net0,ifname=bgr-tap1,script=no,downscript=no", "virtio-net-device,netdev=net0,mac=52:54:00:aa:bb:cc"}, nil},
		{"user, sandboxed", &vmm.NIC{User: true, MAC: "52:54:00:00:00:01", Forwards: []vmm.Forward{{Proto: "tcp", HostPort: 2222, GuestPort: 22}}},
			[]string{"user,id=net0,net=10.0.2.0/24,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"}, nil},
		{"user, outbound", &vmm.NIC{User: true, Outbound: true, MAC: "52:54:00:00:00:01"},
			[]string{"user,id=net0,net=10.0.2.0/24"}, []string{"restrict"}},
	} {
		line := strings.Join(args(machine{Spec: vmm.Spec{NIC: tc.nic}, Accel: "tcg"}), " ")
		for _, w := range tc.want {
			if !strings.Contains(line, w) {
				t.Errorf("%s: %q lacks %q", tc.name, line, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(line, n) {
				t.Errorf("%s: %q has %q", tc.name, line, n)
			}
		}
	}
}

// The TCG warning is given once per driver, not at every boot.
func TestWarnsOnce(t *testing.T) {
	warnings := 0
	d := &Driver{Binary: "/nonexistent/qemu", Warn: func(error) { warnings++ }}
	for range 3 {
		if _, err := d.Start(context.Background(), vmm.Spec{Dir: t.TempDir()}); err == nil {
			t.Fatal("a missing QEMU binary started")
		}
	}
	want := 0
	if vmm.KVMUsable() != nil {
		want = 1
	}
	if warnings != want {
		t.Fatalf("%d warnings over 3 boots, want %d", warnings, want)
	}
}
