// Package firecracker drives Firecracker through its API socket: machine
// config, boot source, drives, network interfaces, vsock, then
// InstanceStart; SendCtrlAltDel asks the guest to stop. Request bodies
// follow src/firecracker/swagger/firecracker.yaml of the Firecracker
// repository (the tests check them against its schema).
package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// MachineConfig is PUT /machine-config (MachineConfiguration).
type MachineConfig struct {
	VCPUCount  int  `json:"vcpu_count"`
	MemSizeMiB int  `json:"mem_size_mib"`
	SMT        bool `json:"smt,omitempty"`
}

// BootSource is PUT /boot-source.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// Drive is PUT /drives/{drive_id}. The guest reads drive_id as the
// device's serial (VIRTIO_BLK_T_GET_ID).
type Drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
	// CacheType is Unsafe (flushes ignored) or Writeback (flushes
	// honoured); Firecracker's default is Unsafe.
	CacheType string `json:"cache_type,omitempty"`
}

// NetworkInterface is PUT /network-interfaces/{iface_id}.
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
}

// Vsock is PUT /vsock.
type Vsock struct {
	GuestCID int    `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// Action is PUT /actions (InstanceActionInfo).
type Action struct {
	ActionType string `json:"action_type"`
}

// Actions.
const (
	ActionInstanceStart  = "InstanceStart"
	ActionSendCtrlAltDel = "SendCtrlAltDel"
)

// SnapshotCreate is PUT /snapshot/create (SnapshotCreateParams); the
// VM must be paused.
type SnapshotCreate struct {
	SnapshotType string `json:"snapshot_type,omitempty"` // Full or Diff
	SnapshotPath string `json:"snapshot_path"`           // the device state
	MemFilePath  string `json:"mem_file_path"`           // the guest's memory
}

// MemoryBackend is where a loaded snapshot's memory comes from.
type MemoryBackend struct {
	BackendType string `json:"backend_type"` // File or Uffd
	BackendPath string `json:"backend_path"`
}

// NetworkOverride puts a restored interface on another tap.
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride puts a restored vsock device on another socket.
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// SnapshotLoad is PUT /snapshot/load (SnapshotLoadParams), to a
// Firecracker given nothing else.
type SnapshotLoad struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       *MemoryBackend    `json:"mem_backend,omitempty"`
	ResumeVM         bool              `json:"resume_vm,omitempty"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
}

// VMState is PATCH /vm (Vm): Paused or Resumed.
type VMState struct {
	State string `json:"state"`
}

// VM states.
const (
	StatePaused  = "Paused"
	StateResumed = "Resumed"
)

// DrivePatch is PATCH /drives/{drive_id} (PartialDrive): another
// backing file for a drive, after boot or a snapshot's load.
type DrivePatch struct {
	DriveID    string `json:"drive_id"`
	PathOnHost string `json:"path_on_host,omitempty"`
}

// Client calls one Firecracker's API socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client of the API socket at path.
func NewClient(path string) *Client {
	return &Client{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

func (c *Client) put(ctx context.Context, path string, body any) error {
	return c.send(ctx, http.MethodPut, path, body)
}

func (c *Client) send(ctx context.Context, method, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://firecracker"+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var fault struct {
			FaultMessage string `json:"fault_message"`
		}
		if json.Unmarshal(msg, &fault) == nil && fault.FaultMessage != "" {
			return fmt.Errorf("firecracker %s %s: %s: %s", method, path, resp.Status, fault.FaultMessage)
		}
		return fmt.Errorf("firecracker %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// PutMachineConfig sets vCPUs and memory.
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfig) error {
	return c.put(ctx, "/machine-config", m)
}

// PutBootSource sets the kernel, its arguments and initrd.
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.put(ctx, "/boot-source", b)
}

// PutDrive adds a block device.
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	return c.put(ctx, "/drives/"+url.PathEscape(d.DriveID), d)
}

// PutNetworkInterface adds a network device on a host tap.
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	return c.put(ctx, "/network-interfaces/"+url.PathEscape(n.IfaceID), n)
}

// PutVsock adds the vsock device, proxied through a unix socket.
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	return c.put(ctx, "/vsock", v)
}

// Act performs an action: InstanceStart, SendCtrlAltDel.
func (c *Client) Act(ctx context.Context, action string) error {
	return c.put(ctx, "/actions", Action{ActionType: action})
}

// CreateSnapshot saves a paused VM.
func (c *Client) CreateSnapshot(ctx context.Context, p SnapshotCreate) error {
	return c.put(ctx, "/snapshot/create", p)
}

// LoadSnapshot loads a saved VM into a Firecracker given nothing else.
func (c *Client) LoadSnapshot(ctx context.Context, p SnapshotLoad) error {
	return c.put(ctx, "/snapshot/load", p)
}

// SetState pauses or resumes the VM.
func (c *Client) SetState(ctx context.Context, state string) error {
	return c.send(ctx, http.MethodPatch, "/vm", VMState{State: state})
}

// PatchDrive points a drive at another backing file.
func (c *Client) PatchDrive(ctx context.Context, p DrivePatch) error {
	return c.send(ctx, http.MethodPatch, "/drives/"+url.PathEscape(p.DriveID), p)
}
