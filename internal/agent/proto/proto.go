// Package proto is the protocol between banger and its guest agent, over
// one byte stream (a virtio-serial port, or a vsock connection): frames
// multiplexed into streams, so that several calls, and an exec's stdin,
// stdout and stderr, share the link.
//
//	frame  = length:uint32be  kind:uint8  stream:uint32be  payload
//
// length counts kind, stream and payload, and is at most MaxFrame. A call
// opens a stream with a Request frame (JSON {method, params}) and ends with
// a Response frame (JSON {result} or {error}); in between, Data frames
// carry bytes (payload: fd:uint8 then the bytes), Close frames end one
// direction of a file descriptor (payload: fd:uint8) and Window frames
// resize an exec's terminal (payload: rows:uint16be cols:uint16be).
//
// Data and Window frames are flow-controlled per stream and direction:
// each side may send a stream's peer at most Window units (a frame's
// payload plus FrameCost) that the peer has not yet given back with a
// Credit frame (payload: units:uint32be; CreditReset: the peer is done
// with the stream, send without counting). One stream whose reader
// stalls therefore holds at most a window of memory and never blocks
// the link's other streams.
package proto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Names the host and the guest agree on.
const (
	PortName   = "banger.agent" // the agent's virtio-serial port
	RootSerial = "banger-root"  // virtio-blk serial of the image's rootfs
	WorkSerial = "banger-work"  // virtio-blk serial of the VM's writable disk
	// ModulesSerial is the kernel bundle's whole module tree, read-only,
	// mounted at /lib/modules/<release>: modprobe in the guest finds
	// what the initramfs did not carry.
	ModulesSerial = "banger-modules"
	VsockPort     = 1024 // the agent's vsock port
	SSHPort       = 22   // the agent's SSH server on the guest network
)

// MaxFrame bounds a frame: large enough for a 256 KiB data chunk with its
// header, small enough that a broken peer cannot make us allocate much.
const MaxFrame = 256<<10 + 64

// Kinds of frames.
const (
	KindRequest  byte = 1
	KindResponse byte = 2
	KindData     byte = 3
	KindClose    byte = 4
	KindWindow   byte = 5
	// KindHello is the agent's first frame on a link (stream 0; its
	// payload the agent's protocol, two bytes big-endian, none from a
	// protocol 1 agent): a host that connected before the guest was up
	// learns the moment it is, instead of retrying calls the guest never
	// saw.
	KindHello byte = 6
	// KindCredit gives a stream's peer back units of its window.
	KindCredit byte = 7
)

// The agent protocol. A VM keeps the agent it booted with until it
// restarts, so a daemon updated under it talks to older agents: every
// protocol from MinProtocol on. 1 is banger 0.1's (a hello without
// payload, no protocol in ping); 2 says its protocol in both; 3 takes a
// new identity after a restore (MethodIdentity).
const (
	Protocol         uint16 = 3
	MinProtocol      uint16 = 1
	IdentityProtocol uint16 = 3
)

// ErrOldAgent: the agent's protocol is older than the host still speaks.
var ErrOldAgent = errors.New("agent too old")

// Hello is the agent's hello frame.
func Hello() Frame {
	return Frame{Kind: KindHello, Payload: binary.BigEndian.AppendUint16(nil, Protocol)}
}

// HelloProtocol is the protocol a hello frame says.
func HelloProtocol(f Frame) uint16 {
	if len(f.Payload) == 2 {
		return binary.BigEndian.Uint16(f.Payload)
	}
	return 1
}

// PingProtocol is the protocol a ping result says.
func PingProtocol(r PingResult) uint16 {
	if r.Protocol == 0 {
		return 1
	}
	return r.Protocol
}

// CheckProtocol refuses an agent older than min.
func CheckProtocol(v, min uint16) error {
	if v < min {
		return fmt.Errorf("%w: it speaks protocol %d, and this daemon needs %d or newer", ErrOldAgent, v, min)
	}
	return nil
}

// Flow control (see the package comment).
const (
	Window      = 2 << 20
	FrameCost   = 64 // units a Data or Window frame costs beyond its payload
	CreditReset = 1<<32 - 1
)

// Charged says whether frames of kind spend flow-control credit.
func Charged(kind byte) bool { return kind == KindData || kind == KindWindow }

// CreditPayload encodes a Credit frame's payload.
func CreditPayload(units uint32) []byte { return binary.BigEndian.AppendUint32(nil, units) }

// CreditUnits decodes a Credit frame's payload (checked by ReadFrame).
func CreditUnits(p []byte) uint32 { return binary.BigEndian.Uint32(p) }

// File descriptors of Data and Close frames.
const (
	Stdin  byte = 0
	Stdout byte = 1
	Stderr byte = 2
)

// ErrFrame means the peer sent a frame that breaks the protocol.
var ErrFrame = errors.New("bad agent frame")

// Frame is one decoded frame.
type Frame struct {
	Kind    byte
	Stream  uint32
	Payload []byte
}

// ReadFrame reads one frame.
func ReadFrame(r io.Reader) (Frame, error) {
	var hdr [9]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 5 || n > MaxFrame {
		return Frame{}, fmt.Errorf("%w: length %d", ErrFrame, n)
	}
	if _, err := io.ReadFull(r, hdr[4:9]); err != nil {
		return Frame{}, unexpected(err)
	}
	f := Frame{Kind: hdr[4], Stream: binary.BigEndian.Uint32(hdr[5:9]), Payload: make([]byte, n-5)}
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, unexpected(err)
	}
	switch f.Kind {
	case KindRequest, KindResponse:
	case KindData, KindClose:
		if len(f.Payload) < 1 || f.Payload[0] > Stderr {
			return Frame{}, fmt.Errorf("%w: data frame without a valid fd", ErrFrame)
		}
		if f.Kind == KindClose && len(f.Payload) != 1 {
			return Frame{}, fmt.Errorf("%w: close frame with data", ErrFrame)
		}
	case KindHello:
		if len(f.Payload) != 0 && len(f.Payload) != 2 {
			return Frame{}, fmt.Errorf("%w: %d-byte hello frame", ErrFrame, len(f.Payload))
		}
	case KindWindow, KindCredit:
		if len(f.Payload) != 4 {
			return Frame{}, fmt.Errorf("%w: %d-byte payload in a frame of kind %d", ErrFrame, len(f.Payload), f.Kind)
		}
	default:
		return Frame{}, fmt.Errorf("%w: kind %d", ErrFrame, f.Kind)
	}
	return f, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// AppendFrame encodes a frame.
func AppendFrame(b []byte, f Frame) ([]byte, error) {
	n := 5 + len(f.Payload)
	if n > MaxFrame {
		return b, fmt.Errorf("%w: %d bytes is over the limit", ErrFrame, n)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = append(b, f.Kind)
	b = binary.BigEndian.AppendUint32(b, f.Stream)
	return append(b, f.Payload...), nil
}

// Request opens a call.
type Request struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

// Response ends a call.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Methods.
const (
	MethodPing     = "ping"
	MethodExec     = "exec"
	MethodShutdown = "shutdown"
	MethodInfo     = "info"
	// MethodReadFile streams a guest file to the caller as Data (stdout)
	// frames; MethodWriteFile takes it from the caller's Data (stdin)
	// frames, ended by a Close, and replaces the file atomically.
	MethodReadFile  = "read_file"
	MethodWriteFile = "write_file"
	// MethodSSH turns the stream into a byte pipe to the agent's SSH
	// server: Data (stdin) frames in, Data (stdout) frames out, a Close
	// each way to hang up. The host's ssh reaches a guest through it
	// without any network.
	MethodSSH = "ssh"
	// MethodStats samples the guest's counters (StatsResult).
	MethodStats = "stats"
	// MethodPorts lists the guest's listening sockets (PortsResult).
	MethodPorts = "ports"
	// MethodDial connects to a TCP address in the guest (DialParams) and
	// turns the stream into a byte pipe to it, as MethodSSH does.
	MethodDial = "dial"
	// MethodPutTree extracts the caller's tar stream (Data frames on
	// stdin, ended by a Close) under a directory, all or nothing: entries
	// go to a staging directory first, are checked against the expected
	// hashes, and only then renamed into place.
	MethodPutTree = "put_tree"
	// MethodGetTree streams a tar of files under a directory (stdout).
	MethodGetTree = "get_tree"
	// MethodManifest lists a directory tree with content hashes.
	MethodManifest = "manifest"
	// MethodFS does one file-system operation in the guest (FSParams,
	// FSResult): stat, list, mkdir, move, remove, glob, search.
	MethodFS = "fs"
	// MethodWatch watches a directory (WatchParams) until the caller
	// resets the stream: each change comes as a WatchEvent JSON line on
	// stdout.
	MethodWatch = "watch"
	// MethodIdentity gives a guest restored from a saved state (a
	// template, a fork, a checkpoint) its VM's identity (IdentityParams),
	// before the host hands the VM to anyone.
	MethodIdentity = "identity"
	// MethodSignal sends a signal to the process group of a running exec
	// the host named (SignalParams; ExecParams.Handle). An agent before
	// it answers "unknown method".
	MethodSignal = "signal"
	// MethodAttach joins a kept exec (AttachParams): what it wrote while
	// no one listened comes first, then its output as it comes, as an
	// exec's; the caller's stdin and Window frames go to it; the answer
	// is its ExecResult. A later attach takes it over.
	MethodAttach = "attach"
)

// IdentityParams are what a restored guest takes on: its VM's boot
// parameters, as a cold boot would have had them on its command line,
// and what must never be shared by two VMs restored from one state.
type IdentityParams struct {
	// Boot is the VM's banger.* arguments (BootParams.Args, space
	// separated): hostname, SSH keys, MAC and addresses.
	Boot string `json:"boot"`
	// UnixNano is the host's clock: a restored guest's is the save's.
	UnixNano int64 `json:"unix_nano"`
	// Entropy seeds the guest kernel's random pool, which is credited
	// and reseeded: two clones must not draw the same numbers.
	Entropy []byte `json:"entropy"`
	// MachineID is the VM's /etc/machine-id (32 hex digits).
	MachineID string `json:"machine_id"`
	// NewHostKey makes the agent generate a fresh SSH host key.
	NewHostKey bool `json:"new_host_key,omitempty"`
}

// IdentityResult answers identity: the SSH host key the guest now has
// (authorized_keys format), as info would say it.
type IdentityResult struct {
	SSHHostKey string `json:"ssh_host_key"`
}

// TreeEntry is one file of a tree, relative to its root.
type TreeEntry struct {
	Path   string `json:"path"` // slash-separated, relative
	Type   string `json:"type"` // f (regular), l (symlink), d (directory)
	Mode   uint32 `json:"mode"` // permission bits
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"` // of a regular file's content
	Link   string `json:"link,omitempty"`   // a symlink's target
}

// PutTreeParams say where and how a tree lands. Expected hashes and
// paths to delete travel inside the tar stream (see PAXSHA256 and
// PAXDelete), so a tree of any size fits one request.
type PutTreeParams struct {
	Dir string `json:"dir"`
	UID int    `json:"uid"` // owner of what is written
	GID int    `json:"gid"`
	// ReadOnly bind-mounts Dir read-only afterwards, and at every boot.
	ReadOnly bool `json:"readonly,omitempty"`
	// Entries is how many file, directory and symlink entries the caller
	// sends: a stream cut at an entry boundary is refused too.
	Entries int `json:"entries"`
}

// PAX records banger adds to a tree's tar stream, in global headers:
// expected sha256 sums as NUL-separated "path, sum" pairs (closing the
// stream; any mismatch or missing file fails the whole put), and
// NUL-separated paths removed once the new entries are in place. A
// file's own PAXSHA256 record is checked too.
const (
	PAXSHA256 = "BANGER.sha256"
	PAXDelete = "BANGER.delete"
)

// GetTreeParams name a directory; the paths to put in the tar come on
// stdin, NUL-separated, ended by a Close.
type GetTreeParams struct {
	Dir string `json:"dir"`
}

// ManifestParams name a tree to list; Exclude drops top-level names.
type ManifestParams struct {
	Dir     string   `json:"dir"`
	Exclude []string `json:"exclude,omitempty"`
}

// ManifestResult ends manifest, whose entries come as stdout, one
// TreeEntry JSON per line; a missing Dir is an empty tree.
type ManifestResult struct {
	Count int `json:"count"`
}

// TreeResult ends a put or get.
type TreeResult struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

// Winsize is a terminal's size.
type Winsize struct{ Rows, Cols uint16 }

// WindowPayload encodes a terminal size for a Window frame.
func WindowPayload(rows, cols uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, rows), cols)
}

// WindowSize decodes a Window frame's payload (checked by ReadFrame).
func WindowSize(p []byte) (rows, cols uint16) {
	return binary.BigEndian.Uint16(p[:2]), binary.BigEndian.Uint16(p[2:4])
}

// FileParams name a guest file.
type FileParams struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode,omitempty"` // write_file: permissions (default 0644)
	// Parents makes write_file create missing parent directories (0755).
	Parents bool `json:"parents,omitempty"`
	// Owner, a guest user's name, owns what write_file makes (the file
	// and the parents it made); empty: root.
	Owner string `json:"owner,omitempty"`
	// Offset and Limit bound read_file to Limit bytes (0: to the end)
	// from Offset.
	Offset int64 `json:"offset,omitempty"`
	Limit  int64 `json:"limit,omitempty"`
}

// FileResult ends a file transfer.
type FileResult struct {
	Size int64 `json:"size"`
	// Total is read_file's file size, whatever part of it was sent.
	Total int64 `json:"total,omitempty"`
}

// File-system operations of MethodFS.
const (
	FSStat   = "stat"   // Path: one entry (a symlink itself, not its target)
	FSList   = "list"   // Path's entries, Depth levels down (1: its own), at most Max
	FSMkdir  = "mkdir"  // Path and its missing parents (0755)
	FSMove   = "move"   // Path to To (a rename; across file systems a copy)
	FSRemove = "remove" // Path; a directory with entries only with Recursive
	FSGlob   = "glob"   // the paths matching Pattern (absolute; "**" any depth), at most Max
	FSSearch = "search" // lines matching the regular expression Pattern in files under Path, at most Max
)

// FSParams are the params of MethodFS.
type FSParams struct {
	Op        string `json:"op"`
	Path      string `json:"path"`
	To        string `json:"to,omitempty"`
	Depth     int    `json:"depth,omitempty"`
	Max       int    `json:"max,omitempty"`
	Recursive bool   `json:"recursive,omitempty"`
	Pattern   string `json:"pattern,omitempty"`
	// Include limits a search to files whose name matches it ("*.go").
	Include string `json:"include,omitempty"`
	// Owner, a guest user's name, owns the directories mkdir makes;
	// empty: root.
	Owner string `json:"owner,omitempty"`
}

// FSEntry is a file as stat and list see it.
type FSEntry struct {
	Path    string `json:"path"` // absolute
	Type    string `json:"type"` // f (regular), d (directory), l (symlink), o (other)
	Mode    uint32 `json:"mode"` // permission bits
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime"` // Unix seconds
	Link    string `json:"link,omitempty"`
	// Owner and Group name the entry's uid and gid by the guest's
	// /etc/passwd and /etc/group (a number when it names none).
	Owner string `json:"owner,omitempty"`
	Group string `json:"group,omitempty"`
}

// FSMatch is one line a search found.
type FSMatch struct {
	Path string `json:"path"`
	Line int    `json:"line"`
	Text string `json:"text"`
}

// FSResult answers MethodFS.
type FSResult struct {
	Entries []FSEntry `json:"entries,omitempty"`
	Matches []FSMatch `json:"matches,omitempty"`
	// Truncated: Max cut the answer.
	Truncated bool `json:"truncated,omitempty"`
}

// WatchParams name a directory to watch; Recursive watches the
// directories under it too (and those made later).
type WatchParams struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
}

// Watch event operations, as fsnotify names them (E2B's envd's), and
// WatchStart: the first line, once the watch is in place.
const (
	WatchStart  = "start"
	WatchCreate = "create" // made, or moved in
	WatchWrite  = "write"
	WatchRemove = "remove"
	WatchRename = "rename" // moved away
	WatchChmod  = "chmod"
)

// WatchEvent is one change under a watched directory.
type WatchEvent struct {
	Name string `json:"name"` // relative to the watched directory
	Op   string `json:"op"`
}

// PingResult answers ping.
type PingResult struct {
	Uptime  float64 `json:"uptime"`            // seconds since the guest booted
	Version string  `json:"version,omitempty"` // the agent's banger version
	// Protocol is the agent's protocol (0 from a protocol 1 agent), said
	// again here because a host that reconnects sees no new hello.
	Protocol uint16 `json:"protocol,omitempty"`
}

// StatsResult is one sample of the guest's counters. CPU times are in
// USER_HZ ticks since boot, summed over CPUs; the host turns two samples
// into a percentage.
type StatsResult struct {
	CPUBusy      uint64  `json:"cpu_busy"`  // user, nice, system, irq, softirq, steal
	CPUTotal     uint64  `json:"cpu_total"` // the same plus idle and iowait
	NumCPU       int     `json:"num_cpu"`
	MemTotal     uint64  `json:"mem_total"` // bytes
	MemAvailable uint64  `json:"mem_available"`
	Load1        float64 `json:"load1"`
	Load5        float64 `json:"load5"`
	Load15       float64 `json:"load15"`
	Procs        int     `json:"procs"`
	Uptime       float64 `json:"uptime"`
	NetRx        uint64  `json:"net_rx"` // bytes, every interface but lo
	NetTx        uint64  `json:"net_tx"`
	DiskUsed     uint64  `json:"disk_used"` // the work disk's file system
	DiskSize     uint64  `json:"disk_size"`
	// Sessions counts open SSH connections to the agent's server.
	Sessions int `json:"sessions"`
}

// Socket is a listening socket in the guest.
type Socket struct {
	Proto   string `json:"proto"` // tcp, tcp6, udp or udp6
	Addr    string `json:"addr"`  // the bound address; 0.0.0.0 or :: for any
	Port    int    `json:"port"`
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
}

// PortsResult answers ports.
type PortsResult struct {
	Sockets []Socket `json:"sockets"`
}

// DialParams name a TCP address in the guest, such as 127.0.0.1:8080.
type DialParams struct {
	Addr string `json:"addr"`
}

// ExecParams start a process in the guest.
type ExecParams struct {
	Args  []string `json:"args"`
	Env   []string `json:"env,omitempty"`
	Dir   string   `json:"dir,omitempty"`
	Stdin bool     `json:"stdin,omitempty"` // the caller sends stdin; else /dev/null
	// User runs the process as a user of the guest's /etc/passwd (name
	// or uid); empty means root.
	User string `json:"user,omitempty"`
	// Tty gives the process a terminal of Rows x Cols: its output comes
	// back as stdout only, and Window frames resize it.
	Tty  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Handle, when set, names the exec while it runs, for MethodSignal.
	Handle string `json:"handle,omitempty"`
	// Keep (with a Handle) makes the exec outlive its call: when the
	// caller goes (the link breaks with a suspend, a daemon restart) the
	// process runs on, its output kept (the newest KeptOutput bytes)
	// until a caller attaches again (MethodAttach), and its end kept for
	// that caller. An agent before it answers as for a plain exec.
	Keep bool `json:"keep,omitempty"`
}

// KeptOutput is the most output a kept exec holds while no caller
// listens (older bytes are dropped); MaxKept the most kept execs an
// agent holds, running or ended but not yet collected.
const (
	KeptOutput = 1 << 20
	MaxKept    = 256
)

// AttachParams name a kept exec (ExecParams.Keep) by its handle.
type AttachParams struct {
	Handle string `json:"handle"`
}

// SignalParams name a running exec by its handle and the signal (1 to
// 31) its process group is sent.
type SignalParams struct {
	Handle string `json:"handle"`
	Signal int    `json:"signal"`
}

// ExecResult ends an exec.
type ExecResult struct {
	ExitCode int    `json:"exit_code"`
	Signal   string `json:"signal,omitempty"`
}

// InfoResult describes the guest.
type InfoResult struct {
	Kernel   string   `json:"kernel"` // uname -r
	Hostname string   `json:"hostname"`
	Timings  []Timing `json:"timings"` // boot phases, guest clock
	// SSHHostKey is the agent SSH server's public host key in
	// authorized_keys form, for the host's known_hosts.
	SSHHostKey string `json:"ssh_host_key,omitempty"`
	// Addresses are the guest's configured IP addresses (CIDR form).
	Addresses []string `json:"addresses,omitempty"`
}

// Timing is one boot phase of the agent.
type Timing struct {
	Phase   string  `json:"phase"`
	Seconds float64 `json:"seconds"` // since the kernel started (uptime)
}
