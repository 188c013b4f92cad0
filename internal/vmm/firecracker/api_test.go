package firecracker

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// schema is the part of Firecracker's API definition
// (src/firecracker/swagger/firecracker.yaml) banger uses: per request path,
// the definition's required and allowed properties.
var schema = map[string]struct{ required, allowed []string }{
	"PUT /machine-config":      {[]string{"mem_size_mib", "vcpu_count"}, []string{"cpu_template", "smt", "mem_size_mib", "track_dirty_pages", "vcpu_count", "huge_pages"}},
	"PUT /boot-source":         {[]string{"kernel_image_path"}, []string{"boot_args", "initrd_path", "kernel_image_path"}},
	"PUT /drives/":             {[]string{"drive_id", "is_root_device"}, []string{"drive_id", "partuuid", "is_root_device", "cache_type", "is_read_only", "path_on_host", "rate_limiter", "io_engine", "socket"}},
	"PUT /network-interfaces/": {[]string{"host_dev_name", "iface_id"}, []string{"guest_mac", "host_dev_name", "iface_id", "mtu", "rx_rate_limiter", "tx_rate_limiter"}},
	"PUT /vsock":               {[]string{"guest_cid", "uds_path"}, []string{"guest_cid", "uds_path", "vsock_id"}},
	"PUT /actions":             {[]string{"action_type"}, []string{"action_type"}},
	// Snapshots (SnapshotCreateParams, SnapshotLoadParams, Vm, PartialDrive).
	"PUT /snapshot/create": {[]string{"mem_file_path", "snapshot_path"}, []string{"mem_file_path", "snapshot_path", "snapshot_type"}},
	"PUT /snapshot/load": {[]string{"snapshot_path"}, []string{"enable_diff_snapshots", "track_dirty_pages", "mem_file_path", "mem_backend", "snapshot_path",
		"resume_vm", "network_overrides", "vsock_override", "clock_realtime", "huge_pages"}},
	"PATCH /vm":      {[]string{"state"}, []string{"state"}},
	"PATCH /drives/": {[]string{"drive_id"}, []string{"drive_id", "path_on_host", "rate_limiter"}},
}

// nested are the definitions of objects inside a body, by property.
var nested = map[string]struct{ required, allowed []string }{
	"mem_backend":       {[]string{"backend_type", "backend_path"}, []string{"backend_type", "backend_path"}},
	"network_overrides": {[]string{"iface_id", "host_dev_name"}, []string{"iface_id", "host_dev_name"}},
	"vsock_override":    {[]string{"uds_path"}, []string{"uds_path"}},
}

// enums are the values a property may take.
var enums = map[string][]string{
	"snapshot_type": {"Full", "Diff"},
	"state":         {"Paused", "Resumed"},
	"backend_type":  {"File", "Uffd"},
	"action_type":   {"FlushMetrics", "InstanceStart", "SendCtrlAltDel"},
}

// checkObject reports o's properties that def does not allow or lacks.
func checkObject(t *testing.T, where string, o map[string]any, def struct{ required, allowed []string }) {
	t.Helper()
	for _, req := range def.required {
		if _, ok := o[req]; !ok {
			t.Errorf("%s: required property %q missing from %v", where, req, o)
		}
	}
	for k, v := range o {
		if !slices.Contains(def.allowed, k) {
			t.Errorf("%s: property %q is not in the API definition", where, k)
		}
		if e, ok := enums[k]; ok && !slices.Contains(e, v.(string)) {
			t.Errorf("%s: %s = %v, not one of %v", where, k, v, e)
		}
		n, ok := nested[k]
		if !ok {
			continue
		}
		switch x := v.(type) {
		case map[string]any:
			checkObject(t, where+" "+k, x, n)
		case []any:
			for _, item := range x {
				checkObject(t, where+" "+k, item.(map[string]any), n)
			}
		}
	}
}

type recorded struct {
	method, path string
	body         map[string]any
}

// fakeAPI records requests on a unix socket, answering 204 as Firecracker
// does, or a fault for paths in fail.
func fakeAPI(t *testing.T, fail map[string]string) (*Client, *[]recorded) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []recorded
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			t.Errorf("%s %s: body is not a JSON object: %q", r.Method, r.URL.Path, b)
		}
		mu.Lock()
		got = append(got, recorded{r.Method, r.URL.Path, body})
		mu.Unlock()
		if msg, ok := fail[r.URL.Path]; ok {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"fault_message": msg})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return NewClient(sock), &got
}

func TestRequestsMatchTheDocumentedAPI(t *testing.T) {
	c, got := fakeAPI(t, nil)
	ctx := context.Background()
	steps := []error{
		c.PutMachineConfig(ctx, MachineConfig{VCPUCount: 2, MemSizeMiB: 1024}),
		c.PutBootSource(ctx, BootSource{KernelImagePath: "/k/vmlinux", BootArgs: "console=ttyS0", InitrdPath: "/k/initrd"}),
		c.PutDrive(ctx, Drive{DriveID: "banger-root", PathOnHost: "/i/rootfs.ext4", IsReadOnly: true}),
		c.PutDrive(ctx, Drive{DriveID: "banger-work", PathOnHost: "/v/work.ext4"}),
		c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: "bgtap0", GuestMAC: "06:00:0a:cb:00:02"}),
		c.PutVsock(ctx, Vsock{GuestCID: 3, UDSPath: "/v/vsock.sock"}),
		c.Act(ctx, ActionInstanceStart),
		c.Act(ctx, ActionSendCtrlAltDel),
		c.SetState(ctx, StatePaused),
		c.CreateSnapshot(ctx, SnapshotCreate{SnapshotType: "Full", SnapshotPath: "/v/s/vmstate", MemFilePath: "/v/s/memory"}),
		c.SetState(ctx, StateResumed),
		c.LoadSnapshot(ctx, SnapshotLoad{SnapshotPath: "/v/s/vmstate", MemBackend: &MemoryBackend{BackendType: "File", BackendPath: "/v/s/memory"},
			NetworkOverrides: []NetworkOverride{{IfaceID: "eth0", HostDevName: "bgtap1"}}, VsockOverride: &VsockOverride{UDSPath: "/w/vsock.sock"}}),
		c.PatchDrive(ctx, DrivePatch{DriveID: "banger-work", PathOnHost: "/w/work.ext4"}),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if len(*got) != len(steps) {
		t.Fatalf("%d requests for %d steps", len(*got), len(steps))
	}
	for _, r := range *got {
		key := r.path
		if i := strings.Index(key[1:], "/"); i >= 0 && !strings.HasPrefix(key, "/snapshot/") {
			key = key[:i+2]
		}
		def, ok := schema[r.method+" "+key]
		if !ok {
			t.Errorf("request to undocumented %s %s", r.method, r.path)
			continue
		}
		checkObject(t, r.method+" "+r.path, r.body, def)
		// The id in the path is the id in the body.
		if id, ok := r.body["drive_id"]; ok && r.path != "/drives/"+id.(string) {
			t.Errorf("%s: drive_id %v", r.path, id)
		}
		if id, ok := r.body["iface_id"]; ok && r.path != "/network-interfaces/"+id.(string) {
			t.Errorf("%s: iface_id %v", r.path, id)
		}
	}
	if a := (*got)[6].body["action_type"]; a != "InstanceStart" {
		t.Errorf("action = %v", a)
	}
}

func TestFaultMessagesComeThrough(t *testing.T) {
	c, _ := fakeAPI(t, map[string]string{"/boot-source": "Kernel image file not found"})
	err := c.PutBootSource(context.Background(), BootSource{KernelImagePath: "/nope"})
	if err == nil || !strings.Contains(err.Error(), "Kernel image file not found") || !strings.Contains(err.Error(), "/boot-source") {
		t.Fatalf("error = %v", err)
	}
}
