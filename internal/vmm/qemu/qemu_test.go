package qemu

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/kvm"
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
		{"user, outbound: passt", &vmm.NIC{User: true, Outbound: true, MAC: "52:54:00:00:00:01"},
			[]string{"-netdev stream,id=net0,server=off,addr.type=unix,addr.path=/run/vm/passt.sock"}, []string{"restrict", "user,", "hostfwd"}},
	} {
		m := machine{Spec: vmm.Spec{NIC: tc.nic}, Accel: "tcg"}
		if tc.nic != nil && tc.nic.Outbound {
			m.PasstSocket = "/run/vm/passt.sock"
		}
		line := strings.Join(args(m), " ")
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

// TestArgsMemory: guest memory backed by a file is named as QEMU's own
// (a state saved with either loads into the other), shared for a save's
// helper and copy-on-write for a restore.
func TestArgsMemory(t *testing.T) {
	for _, tc := range []struct {
		ram  *ramFile
		want []string
		not  []string
	}{
		{nil, []string{"-m 512"}, []string{"memory-backend", "-object"}},
		{&ramFile{Path: "/s/ram,1"}, []string{"microvm,x-option-roms=off,rtc=on,memory-backend=microvm.ram",
			"-object memory-backend-file,id=microvm.ram,size=512M,mem-path=/s/ram,,1,share=off"}, nil},
		{&ramFile{Path: "/s/ram", Shared: true}, []string{"mem-path=/s/ram,share=on"}, nil},
	} {
		line := strings.Join(args(machine{Spec: vmm.Spec{MemoryMiB: 512}, Accel: "tcg", RAM: tc.ram}), " ")
		for _, w := range tc.want {
			if !strings.Contains(line, w) {
				t.Errorf("%+v: %q lacks %q", tc.ram, line, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(line, n) {
				t.Errorf("%+v: %q has %q", tc.ram, line, n)
			}
		}
	}
}

func TestPasstArgs(t *testing.T) {
	n := &vmm.NIC{User: true, Outbound: true, Forwards: []vmm.Forward{{Proto: "tcp", HostPort: 2222, GuestPort: 22},
		{Proto: "tcp", HostPort: 8080, GuestPort: 80}, {Proto: "udp", HostPort: 5353, GuestPort: 53}}}
	line := strings.Join(passtArgs("/run/vm", n, 0, 0), " ")
	for _, w := range []string{"--one-off", "--no-map-gw", "--address 10.0.2.15", "--gateway 10.0.2.2", "--dns-forward 10.0.2.3",
		"--socket /run/vm/passt.sock", "--runas 0:0", "--tcp-ports 127.0.0.1/2222:22,127.0.0.1/8080:80", "--udp-ports 127.0.0.1/5353:53"} {
		if !strings.Contains(line, w) {
			t.Errorf("%q lacks %q", line, w)
		}
	}
	line = strings.Join(passtArgs("/run/vm", &vmm.NIC{User: true, Outbound: true}, 1000, 1000), " ")
	if strings.Contains(line, "--runas") || !strings.Contains(line, "--tcp-ports none --udp-ports none") {
		t.Errorf("an unprivileged daemon's passt: %q", line)
	}
}

// The TCG warning is given once per driver, not at every boot.
func TestWarnsOnce(t *testing.T) {
	var warnings int
	d := &Driver{Binary: "/nonexistent/qemu", Log: slog.New(counter{&warnings})}
	for range 3 {
		if _, err := d.Start(context.Background(), vmm.Spec{Dir: t.TempDir()}); err == nil {
			t.Fatal("a missing QEMU binary started")
		}
	}
	want := 0
	if kvm.KVMUsable() != nil {
		want = 1
	}
	if warnings != want {
		t.Fatalf("%d warnings over 3 boots, want %d", warnings, want)
	}
}

// TestArgsDiskCache: the guest's flushes reach the host's disk for a
// writable disk (a host crash does not corrupt a VM's work), and are
// skipped only where nothing is written or losing it is acceptable.
func TestArgsDiskCache(t *testing.T) {
	line := strings.Join(args(machine{Spec: vmm.Spec{Disks: []vmm.Disk{
		{Path: "/i/rootfs.ext4", ReadOnly: true, Serial: "r"},
		{Path: "/v/work.ext4", Serial: "w"},
		{Path: "/v/scratch.ext4", Serial: "s", Volatile: true},
	}}, Accel: "tcg", QMPSocket: "/v/qmp.sock"}), " ")
	for _, want := range []string{
		"file=/i/rootfs.ext4,format=raw,if=none,cache=unsafe,readonly=on",
		"file=/v/work.ext4,format=raw,if=none,cache=writeback ",
		"file=/v/scratch.ext4,format=raw,if=none,cache=unsafe ",
		"-chardev file,id=console,append=on,path=",
		// The control socket, for snapshots.
		"-chardev socket,id=qmp,path=/v/qmp.sock,server=on,wait=off -mon chardev=qmp,mode=control",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("args lack %q:\n%s", want, line)
		}
	}
}

// counter is a slog handler that counts the records it is given.
type counter struct{ n *int }

func (c counter) Enabled(context.Context, slog.Level) bool  { return true }
func (c counter) Handle(context.Context, slog.Record) error { *c.n++; return nil }
func (c counter) WithAttrs([]slog.Attr) slog.Handler        { return c }
func (c counter) WithGroup(string) slog.Handler             { return c }
