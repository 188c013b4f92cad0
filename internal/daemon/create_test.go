package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/opstate"
	"github.com/bangerdev/banger/internal/vm"
	"github.com/bangerdev/banger/internal/workspace"
)

// fakeVMs records what the creator asks of the VM and workspace
// services, in order.
type fakeVMs struct {
	mu       sync.Mutex
	calls    []string
	sessions int // open now
	placeErr error
}

func (f *fakeVMs) note(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeVMs) Create(_ context.Context, p api.VMCreateParams) (vm.Creation, error) {
	f.note("create " + p.Name)
	return vm.Creation{}, nil
}

func (f *fakeVMs) Build(_ context.Context, phase func(string), _ vm.Creation) (api.VM, error) {
	phase("booting")
	f.note("build")
	return api.VM{Name: "web", State: api.VMRunning}, nil
}

func (f *fakeVMs) Show(_ context.Context, p api.VMRefParams) (api.VM, error) {
	f.note("show " + p.Name)
	return api.VM{Name: p.Name, State: api.VMRunning, Workspace: "/workspace"}, nil
}

func (f *fakeVMs) creator() *creator {
	return &creator{
		vms: f,
		place: func(_ context.Context, p api.WorkspacePrepareParams, _ workspace.Progress) (api.WorkspacePrepareResult, error) {
			f.mu.Lock()
			open := f.sessions
			f.mu.Unlock()
			f.note("place " + p.Name + " " + p.Path + map[bool]string{true: " in a session", false: ""}[open == 1])
			return api.WorkspacePrepareResult{}, f.placeErr
		},
		session: func(string) func() {
			f.mu.Lock()
			f.sessions++
			f.mu.Unlock()
			return func() { f.mu.Lock(); f.sessions--; f.mu.Unlock() }
		},
		ops:      opstate.NewRegistry[api.VM](time.Hour, time.Now),
		lifetime: context.Background(),
	}
}

func wait(t *testing.T, op *opstate.Op[api.VM]) (api.VM, error) {
	t.Helper()
	select {
	case <-op.Done():
		return op.Result()
	case <-time.After(30 * time.Second):
		t.Fatal("the create did not finish")
		return api.VM{}, nil
	}
}

// TestCreatorPlacesWorkspace: vm.create with a workspace is the VM
// service's create and build, then the workspace's placement (in a
// session, so the idle sweep leaves the VM alone), in one operation.
func TestCreatorPlacesWorkspace(t *testing.T) {
	ctx := context.Background()
	project := t.TempDir()
	f := &fakeVMs{}
	c := f.creator()
	op, err := c.Create(ctx, api.VMCreateParams{Name: "web", Workspace: &api.WorkspaceSpec{Path: project}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := wait(t, op)
	if err != nil || v.Workspace != "/workspace" {
		t.Fatalf("create = %+v, %v", v, err)
	}
	want := []string{"create web", "build", "place web " + project + " in a session", "show web"}
	if !slices.Equal(f.calls, want) || f.sessions != 0 {
		t.Fatalf("calls %q (sessions open %d), want %q", f.calls, f.sessions, want)
	}
	if st := op.Status(); st.Kind != api.OpKindVMCreate || st.Phase != "placing workspace" {
		t.Fatalf("operation %+v", st)
	}

	// Without a workspace: no placement.
	f.calls = nil
	op, _ = c.Create(ctx, api.VMCreateParams{Name: "web"})
	if _, err := wait(t, op); err != nil || !slices.Equal(f.calls, []string{"create web", "build"}) {
		t.Fatalf("a create without a workspace: %q, %v", f.calls, err)
	}

	// A failed placement keeps the VM and says how to try again.
	f.placeErr = errors.New("the agent hung up")
	op, _ = c.Create(ctx, api.VMCreateParams{Name: "web", Workspace: &api.WorkspaceSpec{Path: project}})
	if _, err := wait(t, op); err == nil || !strings.Contains(err.Error(), "vm web is up, but its workspace was not placed: the agent hung up") ||
		!strings.Contains(err.Error(), "banger vm workspace prepare web "+project) {
		t.Fatalf("a failed placement = %v", err)
	}
}

// TestCreatorRefusesBadWorkspace: a workspace that cannot be placed is
// refused before anything is made.
func TestCreatorRefusesBadWorkspace(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		p      api.VMCreateParams
		saying string
	}{
		{"missing", api.VMCreateParams{Workspace: &api.WorkspaceSpec{Path: "/no/such/dir"}}, "not a directory on this host"},
		{"a file", api.VMCreateParams{Workspace: &api.WorkspaceSpec{Path: file}}, "not a directory on this host: a file"},
		{"no start", api.VMCreateParams{NoStart: true, Workspace: &api.WorkspaceSpec{Path: t.TempDir()}}, "drop --no-start"},
	} {
		f := &fakeVMs{}
		_, err := f.creator().Create(context.Background(), tc.p)
		if !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.saying) || len(f.calls) != 0 {
			t.Errorf("%s: %v (calls %q)", tc.name, err, f.calls)
		}
	}
}
