package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// handOver makes cmd a command that bangerd runs: the daemon itself, the
// root helper, install and update link the store, the VMMs and the host
// network, which the CLI does not. Its words and arguments go to bangerd
// as they are (flags included, --socket and --help too: cobra parses
// none of a hand-over's flags), under argv[0] "banger" so that
// bangerd speaks as the CLI (internal/bangerd.Main); exec keeps the
// process, so signals, the pid and the exit code are as they were.
func handOver(env *Env, cmd *cobra.Command) *cobra.Command {
	cmd.DisableFlagParsing = true
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		bangerd, err := bangerdPath()
		if err != nil {
			return err
		}
		words := strings.Fields(cmd.CommandPath())[1:]
		argv := append(append([]string{"banger"}, words...), args...)
		if err := syscall.Exec(bangerd, argv, os.Environ()); err != nil {
			return fmt.Errorf("running %s: %w", bangerd, err)
		}
		return nil
	}
	return cmd
}

// bangerdPath finds the bangerd binary of this CLI: beside it (a build's
// bin/, an unpacked release) or in an install's PREFIX/lib/banger.
func bangerdPath() (string, error) {
	exe, err := os.Executable()
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		return "", fmt.Errorf("finding the banger binary: %w", err)
	}
	dir := filepath.Dir(exe)
	for _, d := range []string{dir, filepath.Join(dir, "..", "lib", "banger")} {
		p := filepath.Join(d, "bangerd")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return filepath.Clean(p), nil
		}
	}
	return "", fmt.Errorf("no bangerd beside %s or in %s: build it (`make build`) or install banger again", exe, filepath.Join(dir, "..", "lib", "banger"))
}
