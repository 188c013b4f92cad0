package boot

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/vmm"
)

// WorkDisk makes a VM's writable disk at path: a sparse file of size bytes
// with an empty ext4, whatever the image's size (the image is shared
// read-only below it, never copied). A failure leaves no file.
func WorkDisk(ctx context.Context, path string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("creating the work disk: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		var out []byte
		// lazy_itable_init: the inode tables are zeroed by the guest's
		// kernel later, not written here.
		out, err = exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", path).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("mkfs.ext4: %v: %s", err, bytes.TrimSpace(out))
		}
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("making the work disk: %w", err)
	}
	return nil
}

// Failure says why a VM did not come up: the console's end, and the VMM's
// own complaint (vmmName says whose) when it has one.
func Failure(in vmm.Instance, vmmName string) string {
	log, _ := os.ReadFile(in.ConsoleLog())
	msg := fmt.Sprintf("the console ends with:\n%s", Tail(log, 15))
	if len(bytes.TrimSpace(log)) == 0 {
		msg = "the console is empty: the kernel never started"
	}
	if in.VMMLog() != in.ConsoleLog() {
		if vlog, _ := os.ReadFile(in.VMMLog()); len(bytes.TrimSpace(vlog)) > 0 {
			msg += fmt.Sprintf("\n%s said:\n%s", vmmName, Tail(vlog, 10))
		}
	}
	return msg
}

// Tail is the last n lines of b.
func Tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
