package cli

import (
	"flag"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

var updateDeps = flag.Bool("update-deps", false, "rewrite deps.txt with what cmd/banger links now")

// forbidden are what only bangerd may link (a trailing "/..." takes the
// packages below too): the store and SQLite, the host network (nftables,
// netlink), the VMMs, images, and the daemon's services; install and update
// run as root (the install record alone is the CLI's to read).
var forbidden = []string{
	"modernc.org/sqlite/...", "github.com/google/nftables/...", "github.com/vishvananda/netlink/...",
	"github.com/mdlayher/netlink/...", "github.com/digitalocean/go-qemu/...", "github.com/google/go-containerregistry/...",
	mod + "internal/store/...", mod + "internal/hostnet/...", mod + "internal/nethelper/...", mod + "internal/vmm/...",
	mod + "internal/daemon/...", mod + "internal/vm/...", mod + "internal/image/...", mod + "internal/kernel/...",
	mod + "internal/boot/...", mod + "internal/bangerd/...", mod + "internal/update/...", mod + "internal/install",
}

const mod = "github.com/bangerdev/banger/"

// TestCLILinksOnlyClientCode holds the split between the two programs:
// the banger CLI links client code alone, and exactly the packages in
// deps.txt (outside the standard library), so a package filed on the
// wrong side, or a new dependency, shows here and in review (as
// tailscale's depaware does). `go test ./internal/cli -run
// TestCLILinksOnlyClientCode -update-deps` rewrites deps.txt.
func TestCLILinksOnlyClientCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}",
		mod+"cmd/banger").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	got := strings.Fields(string(out))
	slices.Sort(got)
	if !slices.Contains(got, mod+"api/client") {
		t.Fatalf("go list found no api/client among %v", got)
	}
	for _, p := range got {
		for _, f := range forbidden {
			if base, tree := strings.CutSuffix(f, "/..."); p == base || tree && strings.HasPrefix(p, base+"/") {
				t.Errorf("the CLI links %s, which is bangerd's (%s): call the daemon, or hand the command over to bangerd", p, f)
			}
		}
	}
	want := strings.Join(got, "\n") + "\n"
	if *updateDeps {
		if err := os.WriteFile("deps.txt", []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pinned, err := os.ReadFile("deps.txt")
	if err != nil {
		t.Fatal(err)
	}
	have := strings.Fields(string(pinned))
	for _, p := range got {
		if !slices.Contains(have, p) {
			t.Errorf("the CLI now links %s, which deps.txt does not list: if it is client code, run with -update-deps and commit deps.txt", p)
		}
	}
	for _, p := range have {
		if !slices.Contains(got, p) {
			t.Errorf("deps.txt lists %s, which the CLI no longer links: run with -update-deps", p)
		}
	}
}
