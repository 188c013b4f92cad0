package daemon

import (
	"maps"
	"slices"
	"testing"

	"github.com/bangerdev/banger/api"
)

// documentedMethods is the method list of docs/ARCHITECTURE.md. Adding or
// removing a method means updating both.
var documentedMethods = []string{
	api.MethodConfigShow,
	api.MethodDaemonInfo,
	api.MethodImageCachePrune,
	api.MethodImageDelete,
	api.MethodImageImport,
	api.MethodImageList,
	api.MethodImagePull,
	api.MethodImageShow,
	api.MethodKernelDelete,
	api.MethodKernelImport,
	api.MethodKernelList,
	api.MethodKernelPull,
	api.MethodKernelPush,
	api.MethodKernelShow,
	api.MethodOperationsCancel,
	api.MethodOperationsGet,
	api.MethodOperationsList,
	api.MethodOperationsWait,
	api.MethodPing,
	api.MethodShutdown,
	api.MethodVMBootTest,
	api.MethodVMCreate,
	api.MethodVMStart,
	api.MethodVMStop,
	api.MethodVMRestart,
	api.MethodVMDelete,
	api.MethodVMList,
	api.MethodVMShow,
	api.MethodVMExec,
	api.MethodVMLogs,
	api.MethodVMSet,
	api.MethodVMKill,
	api.MethodVMPrune,
	api.MethodVMSSH,
	api.MethodVMSSHProxy,
	api.MethodVMStats,
	api.MethodVMStatsAll,
	api.MethodVMHealth,
	api.MethodVMPing,
	api.MethodVMPorts,
	api.MethodVMWorkspacePrepare,
	api.MethodVMWorkspaceStatus,
	api.MethodVMWorkspacePull,
	api.MethodVMWorkspacePush,
	api.MethodVMWorkspaceExport,
	api.MethodVersion,
}

func TestRPCHandlersMatchDocumentedMethods(t *testing.T) {
	got := slices.Sorted(maps.Keys(rpcHandlers()))
	want := slices.Sorted(slices.Values(documentedMethods))
	if !slices.Equal(got, want) {
		t.Fatalf("rpcHandlers serves\n %v\nthe documented list is\n %v", got, want)
	}
}

func TestRPCHandlersAllNonNil(t *testing.T) {
	for name, h := range rpcHandlers() {
		if h == nil {
			t.Errorf("method %s has a nil handler", name)
		}
	}
}

func TestDecodeParams(t *testing.T) {
	for _, tc := range []struct {
		raw string
		ok  bool
	}{
		{``, true},
		{`{"id":"x"}`, true},
		{`{}`, true},
		{`{"id":"x","extra":1}`, false},
		{`{"id":3}`, false},
		{`[]`, false},
		{`{"id":"x"} {}`, false},
	} {
		var p api.OperationIDParams
		err := decodeParams("operations.get", []byte(tc.raw), &p)
		if (err == nil) != tc.ok {
			t.Errorf("decodeParams(%q) = %v, want ok=%v", tc.raw, err, tc.ok)
		}
	}
}
