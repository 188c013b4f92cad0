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
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://firecracker"+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker PUT %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var fault struct {
			FaultMessage string `json:"fault_message"`
		}
		if json.Unmarshal(msg, &fault) == nil && fault.FaultMessage != "" {
			return fmt.Errorf("firecracker PUT %s: %s: %s", path, resp.Status, fault.FaultMessage)
		}
		return fmt.Errorf("firecracker PUT %s: %s: %s", path, resp.Status, bytes.TrimSpace(msg))
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
