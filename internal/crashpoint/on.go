//go:build crashpoints

package crashpoint

import (
	"fmt"
	"os"
	"syscall"
)

// Enabled says whether this build has crash points (the crashpoints tag).
const Enabled = true

// At records the step (BANGER_CRASH_TRACE) and kills the process with
// SIGKILL if it is BANGER_CRASH_AT: no deferred call, no flush, as a
// kill -9 or a power cut leaves it.
func At(verb, what string) {
	step := Step(verb, what)
	if f := os.Getenv("BANGER_CRASH_TRACE"); f != "" {
		// One appending write a line: concurrent steps' lines stay whole.
		if w, err := os.OpenFile(f, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
			_, _ = w.Write([]byte(step + "\n"))
			w.Close()
		}
	}
	if os.Getenv("BANGER_CRASH_AT") == step {
		fmt.Fprintf(os.Stderr, "crashpoint: killed at %s\n", step)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
