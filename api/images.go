package api

import "time"

// Image is an image banger can boot: a root file system built from an OCI
// image, shared read-only by every VM that uses it.
type Image struct {
	Name string `json:"name"`
	// ID is the config digest: two names with one ID share one rootfs.
	ID string `json:"id"`
	// Digest is the manifest digest ("" for a docker-archive import).
	Digest string `json:"digest,omitempty"`
	// RepoDigest is the index digest the name resolved to, if it was one.
	RepoDigest string    `json:"repo_digest,omitempty"`
	Platform   string    `json:"platform"`
	Layers     int       `json:"layers"`
	Size       int64     `json:"size"` // bytes of the rootfs on disk
	Source     string    `json:"source"`
	CreatedAt  time.Time `json:"created_at"`
	UsedBy     int       `json:"used_by"` // VMs using it
	Rootfs     string    `json:"rootfs"`
	// Init is where the image keeps systemd, which VMs created with
	// --init image (or auto) run as PID 1; "" when it has none.
	Init   string      `json:"init,omitempty"`
	Config ImageConfig `json:"config"`
}

// ResultName names the image in operation listings.
func (i Image) ResultName() string { return i.Name }

// ImageConfig is what the image says about running it.
type ImageConfig struct {
	Entrypoint []string   `json:"entrypoint,omitempty"`
	Cmd        []string   `json:"cmd,omitempty"`
	Env        []string   `json:"env,omitempty"`
	WorkingDir string     `json:"working_dir,omitempty"`
	User       string     `json:"user,omitempty"`
	Created    *time.Time `json:"created,omitempty"`
}

// ImagePullParams are the params of MethodImagePull.
type ImagePullParams struct {
	Ref      string `json:"ref"`
	Platform string `json:"platform,omitempty"` // os/arch[/variant]; default: the host's
	Insecure bool   `json:"insecure,omitempty"` // plain HTTP
}

// ImageImportParams are the params of MethodImageImport.
type ImageImportParams struct {
	Path     string `json:"path"` // a docker-archive tarball or an OCI image layout directory
	Name     string `json:"name,omitempty"`
	Platform string `json:"platform,omitempty"`
}

// ImageRefParams name one image: its name, or a prefix of its ID.
type ImageRefParams struct {
	Name string `json:"name"`
}

// ImageDeleteParams are the params of MethodImageDelete.
type ImageDeleteParams struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"` // delete even if stopped VMs use it
}

// ImageDeleteResult answers MethodImageDelete.
type ImageDeleteResult struct {
	Name string `json:"name"`
	ID   string `json:"id"`
	// RootfsRemoved is false when another name still uses the rootfs.
	RootfsRemoved bool  `json:"rootfs_removed"`
	BytesFreed    int64 `json:"bytes_freed"`
}

// ImageListResult answers MethodImageList.
type ImageListResult struct {
	Images []Image `json:"images"`
}

// ImageCachePruneParams are the params of MethodImageCachePrune.
type ImageCachePruneParams struct {
	DryRun bool `json:"dry_run,omitempty"`
}

// ImageCachePruneResult answers MethodImageCachePrune.
type ImageCachePruneResult struct {
	BytesFreed int64  `json:"bytes_freed"`
	BlobsFreed int    `json:"blobs_freed"`
	DryRun     bool   `json:"dry_run"`
	CacheDir   string `json:"cache_dir"`
}
