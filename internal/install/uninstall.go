package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/install/record"

	"github.com/bangerdev/banger/internal/paths"
)

// Uninstall removes what Apply wrote: the units, the binaries and the
// record. The VMs, images, kernels and the configuration stay unless
// purge is set; a purge is refused while a process still uses the state.
func Uninstall(root string, purge bool, say func(format string, args ...any)) error {
	if say == nil {
		say = func(string, ...any) {}
	}
	r, err := record.Read(root)
	if err != nil && !(purge && errors.Is(err, record.ErrNotInstalled)) {
		return err
	}
	sys := paths.System()
	if purge {
		if users := Users(record.Under(root, sys.StateDir)); len(users) > 0 {
			return fmt.Errorf("%s is in use by %s: stop the VMs first (`banger vm stop NAME`), then uninstall again", sys.StateDir, strings.Join(users, ", "))
		}
	}
	var gone []string
	if r.Prefix != "" {
		gone = append(gone, filepath.Join(unitDir, DaemonUnit), filepath.Join(unitDir, HelperUnit),
			filepath.Join(r.Prefix, cliPath), filepath.Join(r.Prefix, daemonPath), filepath.Join(r.Prefix, agentPath),
			filepath.Join(r.Prefix, filepath.Dir(daemonPath)), record.File)
	}
	if purge {
		gone = append(gone, sys.StateDir, sys.CacheDir, sys.LogDir, sys.RuntimeDir, sys.ConfigDir)
		if r.HelperSocket != "" {
			gone = append(gone, filepath.Dir(r.HelperSocket))
		}
	}
	for _, p := range gone {
		err := os.RemoveAll(record.Under(root, p))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing %s: %w", p, err)
		}
		say("removed %s", p)
	}
	if !purge {
		say("kept %s (VMs, images, kernels), %s and %s: `banger system uninstall --purge` removes them", sys.StateDir, sys.CacheDir, sys.ConfigDir)
	}
	return nil
}
