package daemon

import (
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bangerdev/banger/api"
)

// documentedMethods reads the method table of docs/RPC.md: its rows'
// first column, where "`a` / `b`" names two.
func documentedMethods(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/RPC.md")
	if err != nil {
		t.Fatal(err)
	}
	var methods []string
	for line := range strings.Lines(string(doc)) {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue // not a row, or the header
		}
		for _, name := range strings.Split(cells[1], "/") {
			methods = append(methods, strings.Trim(strings.TrimSpace(name), "`"))
		}
	}
	return methods
}

// TestRPCMethodsMatchDocumentedMethods: the table serves exactly the
// methods docs/RPC.md lists, so neither can drift.
func TestRPCMethodsMatchDocumentedMethods(t *testing.T) {
	got := slices.Sorted(maps.Keys(rpcMethods(&services{})))
	want := slices.Sorted(slices.Values(documentedMethods(t)))
	if len(want) < 40 {
		t.Fatalf("read only %d methods from docs/RPC.md: %v", len(want), want)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("rpcMethods serves\n %v\ndocs/RPC.md lists\n %v", got, want)
	}
}

// TestRPCMethodsSettings: every method has a handler; only a VM's
// methods count as its activity, and never one a dashboard polls; only
// the ssh proxy is upgraded, and it is a session.
func TestRPCMethodsSettings(t *testing.T) {
	for name, m := range rpcMethods(&services{}) {
		if m.h == nil {
			t.Errorf("method %s has a nil handler", name)
		}
		if m.activity != none && (!strings.HasPrefix(name, "vm.") || m.polled) {
			t.Errorf("method %s counts as activity", name)
		}
		if m.upgrade != (name == api.MethodVMSSHProxy) || m.upgrade && m.activity != session {
			t.Errorf("method %s: upgrade %v, activity %v", name, m.upgrade, m.activity)
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
