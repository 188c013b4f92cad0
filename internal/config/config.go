// Package config loads bangerd's TOML configuration: documented keys,
// defaults (some derived from the host), strict validation that names the
// offending key, and the source of every effective value.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/bangerdev/banger/internal/allowlist"
	"github.com/bangerdev/banger/internal/units"
)

// Config is the daemon's effective configuration.
type Config struct {
	LogLevel           string
	LogMaxSize         int64         // a VM's console (and VMM output) kept on the host, both halves
	AutoStopStaleAfter time.Duration // 0 disables auto-stop
	AutoIdleAction     string        // what auto-stop does to an idle VM: stop or suspend
	// WarmCreate starts new VMs from a saved template of their shape
	// where the driver saves VMs (made on first use), instead of a boot.
	WarmCreate        bool
	StatsPollInterval time.Duration
	DefaultImageName  string
	DefaultKernel     string // "auto": the newest imported kernel
	VMM               string // auto, qemu or firecracker
	FirecrackerBin    string
	// FirecrackerJailer runs Firecracker under this jailer binary, as
	// JailerUID:JailerGID; empty runs it directly.
	FirecrackerJailer string
	JailerUID         int
	JailerGID         int
	VMDefaults        VMDefaults
	Network           Network
	Images            Images
	Workspace         Workspace
	E2B               E2B
	// UpdateURL is where `banger update` finds releases: a base URL or a
	// directory; "" has it need --from.
	UpdateURL string

	file    string
	sources map[string]string
}

// VMDefaults apply to VMs created without explicit sizes.
type VMDefaults struct {
	VCPU      int
	MemoryMiB int
	DiskSize  int64 // bytes
	// Init is PID 1 of new VMs: "agent" (banger's), "image" (the
	// image's systemd) or "auto" (the image's when it has systemd).
	Init string
	// Share: new VMs share memory pages with their creator's other VMs
	// restored from the same state (false: as with --no-share).
	Share bool
}

// Network configures the bridge network of a root daemon.
type Network struct {
	Mode   string // the network of new VMs: user, bridge or none
	Bridge string
	CIDR   netip.Prefix
	NAT    bool // outbound internet for new VMs; off by default
	// NATDeny are destinations no VM reaches, with NAT or an allow-list,
	// on top of link-local (always denied).
	NATDeny []netip.Prefix
	// Allow is the allow-list of new bridge VMs that set neither --nat
	// nor --allow (canonical rules; empty: none).
	Allow []string
	// Helper is the root network helper's socket, for a daemon that does
	// not run as root ("" = none: a root daemon does it itself).
	Helper string
}

// DefaultNATDeny are the cloud metadata services outside link-local:
// Alibaba's, and Oracle's older one.
func DefaultNATDeny() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("100.100.100.200/32"), netip.MustParsePrefix("192.0.0.192/32")}
}

// Images bounds what one image may unpack to, against decompression bombs.
type Images struct {
	MaxUnpackedSize int64 // bytes over all layers
	MaxEntries      int
}

// E2B configures the E2B-compatible API (docs/e2b.md): off unless
// Listen is set.
type E2B struct {
	Listen string // host:port of its HTTP listener; "" serves none
	// Domain is the sandbox domain its answers name: a port of a sandbox
	// is reached as <port>-<id>.<Domain>.
	Domain string
	// BaseImage is what the template "base" runs ("" takes
	// default_image_name).
	BaseImage string
}

// Workspace caps what one workspace sync takes from a guest.
type Workspace struct {
	MaxBytes   int64 // bytes of files
	MaxEntries int   // entries of the guest's manifest, files pulled
}

// Host describes the machine, for defaults that scale with it.
type Host struct {
	CPUs        int
	MemoryBytes int64
}

// Source labels for values that did not come from the file.
const (
	SourceDefault = "default"
	SourceHost    = "host"
)

// ErrInvalid wraps every configuration error.
var ErrInvalid = errors.New("invalid configuration")

// Keys lists every key the file may set, in documentation order.
func Keys() []string {
	return []string{
		"log_level",
		"log_max_size",
		"auto_stop_stale_after",
		"auto_idle_action",
		"warm_create",
		"stats_poll_interval",
		"default_image_name",
		"default_kernel",
		"vmm",
		"firecracker_bin",
		"firecracker_jailer",
		"jailer_uid",
		"jailer_gid",
		"update_url",
		"vm_defaults.vcpu",
		"vm_defaults.memory_mib",
		"vm_defaults.disk_size",
		"vm_defaults.init",
		"network.mode",
		"network.bridge",
		"network.cidr",
		"network.nat",
		"network.nat_deny",
		"network.allow",
		"network.helper",
		"images.max_unpacked_size",
		"images.max_entries",
		"workspace.max_bytes",
		"workspace.max_entries",
		"e2b.listen",
		"e2b.domain",
		"e2b.base_image",
	}
}

// Defaults returns the configuration used when the file sets nothing.
func Defaults(host Host) Config {
	vcpu := min(max(host.CPUs/4, 1), 4)
	mem := min(max(int(host.MemoryBytes/8>>20), 256), 8<<10)
	c := Config{
		LogLevel:          "info",
		LogMaxSize:        16 << 20,
		AutoIdleAction:    "stop",
		WarmCreate:        true,
		StatsPollInterval: 5 * time.Second,
		DefaultImageName:  "docker.io/library/debian:bookworm",
		DefaultKernel:     "auto",
		VMM:               "auto",
		FirecrackerBin:    "firecracker",
		JailerUID:         65534,
		JailerGID:         65534,
		VMDefaults:        VMDefaults{VCPU: vcpu, MemoryMiB: mem, DiskSize: 10 << 30, Init: "auto", Share: true},
		Network:           Network{Mode: "user", Bridge: "banger0", CIDR: netip.MustParsePrefix("10.203.0.0/24"), NATDeny: DefaultNATDeny()},
		Images:            Images{MaxUnpackedSize: 64 << 30, MaxEntries: 4 << 20},
		Workspace:         Workspace{MaxBytes: 8 << 30, MaxEntries: 200_000},
		E2B:               E2B{Domain: "localhost"},
		sources:           map[string]string{},
	}
	for _, k := range Keys() {
		c.sources[k] = SourceDefault
	}
	c.sources["vm_defaults.vcpu"] = fmt.Sprintf("%s (a quarter of %d cores, 1 to 4)", SourceHost, host.CPUs)
	c.sources["vm_defaults.memory_mib"] = fmt.Sprintf("%s (an eighth of %s RAM, 256 MiB to 8 GiB)", SourceHost, units.FormatSize(host.MemoryBytes))
	return c
}

// file mirrors the TOML document. Durations and sizes are decoded by hand so
// that a bare integer gets a helpful error instead of meaning nanoseconds.
type file struct {
	LogLevel           *string `toml:"log_level"`
	LogMaxSize         any     `toml:"log_max_size"`
	AutoStopStaleAfter any     `toml:"auto_stop_stale_after"`
	AutoIdleAction     *string `toml:"auto_idle_action"`
	WarmCreate         *bool   `toml:"warm_create"`
	StatsPollInterval  any     `toml:"stats_poll_interval"`
	DefaultImageName   *string `toml:"default_image_name"`
	UpdateURL          *string `toml:"update_url"`
	DefaultKernel      *string `toml:"default_kernel"`
	VMM                *string `toml:"vmm"`
	FirecrackerBin     *string `toml:"firecracker_bin"`
	FirecrackerJailer  *string `toml:"firecracker_jailer"`
	JailerUID          *int    `toml:"jailer_uid"`
	JailerGID          *int    `toml:"jailer_gid"`
	VMDefaults         struct {
		VCPU      *int    `toml:"vcpu"`
		MemoryMiB *int    `toml:"memory_mib"`
		DiskSize  any     `toml:"disk_size"`
		Init      *string `toml:"init"`
		Share     *bool   `toml:"share"`
	} `toml:"vm_defaults"`
	Network struct {
		Mode    *string   `toml:"mode"`
		Bridge  *string   `toml:"bridge"`
		CIDR    *string   `toml:"cidr"`
		NAT     *bool     `toml:"nat"`
		NATDeny *[]string `toml:"nat_deny"`
		Allow   *[]string `toml:"allow"`
		Helper  *string   `toml:"helper"`
	} `toml:"network"`
	Images struct {
		MaxUnpackedSize any  `toml:"max_unpacked_size"`
		MaxEntries      *int `toml:"max_entries"`
	} `toml:"images"`
	Workspace struct {
		MaxBytes   any  `toml:"max_bytes"`
		MaxEntries *int `toml:"max_entries"`
	} `toml:"workspace"`
	E2B struct {
		Listen    *string `toml:"listen"`
		Domain    *string `toml:"domain"`
		BaseImage *string `toml:"base_image"`
	} `toml:"e2b"`
}

// Load reads path over the defaults. A missing file is not an error: every
// value is then a default.
func Load(path string, host Host) (Config, error) {
	c := Defaults(host)
	c.file = path
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	if err := c.apply(data); err != nil {
		return Config{}, fmt.Errorf("%w: %s: %w", ErrInvalid, path, err)
	}
	return c, nil
}

// Parse reads a document over the defaults, for tests and fuzzing.
func Parse(data []byte, host Host) (Config, error) {
	c := Defaults(host)
	if err := c.apply(data); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return c, nil
}

func (c *Config) apply(data []byte) error {
	var f file
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return fmt.Errorf("line %d: %s", perr.Position.Line, perr.Message)
		}
		return err
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		return fmt.Errorf("unknown key %q; known keys are %s", undecoded[0].String(), strings.Join(Keys(), ", "))
	}
	src := c.file
	if src == "" {
		src = "config"
	}
	set := func(key string) { c.sources[key] = src }
	for _, apply := range []func(*file, func(string)) error{c.applyDaemon, c.applyVMDefaults, c.applyNetwork, c.applyLimits, c.applyE2B} {
		if err := apply(&f, set); err != nil {
			return err
		}
	}
	return nil
}

// applyDaemon applies the top-level keys: the daemon's own and the VMMs'.
func (c *Config) applyDaemon(f *file, set func(key string)) error {
	if f.LogLevel != nil {
		if !slices.Contains([]string{"debug", "info", "warn", "error"}, *f.LogLevel) {
			return fmt.Errorf("log_level: %q is not one of debug, info, warn, error", *f.LogLevel)
		}
		c.LogLevel = *f.LogLevel
		set("log_level")
	}
	if f.AutoStopStaleAfter != nil {
		d, err := parseDuration(f.AutoStopStaleAfter)
		if err != nil {
			return fmt.Errorf("auto_stop_stale_after: %w", err)
		}
		c.AutoStopStaleAfter = d
		set("auto_stop_stale_after")
	}
	if f.AutoIdleAction != nil {
		switch *f.AutoIdleAction {
		case "stop", "suspend":
		default:
			return fmt.Errorf("auto_idle_action: %q is neither \"stop\" nor \"suspend\"", *f.AutoIdleAction)
		}
		c.AutoIdleAction = *f.AutoIdleAction
		set("auto_idle_action")
	}
	if f.WarmCreate != nil {
		c.WarmCreate = *f.WarmCreate
		set("warm_create")
	}
	if f.StatsPollInterval != nil {
		d, err := parseDuration(f.StatsPollInterval)
		if err != nil {
			return fmt.Errorf("stats_poll_interval: %w", err)
		}
		if d < 100*time.Millisecond {
			return fmt.Errorf("stats_poll_interval: %s is too short; use at least 100ms", d)
		}
		c.StatsPollInterval = d
		set("stats_poll_interval")
	}
	if f.DefaultImageName != nil {
		if strings.TrimSpace(*f.DefaultImageName) == "" {
			return errors.New("default_image_name: must not be empty")
		}
		c.DefaultImageName = *f.DefaultImageName
		set("default_image_name")
	}
	if f.UpdateURL != nil {
		u := strings.TrimSpace(*f.UpdateURL)
		if u != "" && !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") && !filepath.IsAbs(u) {
			return fmt.Errorf("update_url: %q is neither an http(s) URL nor an absolute directory", u)
		}
		c.UpdateURL = u
		set("update_url")
	}
	if f.DefaultKernel != nil {
		if strings.TrimSpace(*f.DefaultKernel) == "" {
			return errors.New(`default_kernel: must not be empty; use "auto" for the newest imported kernel`)
		}
		c.DefaultKernel = *f.DefaultKernel
		set("default_kernel")
	}
	if f.VMM != nil {
		if !slices.Contains([]string{"auto", "qemu", "firecracker"}, *f.VMM) {
			return fmt.Errorf("vmm: %q is not one of auto, qemu, firecracker", *f.VMM)
		}
		c.VMM = *f.VMM
		set("vmm")
	}
	if f.FirecrackerBin != nil {
		if *f.FirecrackerBin == "" {
			return errors.New("firecracker_bin: must not be empty")
		}
		c.FirecrackerBin = *f.FirecrackerBin
		set("firecracker_bin")
	}
	if f.FirecrackerJailer != nil {
		c.FirecrackerJailer = *f.FirecrackerJailer
		set("firecracker_jailer")
	}
	for _, id := range []struct {
		key string
		v   *int
		dst *int
	}{{"jailer_uid", f.JailerUID, &c.JailerUID}, {"jailer_gid", f.JailerGID, &c.JailerGID}} {
		if id.v == nil {
			continue
		}
		if *id.v < 1 || *id.v > 1<<31-1 {
			return fmt.Errorf("%s: %d must be an unprivileged id (1 or more): the jailer exists to drop root", id.key, *id.v)
		}
		*id.dst = *id.v
		set(id.key)
	}
	return nil
}

// applyVMDefaults applies [vm_defaults].
func (c *Config) applyVMDefaults(f *file, set func(key string)) error {
	if v := f.VMDefaults.VCPU; v != nil {
		if *v < 1 || *v > 255 {
			return fmt.Errorf("vm_defaults.vcpu: %d is out of range 1 to 255", *v)
		}
		c.VMDefaults.VCPU = *v
		set("vm_defaults.vcpu")
	}
	if v := f.VMDefaults.Init; v != nil {
		switch *v {
		case "agent", "image", "auto":
		default:
			return fmt.Errorf("vm_defaults.init: %q is not \"agent\", \"image\" or \"auto\"", *v)
		}
		c.VMDefaults.Init = *v
		set("vm_defaults.init")
	}
	if v := f.VMDefaults.Share; v != nil {
		c.VMDefaults.Share = *v
		set("vm_defaults.share")
	}
	if v := f.VMDefaults.MemoryMiB; v != nil {
		if *v < 64 {
			return fmt.Errorf("vm_defaults.memory_mib: %d is too small; use at least 64", *v)
		}
		c.VMDefaults.MemoryMiB = *v
		set("vm_defaults.memory_mib")
	}
	return nil
}

// applyNetwork applies [network].
func (c *Config) applyNetwork(f *file, set func(key string)) error {
	if v := f.Network.Mode; v != nil {
		if *v != "user" && *v != "bridge" && *v != "none" {
			return fmt.Errorf("network.mode: %q: use user, bridge or none", *v)
		}
		c.Network.Mode = *v
		set("network.mode")
	}
	if v := f.Network.Bridge; v != nil {
		if !bridgeName.MatchString(*v) {
			return fmt.Errorf("network.bridge: %q is not a valid interface name (1 to 15 of a-z, 0-9, '-', '_', '.')", *v)
		}
		c.Network.Bridge = *v
		set("network.bridge")
	}
	if v := f.Network.CIDR; v != nil {
		p, err := netip.ParsePrefix(*v)
		if err != nil {
			return fmt.Errorf("network.cidr: %q is not a CIDR such as 10.203.0.0/24", *v)
		}
		if !p.Addr().Is4() || p.Bits() > 29 || p.Bits() < 8 {
			return fmt.Errorf("network.cidr: %s must be an IPv4 prefix between /8 and /29", p)
		}
		c.Network.CIDR = p.Masked()
		set("network.cidr")
	}
	if v := f.Network.NAT; v != nil {
		c.Network.NAT = *v
		set("network.nat")
	}
	if v := f.Network.NATDeny; v != nil {
		c.Network.NATDeny = nil
		for _, d := range *v {
			p, err := netip.ParsePrefix(d)
			if err != nil {
				a, aerr := netip.ParseAddr(d)
				if aerr != nil {
					return fmt.Errorf("network.nat_deny: %q is not an IPv4 address or CIDR such as 10.0.0.0/8", d)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			if !p.Addr().Is4() {
				return fmt.Errorf("network.nat_deny: %s: only IPv4 (VMs have no IPv6 route)", d)
			}
			c.Network.NATDeny = append(c.Network.NATDeny, p.Masked())
		}
		set("network.nat_deny")
	}
	if v := f.Network.Allow; v != nil {
		l, err := allowlist.ParseList(*v)
		if err != nil {
			return fmt.Errorf("network.allow: %w", err)
		}
		c.Network.Allow = l.Strings()
		set("network.allow")
	}
	if v := f.Network.Helper; v != nil {
		if *v != "" && !filepath.IsAbs(*v) {
			return fmt.Errorf("network.helper: %q: the helper's socket is an absolute path", *v)
		}
		c.Network.Helper = *v
		set("network.helper")
	}
	return nil
}

// applyLimits applies the sizes and counts with a floor ([images], [workspace], log_max_size).
func (c *Config) applyLimits(f *file, set func(key string)) error {
	// Sizes and counts with a floor, each its own key.
	for _, sz := range []struct {
		key   string
		v     any
		floor int64
		dst   *int64
	}{
		{"log_max_size", f.LogMaxSize, 64 << 10, &c.LogMaxSize},
		{"vm_defaults.disk_size", f.VMDefaults.DiskSize, 64 << 20, &c.VMDefaults.DiskSize},
		{"images.max_unpacked_size", f.Images.MaxUnpackedSize, 16 << 20, &c.Images.MaxUnpackedSize},
		{"workspace.max_bytes", f.Workspace.MaxBytes, 1 << 20, &c.Workspace.MaxBytes},
	} {
		if sz.v == nil {
			continue
		}
		n, err := parseSize(sz.v)
		if err != nil {
			return fmt.Errorf("%s: %w", sz.key, err)
		}
		if n < sz.floor {
			return fmt.Errorf("%s: %s is too small; use at least %s", sz.key, units.FormatSize(n), units.FormatSize(sz.floor))
		}
		*sz.dst = n
		set(sz.key)
	}
	for _, cnt := range []struct {
		key string
		v   *int
		dst *int
	}{{"images.max_entries", f.Images.MaxEntries, &c.Images.MaxEntries}, {"workspace.max_entries", f.Workspace.MaxEntries, &c.Workspace.MaxEntries}} {
		if cnt.v == nil {
			continue
		}
		if *cnt.v < 100 {
			return fmt.Errorf("%s: %d is too small; use at least 100", cnt.key, *cnt.v)
		}
		*cnt.dst = *cnt.v
		set(cnt.key)
	}
	return nil
}

// applyE2B applies [e2b].
func (c *Config) applyE2B(f *file, set func(key string)) error {
	if v := f.E2B.Listen; v != nil {
		if *v != "" {
			if _, port, err := net.SplitHostPort(*v); err != nil || port == "" {
				return fmt.Errorf("e2b.listen: %q is not host:port such as \"127.0.0.1:3000\"", *v)
			}
		}
		c.E2B.Listen = *v
		set("e2b.listen")
	}
	if v := f.E2B.Domain; v != nil {
		if !domainName.MatchString(*v) {
			return fmt.Errorf("e2b.domain: %q is not a DNS name such as \"localhost\" or \"sandbox.example.com\"", *v)
		}
		c.E2B.Domain = strings.ToLower(*v)
		set("e2b.domain")
	}
	if v := f.E2B.BaseImage; v != nil {
		c.E2B.BaseImage = *v
		set("e2b.base_image")
	}
	return nil
}

var domainName = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

var bridgeName = regexp.MustCompile(`^[a-z0-9_.-]{1,15}$`)

func parseDuration(v any) (time.Duration, error) {
	switch v := v.(type) {
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration such as \"30m\" or \"1h30m\"", v)
		}
		if d < 0 {
			return 0, fmt.Errorf("%s is negative", d)
		}
		return d, nil
	case int64:
		if v == 0 {
			return 0, nil
		}
		return 0, fmt.Errorf("%d has no unit; write a string such as \"%dm\" or \"%ds\"", v, v, v)
	default:
		return 0, fmt.Errorf("%v is not a duration string such as \"30m\"", v)
	}
}

func parseSize(v any) (int64, error) {
	switch v := v.(type) {
	case string:
		return units.ParseSize(v)
	case int64:
		if v < 0 {
			return 0, fmt.Errorf("%d is negative", v)
		}
		return v, nil
	default:
		return 0, fmt.Errorf("%v is not a size such as \"20G\"", v)
	}
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// list shows a list value as TOML writes it.
func list(v []string) string {
	if len(v) == 0 {
		return "[]"
	}
	return `["` + strings.Join(v, `", "`) + `"]`
}

// File is the path the configuration was read from ("" for Parse).
func (c Config) File() string { return c.file }

// Value is one effective value with its source.
type Value struct {
	Key, Value, Source string
}

// Values lists every key's effective value and source, in Keys order.
func (c Config) Values() []Value {
	dur := func(d time.Duration) string {
		if d == 0 {
			return "0 (off)"
		}
		return d.String()
	}
	vals := map[string]string{
		"log_level":                c.LogLevel,
		"log_max_size":             units.FormatSize(c.LogMaxSize),
		"auto_stop_stale_after":    dur(c.AutoStopStaleAfter),
		"auto_idle_action":         c.AutoIdleAction,
		"warm_create":              strconv.FormatBool(c.WarmCreate),
		"stats_poll_interval":      c.StatsPollInterval.String(),
		"default_image_name":       c.DefaultImageName,
		"update_url":               c.UpdateURL,
		"default_kernel":           c.DefaultKernel,
		"vmm":                      c.VMM,
		"firecracker_bin":          c.FirecrackerBin,
		"firecracker_jailer":       c.FirecrackerJailer,
		"jailer_uid":               strconv.Itoa(c.JailerUID),
		"jailer_gid":               strconv.Itoa(c.JailerGID),
		"vm_defaults.vcpu":         strconv.Itoa(c.VMDefaults.VCPU),
		"vm_defaults.memory_mib":   strconv.Itoa(c.VMDefaults.MemoryMiB),
		"vm_defaults.disk_size":    units.FormatSize(c.VMDefaults.DiskSize),
		"vm_defaults.init":         c.VMDefaults.Init,
		"vm_defaults.share":        strconv.FormatBool(c.VMDefaults.Share),
		"network.mode":             c.Network.Mode,
		"network.bridge":           c.Network.Bridge,
		"network.cidr":             c.Network.CIDR.String(),
		"network.nat":              strconv.FormatBool(c.Network.NAT),
		"network.nat_deny":         list(prefixStrings(c.Network.NATDeny)),
		"network.allow":            list(c.Network.Allow),
		"network.helper":           c.Network.Helper,
		"images.max_unpacked_size": units.FormatSize(c.Images.MaxUnpackedSize),
		"images.max_entries":       strconv.Itoa(c.Images.MaxEntries),
		"workspace.max_bytes":      units.FormatSize(c.Workspace.MaxBytes),
		"workspace.max_entries":    strconv.Itoa(c.Workspace.MaxEntries),
		"e2b.listen":               c.E2B.Listen,
		"e2b.domain":               c.E2B.Domain,
		"e2b.base_image":           c.E2B.BaseImage,
	}
	out := make([]Value, 0, len(vals))
	for _, k := range Keys() {
		out = append(out, Value{Key: k, Value: vals[k], Source: c.sources[k]})
	}
	return out
}
