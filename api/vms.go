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

// VM states.
const (
	VMCreating = "creating"
	VMRunning  = "running"
	VMStopped  = "stopped"
	VMFailed   = "failed" // it did not come up; `vm logs` says why
)

// Networks a VM can have.
const (
	NetworkBridge = "bridge" // a tap on the root daemon's bridge: NAME.vm, VM to VM
	NetworkUser   = "user"   // QEMU's user-mode stack: no host setup, no root
	NetworkNone   = "none"   // no NIC: reachable through the agent only
)

// VM is one VM's record.
type VM struct {
	Name      string     `json:"name"`
	ID        string     `json:"id"`
	State     string     `json:"state"`
	Reason    string     `json:"reason,omitempty"` // why it stopped or failed
	Image     string     `json:"image"`
	ImageID   string     `json:"image_id"`
	Kernel    string     `json:"kernel"`
	KernelID  string     `json:"kernel_id"`
	VCPU      int        `json:"vcpu"`
	MemoryMiB int        `json:"memory_mib"`
	DiskSize  int64      `json:"disk_size"` // bytes of the work disk
	DiskUsed  int64      `json:"disk_used"` // bytes it takes on the host
	Network   string     `json:"network"`
	NAT       bool       `json:"nat"` // outbound connections allowed
	AutoStop  string     `json:"auto_stop,omitempty"`
	IP        string     `json:"ip,omitempty"`
	VMM       string     `json:"vmm,omitempty"`
	PID       int        `json:"pid,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	StoppedAt *time.Time `json:"stopped_at,omitempty"`
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
	NAT     *bool `json:"nat,omitempty"`
	NoStart bool  `json:"no_start,omitempty"`
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
	NAT      *bool  `json:"nat,omitempty"`
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
}

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
}
