package api

// WorkspaceSpec says which host tree becomes a VM's workspace, and how.
type WorkspaceSpec struct {
	Path string `json:"path"` // absolute, on the host
	// IncludeUntracked adds untracked files that git does not ignore;
	// by default only tracked files go (untracked ones can hold secrets).
	IncludeUntracked bool `json:"include_untracked,omitempty"`
	ReadOnly         bool `json:"readonly,omitempty"`
}

// WorkspacePrepareParams are the params of MethodVMWorkspacePrepare.
type WorkspacePrepareParams struct {
	Name string `json:"name"`
	WorkspaceSpec
	// DryRun lists the files that would go, and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
}

// WorkspaceProgress is an event of a workspace transfer.
type WorkspaceProgress struct {
	Phase string `json:"phase"`
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
	Unit  string `json:"unit"` // files or bytes
}

// WorkspacePrepareResult answers MethodVMWorkspacePrepare.
type WorkspacePrepareResult struct {
	Name  string   `json:"name"`
	Dir   string   `json:"dir"`            // in the guest
	Base  string   `json:"base,omitempty"` // the commit it was made from
	Files int      `json:"files"`          // of the working tree (plus .git)
	Bytes int64    `json:"bytes"`
	List  []string `json:"list,omitempty"` // with dry_run: what would go
}

// WorkspaceRefParams name a VM's workspace and, for pull and push, the
// host directory (default: the one it was made from).
type WorkspaceRefParams struct {
	Name  string `json:"name"`
	Dir   string `json:"dir,omitempty"`
	Force bool   `json:"force,omitempty"`
}

// WorkspaceChanges are one side's changes since the last sync.
type WorkspaceChanges struct {
	Added    []string `json:"added"`
	Modified []string `json:"modified"`
	Deleted  []string `json:"deleted"`
}

// WorkspaceStatus answers MethodVMWorkspaceStatus.
type WorkspaceStatus struct {
	Name      string           `json:"name"`
	HostDir   string           `json:"host_dir"`
	GuestDir  string           `json:"guest_dir"`
	Base      string           `json:"base,omitempty"`
	Host      WorkspaceChanges `json:"host"`
	Guest     WorkspaceChanges `json:"guest"`
	Conflicts []string         `json:"conflicts"` // changed on both sides, differently
}

// WorkspaceSyncResult answers pull and push: what changed on the
// receiving side.
type WorkspaceSyncResult struct {
	Name    string           `json:"name"`
	Dir     string           `json:"dir"`
	Changes WorkspaceChanges `json:"changes"`
	Bytes   int64            `json:"bytes"`
	// Overwritten lists what --force replaced or removed although the
	// receiving side had changed it too.
	Overwritten []string `json:"overwritten,omitempty"`
}

// WorkspaceExportParams are the params of MethodVMWorkspaceExport.
type WorkspaceExportParams struct {
	Name       string `json:"name"`
	BaseCommit string `json:"base_commit,omitempty"` // default: the workspace's base
}

// WorkspaceExportResult answers MethodVMWorkspaceExport.
type WorkspaceExportResult struct {
	Base  string `json:"base"`
	Patch string `json:"patch"` // git diff --binary, for git apply
	Files int    `json:"files"` // changed files
	// SHA256 is the patch's: what MethodVMWorkspaceApply asks back.
	SHA256 string `json:"sha256"`
}

// WorkspaceApplyParams are the params of MethodVMWorkspaceApply: a patch
// from MethodVMWorkspaceExport and its sha256, as reviewed.
type WorkspaceApplyParams struct {
	Name   string `json:"name"`
	Patch  string `json:"patch"`
	SHA256 string `json:"sha256"`
}

// WorkspaceApplyResult answers MethodVMWorkspaceApply.
type WorkspaceApplyResult struct {
	Name  string   `json:"name"`
	Dir   string   `json:"dir"`   // the host tree written
	Files []string `json:"files"` // the paths the patch touched
}
