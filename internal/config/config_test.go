package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var host = Host{CPUs: 8, MemoryBytes: 16 << 30}

func TestDefaultsScaleWithTheHost(t *testing.T) {
	for _, tc := range []struct {
		host      Host
		vcpu, mib int
	}{
		{Host{CPUs: 1, MemoryBytes: 1 << 30}, 1, 256},
		{Host{CPUs: 2, MemoryBytes: 24 << 30}, 1, 3072},
		{Host{CPUs: 8, MemoryBytes: 16 << 30}, 2, 2048},
		{Host{CPUs: 64, MemoryBytes: 512 << 30}, 4, 8192},
	} {
		c := Defaults(tc.host)
		if c.VMDefaults.VCPU != tc.vcpu || c.VMDefaults.MemoryMiB != tc.mib {
			t.Errorf("Defaults(%+v) = vcpu %d, mem %d; want %d, %d", tc.host, c.VMDefaults.VCPU, c.VMDefaults.MemoryMiB, tc.vcpu, tc.mib)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name  string
		doc   string
		check func(Config) bool
		err   string // substring of the error; "" means valid
	}{
		{name: "empty", doc: "", check: func(c Config) bool { return c.VMM == "auto" && c.AutoStopStaleAfter == 0 }},
		{name: "all keys", doc: `
log_level = "debug"
auto_stop_stale_after = "2h"
stats_poll_interval = "1s"
default_image_name = "localhost:5000/dev:latest"
default_kernel = "6.1.0-28"
vmm = "qemu"
firecracker_bin = "/opt/fc"
firecracker_jailer = "/opt/jailer"
jailer_uid = 1500
jailer_gid = 1501
[vm_defaults]
vcpu = 3
memory_mib = 1024
disk_size = "20G"
[network]
bridge = "bg1"
cidr = "10.9.8.7/24"
nat = true
`, check: func(c Config) bool {
			return c.LogLevel == "debug" && c.AutoStopStaleAfter == 2*time.Hour && c.StatsPollInterval == time.Second &&
				c.DefaultImageName == "localhost:5000/dev:latest" && c.DefaultKernel == "6.1.0-28" && c.VMM == "qemu" &&
				c.FirecrackerBin == "/opt/fc" && c.FirecrackerJailer == "/opt/jailer" && c.JailerUID == 1500 && c.JailerGID == 1501 &&
				c.VMDefaults.VCPU == 3 && c.VMDefaults.MemoryMiB == 1024 &&
				c.VMDefaults.DiskSize == 20<<30 && c.Network.Bridge == "bg1" && c.Network.CIDR.String() == "10.9.8.0/24" && c.Network.NAT
		}},
		{name: "zero duration is off", doc: `auto_stop_stale_after = 0`, check: func(c Config) bool { return c.AutoStopStaleAfter == 0 }},
		{name: "integer disk size is bytes", doc: "[vm_defaults]\ndisk_size = 1073741824", check: func(c Config) bool { return c.VMDefaults.DiskSize == 1<<30 }},
		{name: "unknown top key", doc: `colour = "red"`, err: `unknown key "colour"`},
		{name: "unknown nested key", doc: "[network]\nmtu = 1500", err: `unknown key "network.mtu"`},
		{name: "unknown table", doc: "[vm]\nvcpu = 1", err: `unknown key "vm`},
		{name: "syntax", doc: "vmm = ", err: "line 1"},
		{name: "wrong type", doc: `vmm = 3`, err: "vmm"},
		{name: "bad vmm", doc: `vmm = "xen"`, err: `vmm: "xen" is not one of auto, qemu, firecracker`},
		{name: "bad level", doc: `log_level = "loud"`, err: "log_level"},
		{name: "bare duration", doc: `auto_stop_stale_after = 30`, err: `has no unit`},
		{name: "bad duration", doc: `stats_poll_interval = "soon"`, err: "stats_poll_interval"},
		{name: "negative duration", doc: `auto_stop_stale_after = "-1m"`, err: "negative"},
		{name: "poll too fast", doc: `stats_poll_interval = "1ms"`, err: "too short"},
		{name: "jailer as root", doc: "jailer_uid = 0", err: "jailer_uid: 0 must be an unprivileged id"},
		{name: "vcpu zero", doc: "[vm_defaults]\nvcpu = 0", err: "vm_defaults.vcpu"},
		{name: "memory tiny", doc: "[vm_defaults]\nmemory_mib = 8", err: "vm_defaults.memory_mib"},
		{name: "init image", doc: "[vm_defaults]\ninit = \"image\"", check: func(c Config) bool { return c.VMDefaults.Init == "image" }},
		{name: "init junk", doc: "[vm_defaults]\ninit = \"sysvinit\"", err: "vm_defaults.init"},
		{name: "disk tiny", doc: "[vm_defaults]\ndisk_size = \"1M\"", err: "too small"},
		{name: "disk junk", doc: "[vm_defaults]\ndisk_size = \"big\"", err: "vm_defaults.disk_size"},
		{name: "bridge too long", doc: "[network]\nbridge = \"averyveryverylongname\"", err: "network.bridge"},
		{name: "mode unknown", doc: "[network]\nmode = \"host\"", err: `network.mode: "host": use user, bridge or none`},
		{name: "cidr junk", doc: "[network]\ncidr = \"10.0.0.0\"", err: "network.cidr"},
		{name: "cidr v6", doc: "[network]\ncidr = \"fd00::/64\"", err: "IPv4"},
		{name: "empty image", doc: `default_image_name = " "`, err: "default_image_name"},
		{name: "image limits", doc: "[images]\nmax_unpacked_size = \"8G\"\nmax_entries = 1000", check: func(c Config) bool {
			return c.Images.MaxUnpackedSize == 8<<30 && c.Images.MaxEntries == 1000
		}},
		{name: "image limit tiny", doc: "[images]\nmax_entries = 3", err: "images.max_entries"},
		{name: "default nat_deny", doc: "", check: func(c Config) bool {
			return slices.Equal(c.Network.NATDeny, DefaultNATDeny()) && len(c.Network.Allow) == 0
		}},
		{name: "egress", doc: "[network]\nnat_deny = [\"10.0.0.0/8\", \"192.168.1.7\"]\nallow = [\"GitHub.com:443\", \"*.npmjs.org\", \"github.com:443\"]", check: func(c Config) bool {
			return fmt.Sprint(c.Network.NATDeny) == "[10.0.0.0/8 192.168.1.7/32]" && slices.Equal(c.Network.Allow, []string{"github.com:443", "*.npmjs.org"})
		}},
		{name: "no nat_deny", doc: "[network]\nnat_deny = []", check: func(c Config) bool { return len(c.Network.NATDeny) == 0 }},
		{name: "nat_deny junk", doc: "[network]\nnat_deny = [\"metadata\"]", err: `network.nat_deny: "metadata" is not an IPv4 address or CIDR`},
		{name: "nat_deny v6", doc: "[network]\nnat_deny = [\"fd00::/8\"]", err: "only IPv4"},
		{name: "allow junk", doc: "[network]\nallow = [\"github.com:http\"]", err: `network.allow: invalid allow rule "github.com:http"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc), host)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("Parse = %+v", c)
			}
		})
	}
}

func TestLoadSources(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")

	c, err := Load(path, host)
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	for _, v := range c.Values() {
		if v.Source == path {
			t.Fatalf("%s sourced from an absent file", v.Key)
		}
	}

	if err := os.WriteFile(path, []byte("vmm = \"qemu\"\n[vm_defaults]\nvcpu = 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Load(path, host)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Value{}
	for _, v := range c.Values() {
		got[v.Key] = v
	}
	if len(got) != len(Keys()) {
		t.Fatalf("Values has %d keys, Keys %d", len(got), len(Keys()))
	}
	for key, want := range map[string][2]string{
		"vmm":                    {"qemu", path},
		"vm_defaults.vcpu":       {"2", path},
		"log_level":              {"info", SourceDefault},
		"vm_defaults.memory_mib": {"2048", "host (an eighth of 16 GiB RAM, 256 MiB to 8 GiB)"},
		"auto_stop_stale_after":  {"0 (off)", SourceDefault},
		"vm_defaults.disk_size":  {"10 GiB", SourceDefault},
		"vm_defaults.init":       {"auto", SourceDefault},
	} {
		if got[key].Value != want[0] || got[key].Source != want[1] {
			t.Errorf("%s = %+v, want %v", key, got[key], want)
		}
	}

	if err := os.WriteFile(path, []byte("bogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, host); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"bogus"`) {
		t.Fatalf("Load bogus = %v", err)
	}
}

// FuzzParse feeds arbitrary documents to the parser: it must not panic, and
// whatever it accepts must satisfy the validation rules.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`vmm = "qemu"`))
	f.Add([]byte("[vm_defaults]\ndisk_size = \"20G\"\nvcpu = 2"))
	f.Add([]byte("[network]\ncidr = \"10.0.0.0/16\"\nnat = true"))
	f.Add([]byte(`auto_stop_stale_after = "1h"`))
	f.Add([]byte("[[x]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, host)
		if err != nil {
			return
		}
		if c.VMDefaults.VCPU < 1 || c.VMDefaults.MemoryMiB < 64 || c.VMDefaults.DiskSize < 64<<20 ||
			c.AutoStopStaleAfter < 0 || c.StatsPollInterval < 100*time.Millisecond || !c.Network.CIDR.IsValid() {
			t.Fatalf("Parse accepted an invalid config: %+v", c)
		}
	})
}
