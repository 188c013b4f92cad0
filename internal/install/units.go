package install

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/install/record"
)

// The units' names.
const (
	DaemonUnit = "bangerd.service"
	HelperUnit = "banger-helper.service"
	unitDir    = "/etc/systemd/system"
)

// Binaries installed, relative to the prefix: the CLI on the PATH, the
// daemon and the guest agent side by side (the daemon finds the agent
// next to itself) where users do not run them.
const (
	cliPath    = "bin/banger"
	daemonPath = "lib/banger/bangerd"
	agentPath  = "lib/banger/banger-agent"
)

const docs = "https://github.com/bangerdev/banger/blob/main/docs/privileges.md"

// daemonUnit runs bangerd as the owner in the system layout. Its VMMs are
// its children: KillMode=process ends the daemon alone on a stop, a
// restart or an upgrade, and the next daemon adopts the VMs still
// running. systemd makes the layout's directories the owner's.
func daemonUnit(r record.Record, ownerGroup string, extraGroups []string) string {
	runtimeMode := "0700"
	if r.Group != "" {
		runtimeMode = "0750"
	}
	var b strings.Builder
	header(&b, r, fmt.Sprintf("banger daemon of %s (microVMs from OCI images)", r.Owner))
	fmt.Fprintf(&b, "Wants=%s\n", HelperUnit)
	fmt.Fprintf(&b, "After=network.target %s\n\n", HelperUnit)
	b.WriteString("[Service]\n")
	b.WriteString("Type=exec\n")
	fmt.Fprintf(&b, "User=%s\n", r.Owner)
	fmt.Fprintf(&b, "Group=%s\n", ownerGroup)
	if len(extraGroups) > 0 {
		fmt.Fprintf(&b, "SupplementaryGroups=%s\n", strings.Join(extraGroups, " "))
	}
	fmt.Fprintf(&b, "ExecStart=%s --system\n", filepath.Join(r.Prefix, daemonPath))
	b.WriteString("KillMode=process\n")
	b.WriteString("Restart=on-failure\n")
	b.WriteString("RestartSec=1\n")
	b.WriteString("UMask=0077\n")
	b.WriteString("NoNewPrivileges=yes\n")
	b.WriteString("LimitNOFILE=65536\n")
	b.WriteString("RuntimeDirectory=banger\n")
	fmt.Fprintf(&b, "RuntimeDirectoryMode=%s\n", runtimeMode)
	b.WriteString("RuntimeDirectoryPreserve=yes\n")
	b.WriteString("StateDirectory=banger\n")
	b.WriteString("StateDirectoryMode=0700\n")
	b.WriteString("CacheDirectory=banger\n")
	b.WriteString("CacheDirectoryMode=0700\n")
	b.WriteString("LogsDirectory=banger\n")
	b.WriteString("LogsDirectoryMode=0700\n\n")
	b.WriteString("[Install]\n")
	b.WriteString("WantedBy=multi-user.target\n")
	return b.String()
}

// helperUnit runs the root network helper for the owner's daemon alone,
// with the capabilities its operations need and no more (docs/privileges.md).
func helperUnit(r record.Record) string {
	var b strings.Builder
	header(&b, r, fmt.Sprintf("banger root network helper for %s's daemon", r.Owner))
	fmt.Fprintf(&b, "Before=%s\n", DaemonUnit)
	b.WriteString("After=network.target\n\n")
	b.WriteString("[Service]\n")
	b.WriteString("Type=exec\n")
	fmt.Fprintf(&b, "ExecStart=%s system helper --owner %s --socket %s --config /etc/banger/config.toml\n",
		filepath.Join(r.Prefix, cliPath), r.Owner, r.HelperSocket)
	b.WriteString("Restart=on-failure\n")
	b.WriteString("RestartSec=1\n")
	fmt.Fprintf(&b, "RuntimeDirectory=%s\n", filepath.Base(filepath.Dir(r.HelperSocket)))
	b.WriteString("RuntimeDirectoryMode=0755\n")
	// Bridges, taps, nftables, NFLOG and conntrack; port 53; the socket
	// given to the owner.
	b.WriteString("CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_CHOWN\n")
	b.WriteString("NoNewPrivileges=yes\n")
	// It writes its socket's directory alone (RuntimeDirectory), and, in
	// the API trees strict leaves writable, /dev/net/tun's mode and
	// /proc/sys/net/ipv4/ip_forward. The owner's state is none of its
	// business.
	b.WriteString("ProtectSystem=strict\n")
	fmt.Fprintf(&b, "ReadWritePaths=%s\n", filepath.Dir(r.HelperSocket))
	b.WriteString("InaccessiblePaths=-/var/lib/banger -/var/cache/banger -/var/log/banger\n")
	b.WriteString("ProtectHome=yes\n")
	b.WriteString("PrivateTmp=yes\n")
	b.WriteString("PrivateMounts=yes\n")
	// Devices: taps are made through /dev/net/tun alone.
	b.WriteString("DevicePolicy=closed\n")
	b.WriteString("DeviceAllow=/dev/net/tun rw\n")
	b.WriteString("ProtectClock=yes\n")
	b.WriteString("ProtectKernelModules=yes\n")
	b.WriteString("ProtectKernelLogs=yes\n")
	b.WriteString("ProtectControlGroups=yes\n")
	b.WriteString("ProtectHostname=yes\n")
	b.WriteString("ProtectProc=invisible\n")
	b.WriteString("RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6\n")
	b.WriteString("RestrictNamespaces=yes\n")
	b.WriteString("RestrictRealtime=yes\n")
	b.WriteString("RestrictSUIDSGID=yes\n")
	b.WriteString("MemoryDenyWriteExecute=yes\n")
	b.WriteString("LockPersonality=yes\n")
	b.WriteString("UMask=0077\n")
	b.WriteString("SystemCallArchitectures=native\n")
	b.WriteString("SystemCallFilter=@system-service\n")
	b.WriteString("SystemCallErrorNumber=EPERM\n\n")
	b.WriteString("[Install]\n")
	b.WriteString("WantedBy=multi-user.target\n")
	return b.String()
}

// header starts a unit: where it came from, its description and docs.
func header(b *strings.Builder, r record.Record, description string) {
	fmt.Fprintf(b, "# Written by `banger system install` (banger %s); run it again rather than editing this file.\n", r.Version)
	b.WriteString("[Unit]\n")
	fmt.Fprintf(b, "Description=%s\n", description)
	fmt.Fprintf(b, "Documentation=%s\n", docs)
}

// BinaryPaths are where an install put each of banger's binaries.
func BinaryPaths(r record.Record) map[string]string {
	return map[string]string{
		"banger":       filepath.Join(r.Prefix, cliPath),
		"bangerd":      filepath.Join(r.Prefix, daemonPath),
		"banger-agent": filepath.Join(r.Prefix, agentPath),
	}
}
