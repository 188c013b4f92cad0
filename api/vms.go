package api

import "time"

// BootTestParams are the params of MethodVMBootTest.
type BootTestParams struct {
	Image  string `json:"image"`            // name or ID prefix
	Kernel string `json:"kernel,omitempty"` // default: the configured default kernel
}

// BootTestResult answers MethodVMBootTest.
type BootTestResult struct {
	VMM    string  `json:"vmm"`
	Accel  string  `json:"accel,omitempty"`
	Kernel string  `json:"kernel"`
	Image  string  `json:"image"`
	Uname  string  `json:"uname"`
	Phases []Phase `json:"phases"`
}

// Phase is one timed step of a boot.
type Phase struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	// Clock says whose clock measured it: "host" (wall time since the VMM
	// started) or "guest" (uptime).
	Clock string `json:"clock"`
}

// What auto-stop does to an idle VM (auto_idle_action, vm set
// --idle-action).
const (
	IdleStop    = "stop"
	IdleSuspend = "suspend"
)

// VM states.
const (
	VMCreating = "creating"
	VMRunning  = "running"
	VMStopped  = "stopped"
	VMFailed   = "failed" // it did not come up; `vm logs` says why
	// VMSuspended: its memory is saved in its directory and its VMM is
	// gone; resume (or exec, ssh, start) brings it back as it was.
	VMSuspended = "suspended"
)

// What a VM may reach beyond the host (VM.Egress).
const (
	EgressNone      = "none"       // no network
	EgressSandbox   = "sandbox"    // nothing beyond the host
	EgressNAT       = "nat"        // anywhere but link-local and network.nat_deny
	EgressAllowList = "allow-list" // only what its allow-list names
)

// What runs as a VM's PID 1 (VMCreateParams.Init, VM.Init).
const (
	InitAgent = "agent" // banger's agent alone
	InitImage = "image" // the image's systemd; the agent is its service
	InitAuto  = "auto"  // create: the image's when it has systemd, else the agent
)

// Networks a VM can have.
const (
	NetworkBridge = "bridge" // a tap on the root daemon's bridge: NAME.vm, VM to VM
	NetworkUser   = "user"   // QEMU's user-mode stack: no host setup, no root
	NetworkNone   = "none"   // no NIC: reachable through the agent only
)

// VM is one VM's record.
type VM struct {
	Name      string `json:"name"`
	ID        string `json:"id"`
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"` // why it stopped or failed
	Image     string `json:"image"`
	ImageID   string `json:"image_id"`
	Kernel    string `json:"kernel"`
	KernelID  string `json:"kernel_id"`
	VCPU      int    `json:"vcpu"`
	MemoryMiB int    `json:"memory_mib"`
	DiskSize  int64  `json:"disk_size"` // bytes of the work disk
	DiskUsed  int64  `json:"disk_used"` // bytes it takes on the host
	Network   string `json:"network"`
	NAT       bool   `json:"nat"` // outbound connections allowed
	// Egress says what it may reach beyond the host: EgressNone (no
	// NIC), EgressSandbox, EgressNAT or EgressAllowList (Allow).
	Egress   string   `json:"egress"`
	Allow    []string `json:"allow,omitempty"`    // its allow-list, canonical
	Isolate  bool     `json:"isolate,omitempty"`  // no traffic with the other VMs
	NoShare  bool     `json:"no_share,omitempty"` // shares no memory pages with other VMs
	AutoStop string   `json:"auto_stop,omitempty"`
	// IdleAction is what auto-stop does to it once idle: IdleStop or
	// IdleSuspend ("" the config's auto_idle_action).
	IdleAction string `json:"idle_action,omitempty"`
	// Init is what runs as its PID 1: InitAgent or InitImage.
	Init      string     `json:"init"`
	IP        string     `json:"ip,omitempty"`
	Workspace string     `json:"workspace,omitempty"` // its guest directory
	VMM       string     `json:"vmm,omitempty"`
	PID       int        `json:"pid,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	StoppedAt *time.Time `json:"stopped_at,omitempty"`
	// StateBytes is the disk its saved state takes while suspended.
	StateBytes int64 `json:"state_bytes,omitempty"`
	// Creator is who asked for it when not a person at the CLI: an MCP
	// server, "mcp:NAME". Its forks carry it too.
	Creator string `json:"creator,omitempty"`
}

// VMCreateParams are the params of MethodVMCreate; zero values take the
// configured defaults.
type VMCreateParams struct {
	Name      string `json:"name,omitempty"` // generated when empty
	Image     string `json:"image,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	VCPU      int    `json:"vcpu,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	DiskSize  int64  `json:"disk_size,omitempty"`
	Network   string `json:"network,omitempty"`
	// NAT lets the VM open connections out; nil takes network.nat.
	NAT *bool `json:"nat,omitempty"`
	// Allow lets it open connections out only to these (domains,
	// *.wildcards, addresses, CIDRs, each with optional :PORT[,PORT]);
	// bridge network only. Nil takes network.allow for a bridge VM
	// without NAT set.
	Allow []string `json:"allow,omitempty"`
	// Isolate keeps it from the other VMs on the bridge.
	Isolate bool `json:"isolate,omitempty"`
	NoStart bool `json:"no_start,omitempty"`
	// Cold boots the VM even where a template of its shape would start
	// it faster (a restore).
	Cold bool `json:"cold,omitempty"`
	// NoShare: the VM shares no memory pages with other VMs (a restore
	// maps a private copy of the saved memory); else it shares them
	// with the VMs of its creator restored from the same state, until
	// each writes them. Also set by vm_defaults.share = false.
	NoShare bool `json:"no_share,omitempty"`
	// Init is what runs as its PID 1: InitAgent, InitImage or InitAuto
	// ("" takes vm_defaults.init).
	Init string `json:"init,omitempty"`
	// Workspace places a host project in the VM once it is up.
	Workspace *WorkspaceSpec `json:"workspace,omitempty"`
	// Creator records who asks, when not a person: "mcp:NAME" (NAME of
	// lowercase letters, digits, '.', '_' and '-', at most 63).
	Creator string `json:"creator,omitempty"`
}

// ImageWarmParams are the params of MethodImageWarm: the shape of VM
// whose template to make, defaults as vm create's.
type ImageWarmParams struct {
	Image     string `json:"image"`
	Kernel    string `json:"kernel,omitempty"`
	VCPU      int    `json:"vcpu,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	DiskSize  int64  `json:"disk_size,omitempty"`
	Network   string `json:"network,omitempty"`
	NAT       *bool  `json:"nat,omitempty"`
}

// Template is a saved VM that creates of its shape start from.
type Template struct {
	ID         string    `json:"id"`
	Image      string    `json:"image"`
	ImageID    string    `json:"image_id"`
	Kernel     string    `json:"kernel"`
	VCPU       int       `json:"vcpu"`
	MemoryMiB  int       `json:"memory_mib"`
	DiskSize   int64     `json:"disk_size"`
	NIC        string    `json:"nic"` // none, tap, user or user+outbound
	StateBytes int64     `json:"state_bytes"`
	DiskUsed   int64     `json:"disk_used"`
	Created    time.Time `json:"created"`
	Took       float64   `json:"took_seconds,omitempty"` // what warm took (0: it was there)
}

// VMSetParams are the params of MethodVMSet: zero values change
// nothing.
type VMSetParams struct {
	Name      string `json:"name"`
	VCPU      int    `json:"vcpu,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	DiskSize  int64  `json:"disk_size,omitempty"` // grow only
	// AutoStop is an idle time ("30m"), "0" for never, "default" for
	// the config's.
	AutoStop string `json:"auto_stop,omitempty"`
	// IdleAction is IdleStop, IdleSuspend, or "default" for the
	// config's.
	IdleAction string `json:"idle_action,omitempty"`
	// NAT opens (true) or closes (false) the VM's way out, replacing
	// an allow-list; Allow replaces the allow-list (and implies NAT).
	// On a running bridge VM both take effect at once, its connections
	// included.
	NAT     *bool    `json:"nat,omitempty"`
	Allow   []string `json:"allow,omitempty"`
	Isolate *bool    `json:"isolate,omitempty"`
}

// VMKillParams are the params of MethodVMKill.
type VMKillParams struct {
	Name   string `json:"name"`
	Signal string `json:"signal,omitempty"` // to the VMM: KILL (default), TERM, INT, HUP, QUIT
}

// VMPruneResult answers MethodVMPrune.
type VMPruneResult struct {
	Deleted []string `json:"deleted"`
}

// VMRefParams name a VM.
type VMRefParams struct {
	Name string `json:"name"`
}

// VMStopParams are the params of MethodVMStop.
type VMStopParams struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"` // kill at once, no graceful power-off
	// Timeout bounds the graceful power-off before a hard stop (seconds;
	// 0: 30).
	Timeout int `json:"timeout,omitempty"`
}

// VMDeleteParams are the params of MethodVMDelete.
type VMDeleteParams struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"` // stop a running VM first
}

// VMListResult answers MethodVMList.
type VMListResult struct {
	VMs []VM `json:"vms"`
}

// VMExecParams are the params of MethodVMExec.
type VMExecParams struct {
	Name string   `json:"name"`
	Args []string `json:"args"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	User string   `json:"user,omitempty"`
	// Stdin is the command's whole input (at most MaxExecStdin bytes);
	// none: /dev/null.
	Stdin []byte `json:"stdin,omitempty"`
}

// MaxExecStdin bounds VMExecParams.Stdin: it travels in the request's
// one frame.
const MaxExecStdin = 1 << 20

// VMExecEvent is one chunk of a command's output.
type VMExecEvent struct {
	Stream string `json:"stream"` // stdout or stderr
	Data   []byte `json:"data"`
}

// VMExecResult ends MethodVMExec.
type VMExecResult struct {
	ExitCode int    `json:"exit_code"`
	Signal   string `json:"signal,omitempty"`
}

// VMLogsParams are the params of MethodVMLogs.
type VMLogsParams struct {
	Name string `json:"name"`
	Tail int    `json:"tail,omitempty"` // last lines; 0: all
	// Follow streams VMLogsResult events as the console grows, until
	// the caller hangs up or the VM is deleted.
	Follow bool `json:"follow,omitempty"`
}

// VMLogsResult answers MethodVMLogs: the serial console, which carries
// the kernel's and the agent's messages.
type VMLogsResult struct {
	Console string `json:"console"`
}

// ResultName names a created VM in operation listings.
func (v VM) ResultName() string { return v.Name }

// VMSSHInfo answers MethodVMSSH: what OpenSSH needs to reach the VM
// through `banger vm ssh-proxy`.
type VMSSHInfo struct {
	Name           string `json:"name"`
	User           string `json:"user"`
	Host           string `json:"host"` // NAME.vm, the known_hosts alias
	IdentityFile   string `json:"identity_file"`
	KnownHostsFile string `json:"known_hosts_file"`
	Dir            string `json:"dir,omitempty"` // the workspace: sessions start there
}

// VMStats answers MethodVMStats: the poller's latest sample of one VM.
// CPU percentages are of one CPU, as top shows them: a VM with two busy
// vCPUs is at 200.
type VMStats struct {
	Name           string          `json:"name"`
	Time           time.Time       `json:"time"` // when the sample was taken
	VCPU           int             `json:"vcpu"`
	CPUPercent     float64         `json:"cpu_percent"`      // the guest's own accounting
	HostCPUPercent float64         `json:"host_cpu_percent"` // the VMM process on the host
	MemTotal       uint64          `json:"mem_total"`        // bytes, as the guest sees them
	MemUsed        uint64          `json:"mem_used"`
	MemAvailable   uint64          `json:"mem_available"`
	HostRSS        uint64          `json:"host_rss"` // the VMM's resident memory
	DiskUsed       uint64          `json:"disk_used"`
	DiskSize       uint64          `json:"disk_size"`
	NetRx          uint64          `json:"net_rx"` // bytes since boot
	NetTx          uint64          `json:"net_tx"`
	NetRxRate      float64         `json:"net_rx_rate"` // bytes per second
	NetTxRate      float64         `json:"net_tx_rate"`
	Load1          float64         `json:"load1"`
	Load5          float64         `json:"load5"`
	Load15         float64         `json:"load15"`
	Procs          int             `json:"procs"`
	Uptime         float64         `json:"uptime"` // seconds
	Sessions       int             `json:"sessions"`
	History        []VMStatsSample `json:"history,omitempty"` // oldest first
}

// VMStatsSample is one point of a VM's recent history.
type VMStatsSample struct {
	Time       time.Time `json:"time"`
	CPUPercent float64   `json:"cpu_percent"`
	MemUsed    uint64    `json:"mem_used"`
	NetRxRate  float64   `json:"net_rx_rate"`
	NetTxRate  float64   `json:"net_tx_rate"`
}

// VMStatsList answers MethodVMStatsAll.
type VMStatsList struct {
	VMs []VMStats `json:"vms"`
}

// VMHealth answers MethodVMHealth and MethodVMPing.
type VMHealth struct {
	Name         string  `json:"name"`
	LatencyMS    float64 `json:"latency_ms"`
	AgentVersion string  `json:"agent_version,omitempty"`
	Uptime       float64 `json:"uptime"` // the guest's, seconds
}

// VMPortsParams name a VM for MethodVMPorts.
type VMPortsParams struct {
	Name    string `json:"name"`
	Forward bool   `json:"forward,omitempty"`
}

// VMPort is one listening port of a guest, the same port's IPv4, IPv6
// and wildcard sockets folded together.
type VMPort struct {
	Proto     string   `json:"proto"` // tcp or udp
	Port      int      `json:"port"`
	Addresses []string `json:"addresses"` // bound addresses; "*" for any
	Process   string   `json:"process,omitempty"`
	PID       int      `json:"pid,omitempty"`
	// Scheme is what a probe from the host found: http, https, or tcp
	// (something else, or nothing that answered); udp for UDP ports.
	Scheme string `json:"scheme"`
	// URL opens the port from the host: the VM's address on the bridge,
	// or the loopback forward; empty when neither reaches it.
	URL string `json:"url,omitempty"`
	// Forward is the host loopback address forwarding to the port.
	Forward string `json:"forward,omitempty"`
}

// VMPortsResult answers MethodVMPorts.
type VMPortsResult struct {
	Name  string   `json:"name"`
	Ports []VMPort `json:"ports"`
}

// TemplateListResult answers MethodImageTemplates.
type TemplateListResult struct {
	Templates []Template `json:"templates"`
}

// VMForkParams are the params of MethodVMFork.
type VMForkParams struct {
	Name  string `json:"name"`
	Count int    `json:"count,omitempty"` // default 1, at most 16
	// Prefix names the copies: PREFIX for one, PREFIX-1..N for more;
	// empty: NAME-fork-N at the first free numbers.
	Prefix string `json:"prefix,omitempty"`
	// Partial keeps the copies that started when others fail (each
	// failure in VMForkResult.Failed); without it a fork is all or none.
	Partial bool `json:"partial,omitempty"`
	// Checkpoint starts the copies from that checkpoint of the VM
	// (MethodVMSnapshotCreate), in whatever state the VM is, instead of
	// from the running VM as it is now.
	Checkpoint string `json:"checkpoint,omitempty"`
	// Stopped, with Checkpoint, makes the copies without starting them:
	// each holds the checkpoint under the same tag (and its disk as its
	// work disk), so it outlives the original; `vm snapshot restore` or
	// a fork of it starts it.
	Stopped bool `json:"stopped,omitempty"`
	// NoShare: the copies share no memory pages, with each other or
	// anyone (copies of a VM created with it never do).
	NoShare bool `json:"no_share,omitempty"`
}

// VMForkResult lists a fork's copies, running.
type VMForkResult struct {
	VMs []VM `json:"vms"`
	// Failed are the copies of a Partial fork that did not start, each
	// removed again.
	Failed []VMForkFailure `json:"failed,omitempty"`
}

// VMForkFailure is a copy of a fork that did not start, and why.
type VMForkFailure struct {
	Name  string `json:"name"`
	Error string `json:"error"`
}

// VMSnapshotParams name a VM's checkpoint (MethodVMSnapshot*); an empty
// Tag on create takes the time.
type VMSnapshotParams struct {
	Name string `json:"name"`
	Tag  string `json:"tag,omitempty"`
}

// Snapshot is a checkpoint of a VM: memory, devices and work disk.
type Snapshot struct {
	VM         string    `json:"vm"`
	Tag        string    `json:"tag"`
	Created    time.Time `json:"created"`
	StateBytes int64     `json:"state_bytes"` // its saved memory
	DiskUsed   int64     `json:"disk_used"`   // its copy of the work disk
	VCPU       int       `json:"vcpu"`
	MemoryMiB  int       `json:"memory_mib"`
}

// SnapshotListResult answers MethodVMSnapshotList.
type SnapshotListResult struct {
	Snapshots []Snapshot `json:"snapshots"`
}
