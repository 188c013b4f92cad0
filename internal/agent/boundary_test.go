// Package agent_test holds what keeps the guest agent's packages apart:
// internal/agent/* is split by the side of the VM boundary each package
// runs on, and this test holds the split.
package agent_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/bangerdev/banger/"

// Packages that run only in the guest, only on the host, and on both
// (the wire and tree transfer) or anywhere (leaf helpers).
var (
	guestOnly = []string{"internal/agent/guest", "internal/agent/server", "internal/agent/spawn",
		"internal/agent/sshd", "internal/agent/passwd", "internal/agent/procfs", "cmd/banger-agent"}
	shared = []string{"internal/agent/proto", "internal/agent/link", "internal/agent/tree",
		"internal/sshkey", "internal/wholefile", "internal/version", "api"}
)

func deps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	args := append([]string{"list", "-deps"}, pkgs...)
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go list -deps %v: %v", pkgs, err)
	}
	var ours []string
	for _, p := range strings.Fields(string(out)) {
		if rel, ok := strings.CutPrefix(p, mod); ok {
			ours = append(ours, rel)
		}
	}
	return ours
}

// TestGuestLinksNoHostCode: the agent binary is built from guest-only and
// shared packages alone.
func TestGuestLinksNoHostCode(t *testing.T) {
	got := deps(t, mod+"cmd/banger-agent")
	if !slices.Contains(got, "internal/agent/server") {
		t.Fatalf("go list found no agent server among %v", got)
	}
	for _, p := range got {
		if !slices.Contains(guestOnly, p) && !slices.Contains(shared, p) {
			t.Errorf("the guest agent links %s, which is not guest code", p)
		}
	}
}

// TestHostLinksNoGuestCode: neither the daemon nor the CLI links a
// guest-only package.
func TestHostLinksNoGuestCode(t *testing.T) {
	got := deps(t, mod+"cmd/bangerd", mod+"cmd/banger")
	if !slices.Contains(got, "internal/agent/client") {
		t.Fatalf("go list found no agent client among %v", got)
	}
	for _, p := range got {
		if slices.Contains(guestOnly, p) {
			t.Errorf("the host binaries link %s, which is guest-only", p)
		}
	}
}
