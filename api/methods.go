package api

// ProtocolVersion is the version of the wire protocol. Every request carries
// it; the daemon refuses a request whose version differs with
// CodeVersionMismatch. Bump it on any incompatible change of a method's
// params, result or semantics.
const ProtocolVersion = 1

// Method names. The daemon's dispatch table is the single source of truth
// for which of them a daemon serves; these constants keep clients honest.
const (
	MethodPing             = "ping"
	MethodVersion          = "version"
	MethodShutdown         = "shutdown"
	MethodDaemonInfo       = "daemon.info"
	MethodConfigShow       = "config.show"
	MethodOperationsList   = "operations.list"
	MethodOperationsGet    = "operations.get"
	MethodOperationsCancel = "operations.cancel"
	// MethodOperationsWait streams an OperationSummary event on every change
	// and ends with the final summary as its result.
	MethodOperationsWait = "operations.wait"

	// MethodImagePull and MethodImageImport start an operation and answer
	// with its summary; operations.wait follows it.
	MethodImagePull       = "image.pull"
	MethodImageImport     = "image.import"
	MethodImageList       = "image.list"
	MethodImageShow       = "image.show"
	MethodImageDelete     = "image.delete"
	MethodImageCachePrune = "image.cache.prune"
	// MethodImageWarm makes the template VMs of a shape start from.
	MethodImageWarm      = "image.warm"
	MethodImageTemplates = "image.templates"

	// MethodKernelImport starts an operation, as image.pull does.
	MethodKernelImport = "kernel.import"
	MethodKernelList   = "kernel.list"
	MethodKernelShow   = "kernel.show"
	MethodKernelDelete = "kernel.delete"
	MethodKernelPull   = "kernel.pull" // starts an operation
	MethodKernelPush   = "kernel.push"

	// MethodVMBootTest boots a throwaway VM from an image and a kernel,
	// runs uname -a through its agent, powers it off and reports timings.
	MethodVMBootTest = "vm.boot_test"

	// MethodVMCreate starts an operation whose result is the VM.
	MethodVMCreate  = "vm.create"
	MethodVMStart   = "vm.start"
	MethodVMStop    = "vm.stop"
	MethodVMRestart = "vm.restart"
	// MethodVMSuspend saves a running VM's memory and ends its VMM;
	// MethodVMResume restores it.
	MethodVMSuspend = "vm.suspend"
	MethodVMResume  = "vm.resume"
	// MethodVMFork makes running copies of a running VM.
	MethodVMFork = "vm.fork"
	// MethodVMSnapshot* make, list, roll back to and delete checkpoints.
	MethodVMSnapshotCreate  = "vm.snapshot.create"
	MethodVMSnapshotList    = "vm.snapshot.list"
	MethodVMSnapshotRestore = "vm.snapshot.restore"
	MethodVMSnapshotDelete  = "vm.snapshot.delete"
	MethodVMDelete          = "vm.delete"
	MethodVMList            = "vm.list"
	MethodVMShow            = "vm.show"
	// MethodVMExec streams VMExecEvent events, then the exit status.
	MethodVMExec  = "vm.exec"
	MethodVMLogs  = "vm.logs" // streams with follow
	MethodVMSet   = "vm.set"
	MethodVMKill  = "vm.kill"
	MethodVMPrune = "vm.prune"
	// MethodVMSSH checks that a VM can be reached by ssh and says how:
	// not_found and not_running come back as such, before ssh runs.
	MethodVMSSH = "vm.ssh"
	// MethodVMSSHProxy answers, then turns the connection into a byte
	// stream to the VM agent's SSH server (ssh's ProxyCommand).
	MethodVMSSHProxy = "vm.ssh_proxy"
	// MethodVMStats answers from the stats poller's cache; vm.stats.all
	// for every running VM.
	MethodVMStats    = "vm.stats"
	MethodVMStatsAll = "vm.stats.all"
	MethodVMHealth   = "vm.health"
	MethodVMPing     = "vm.ping"
	// MethodVMPorts lists the guest's listening sockets, each TCP port
	// probed for HTTP and HTTPS; with forward, they are also opened on
	// the host's loopback.
	MethodVMPorts = "vm.ports"
	// The file methods: a part of a guest file (vm.file.read), a whole
	// file written (vm.file.write), and the other file-system operations
	// (vm.fs: stat, list, mkdir, move, remove, glob, search).
	MethodVMFileRead  = "vm.file.read"
	MethodVMFileWrite = "vm.file.write"
	MethodVMFS        = "vm.fs"
	// The workspace methods. Prepare, pull and push stream
	// WorkspaceProgress events before their result.
	MethodVMWorkspacePrepare = "vm.workspace.prepare"
	MethodVMWorkspaceStatus  = "vm.workspace.status"
	MethodVMWorkspacePull    = "vm.workspace.pull"
	MethodVMWorkspacePush    = "vm.workspace.push"
	MethodVMWorkspaceExport  = "vm.workspace.export"
	// MethodVMWorkspaceApply applies an exported patch, as reviewed (its
	// sha256), to the workspace's host tree.
	MethodVMWorkspaceApply = "vm.workspace.apply"

	// MethodVMEgress streams a VM's outbound attempts (DNS and new
	// connections, allowed or denied), following with follow;
	// MethodVMEgressSuggest answers the allow-list that would have
	// allowed what it saw.
	MethodVMEgress        = "vm.egress"
	MethodVMEgressSuggest = "vm.egress.suggest"
	// MethodE2B* manage the E2B-compatible API: its status, its keys, the
	// templates its creates name.
	MethodE2BStatus         = "e2b.status"
	MethodE2BKeyCreate      = "e2b.key.create"
	MethodE2BKeyList        = "e2b.key.list"
	MethodE2BKeyRevoke      = "e2b.key.revoke"
	MethodE2BTemplateSet    = "e2b.template.set"
	MethodE2BTemplateList   = "e2b.template.list"
	MethodE2BTemplateDelete = "e2b.template.delete"
)

// Operation kinds. Every asynchronous daemon job is one of these.
const (
	OpKindVMCreate     = "vm.create"
	OpKindVMSuspend    = "vm.suspend"
	OpKindVMResume     = "vm.resume"
	OpKindVMFork       = "vm.fork"
	OpKindVMSnapshot   = "vm.snapshot.create"
	OpKindVMRollback   = "vm.snapshot.restore"
	OpKindImageWarm    = "image.warm"
	OpKindImagePull    = "image.pull"
	OpKindImageImport  = "image.import"
	OpKindKernelPull   = "kernel.pull"
	OpKindKernelImport = "kernel.import"
)
