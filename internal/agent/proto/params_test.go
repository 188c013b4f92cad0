package proto

import (
	"crypto/ed25519"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestBootParamsRoundTrip(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	for name, p := range map[string]BootParams{
		"empty":    {},
		"hostname": {Hostname: "dev-box"},
		"disks":    {DiskOrder: []string{"banger-root", "banger-work"}},
		"machine":  {MachineID: "0123456789abcdef0123456789abcdef"},
		"init":     {Init: "/lib/systemd/systemd"},
		"full": {Hostname: "a", SSHKeys: []ssh.PublicKey{key, key}, Net: &NetParams{
			MAC: mac, Address: netip.MustParsePrefix("10.0.2.15/24"), Gateway: netip.MustParseAddr("10.0.2.2"),
			DNS: []netip.Addr{netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("fd00::1")},
		}},
		"no gateway": {Net: &NetParams{MAC: mac, Address: netip.MustParsePrefix("192.168.7.2/30")}},
	} {
		cmdline := "console=ttyS0 " + strings.Join(p.Args(), " ") + " quiet"
		got, err := ParseBootParams(cmdline)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got.Args(), p.Args()) {
			t.Errorf("%s: round trip = %v, want %v", name, got.Args(), p.Args())
		}
	}
}

func TestBootParamsErrors(t *testing.T) {
	for _, cmdline := range []string{
		"banger.ssh_keys=!!!",
		"banger.ssh_keys=AAAA",
		"banger.ip=10.0.0.2/24 banger.mac=zz",
		"banger.ip=10.0.0.2 banger.mac=52:54:00:12:34:56",
		"banger.ip=10.0.0.2/24 banger.mac=52:54:00:12:34:56 banger.gw=x",
		"banger.ip=10.0.0.2/24 banger.mac=52:54:00:12:34:56 banger.dns=1.1.1.1,,",
		"banger.machine_id=../../etc/shadow",
		"banger.machine_id=0123456789ABCDEF0123456789ABCDEF",
		"banger.init=sbin/init",
		"banger.init=/sbin/../bin/sh",
		"banger.init=/sbin/init;reboot",
		"banger.init=/",
	} {
		if _, err := ParseBootParams(cmdline); err == nil || !strings.Contains(err.Error(), "banger.") {
			t.Errorf("ParseBootParams(%q) = %v, want an error naming the argument", cmdline, err)
		}
	}
}

func FuzzParseBootParams(f *testing.F) {
	f.Add("banger.hostname=x banger.ip=10.0.0.2/24 banger.mac=52:54:00:12:34:56 banger.gw=10.0.0.1 banger.dns=1.1.1.1")
	f.Add("banger.ssh_keys=AAAAC3NzaC1lZDI1NTE5AAAAIB")
	f.Add("banger.init=/sbin/init banger.machine_id=0123456789abcdef0123456789abcdef")
	f.Fuzz(func(t *testing.T, cmdline string) {
		p, err := ParseBootParams(cmdline)
		if err != nil {
			return
		}
		// What parses re-encodes to something that parses the same.
		again, err := ParseBootParams(strings.Join(p.Args(), " "))
		if err != nil {
			t.Fatalf("re-parsing %v: %v", p.Args(), err)
		}
		if !reflect.DeepEqual(again.Args(), p.Args()) {
			t.Fatalf("%v became %v", p.Args(), again.Args())
		}
	})
}
