package proto

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strings"

	"golang.org/x/crypto/ssh"
)

// BootParams are what the host tells the agent on the kernel command
// line, as banger.* arguments: the agent needs them before any channel
// to the host exists.
type BootParams struct {
	Hostname string
	// SSHKeys are the public keys the agent's SSH server accepts.
	SSHKeys []ssh.PublicKey
	// Net configures the NIC with this MAC; nil means no network.
	Net *NetParams
	// DiskOrder lists disk serials in attach order, for VMMs whose disks
	// carry no serial (Firecracker): the i-th is /dev/vd('a'+i).
	DiskOrder []string
	// MachineID is the VM's /etc/machine-id: its ID, never the image's,
	// which every VM of that image would share.
	MachineID string
	// Init is the image's init (systemd) the agent hands PID 1 to once
	// the machine is prepared, staying on as its service; "" keeps the
	// agent as init.
	Init string
}

// ValidInit says whether s may name an init: an absolute, clean path of
// plain characters (it travels on the kernel command line).
func ValidInit(s string) bool {
	if len(s) < 2 || len(s) > 256 || s[0] != '/' || path.Clean(s) != s {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("/._-+", c)) {
			return false
		}
	}
	return true
}

// ValidMachineID: 32 lower-case hex digits, as machine-id(5) says.
func ValidMachineID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// NetParams configure the guest's one NIC.
type NetParams struct {
	MAC     net.HardwareAddr
	Address netip.Prefix // the guest's address and its subnet
	Gateway netip.Addr   // the default route; invalid for none
	DNS     []netip.Addr
}

// Args encodes p as kernel command line arguments.
func (p BootParams) Args() []string {
	var out []string
	if p.Hostname != "" {
		out = append(out, "banger.hostname="+p.Hostname)
	}
	if len(p.SSHKeys) > 0 {
		keys := make([]string, len(p.SSHKeys))
		for i, k := range p.SSHKeys {
			keys[i] = base64.StdEncoding.EncodeToString(k.Marshal())
		}
		out = append(out, "banger.ssh_keys="+strings.Join(keys, ","))
	}
	if len(p.DiskOrder) > 0 {
		out = append(out, "banger.disks="+strings.Join(p.DiskOrder, ","))
	}
	if p.MachineID != "" {
		out = append(out, "banger.machine_id="+p.MachineID)
	}
	if p.Init != "" {
		out = append(out, "banger.init="+p.Init)
	}
	if n := p.Net; n != nil {
		out = append(out, "banger.mac="+n.MAC.String(), "banger.ip="+n.Address.String())
		if n.Gateway.IsValid() {
			out = append(out, "banger.gw="+n.Gateway.String())
		}
		if len(n.DNS) > 0 {
			dns := make([]string, len(n.DNS))
			for i, a := range n.DNS {
				dns[i] = a.String()
			}
			out = append(out, "banger.dns="+strings.Join(dns, ","))
		}
	}
	return out
}

// ParseBootParams reads the banger.* arguments of a kernel command line.
func ParseBootParams(cmdline string) (BootParams, error) {
	args := map[string]string{}
	for _, f := range strings.Fields(cmdline) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "banger.") {
			args[k] = v
		}
	}
	p := BootParams{Hostname: args["banger.hostname"]}
	if s := args["banger.ssh_keys"]; s != "" {
		for _, f := range strings.Split(s, ",") {
			b, err := base64.StdEncoding.DecodeString(f)
			if err != nil {
				return BootParams{}, fmt.Errorf("decoding banger.ssh_keys: %w", err)
			}
			k, err := ssh.ParsePublicKey(b)
			if err != nil {
				return BootParams{}, fmt.Errorf("parsing banger.ssh_keys: %w", err)
			}
			p.SSHKeys = append(p.SSHKeys, k)
		}
	}
	if s := args["banger.disks"]; s != "" {
		p.DiskOrder = strings.Split(s, ",")
	}
	if s := args["banger.machine_id"]; s != "" {
		if !ValidMachineID(s) {
			return BootParams{}, fmt.Errorf("parsing banger.machine_id: %q is not 32 hex digits", s)
		}
		p.MachineID = s
	}
	if s := args["banger.init"]; s != "" {
		if !ValidInit(s) {
			return BootParams{}, fmt.Errorf("parsing banger.init: %q is not an absolute path of plain characters", s)
		}
		p.Init = s
	}
	if args["banger.ip"] == "" {
		return p, nil
	}
	n := &NetParams{}
	var err error
	if n.MAC, err = net.ParseMAC(args["banger.mac"]); err != nil {
		return BootParams{}, fmt.Errorf("parsing banger.mac: %w", err)
	}
	if n.Address, err = netip.ParsePrefix(args["banger.ip"]); err != nil {
		return BootParams{}, fmt.Errorf("parsing banger.ip: %w", err)
	}
	if s := args["banger.gw"]; s != "" {
		if n.Gateway, err = netip.ParseAddr(s); err != nil {
			return BootParams{}, fmt.Errorf("parsing banger.gw: %w", err)
		}
	}
	if s := args["banger.dns"]; s != "" {
		for _, f := range strings.Split(s, ",") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return BootParams{}, fmt.Errorf("parsing banger.dns: %w", err)
			}
			n.DNS = append(n.DNS, a)
		}
	}
	p.Net = n
	return p, nil
}
