package api

import "time"

// Kernel is an imported kernel bundle: the kernel (as shipped, and as an
// uncompressed ELF) and its modules.
type Kernel struct {
	Name      string    `json:"name"`
	ID        string    `json:"id"` // sha256 of the bundle manifest
	Version   string    `json:"version"`
	Source    string    `json:"source"` // deb, debian, files
	Origin    string    `json:"origin"` // package, file or reference
	Size      int64     `json:"size"`
	Modules   int       `json:"modules"`
	CreatedAt time.Time `json:"created_at"`
	UsedBy    int       `json:"used_by"`
	Default   bool      `json:"default"` // what default_kernel = "auto" picks
	Dir       string    `json:"dir"`
}

// ResultName names the kernel in operation listings.
func (k Kernel) ResultName() string { return k.Name }

// KernelImportParams are the params of MethodKernelImport: exactly one of
// Deb, Debian or Kernel.
type KernelImportParams struct {
	Deb     string `json:"deb,omitempty"`     // a linux-image .deb file
	Debian  bool   `json:"debian,omitempty"`  // fetch the distribution's linux-image-amd64 with apt
	Kernel  string `json:"kernel,omitempty"`  // a bzImage or vmlinux file
	Modules string `json:"modules,omitempty"` // with Kernel: a /lib/modules/<version> directory
	Name    string `json:"name,omitempty"`    // default: the kernel version
}

// KernelRefParams name one kernel: its name, an ID prefix, or "default".
type KernelRefParams struct {
	Name string `json:"name"`
}

// KernelDeleteResult answers MethodKernelDelete.
type KernelDeleteResult struct {
	Name          string `json:"name"`
	ID            string `json:"id"`
	BundleRemoved bool   `json:"bundle_removed"`
	BytesFreed    int64  `json:"bytes_freed"`
}

// KernelListResult answers MethodKernelList.
type KernelListResult struct {
	Kernels []Kernel `json:"kernels"`
}

// KernelPullParams are the params of MethodKernelPull.
type KernelPullParams struct {
	Ref      string `json:"ref"`
	Name     string `json:"name,omitempty"`
	Insecure bool   `json:"insecure,omitempty"`
}

// KernelPushParams are the params of MethodKernelPush.
type KernelPushParams struct {
	Name     string `json:"name"`
	Ref      string `json:"ref"`
	Insecure bool   `json:"insecure,omitempty"`
}

// KernelPushResult answers MethodKernelPush.
type KernelPushResult struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
}
