package boot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bangerdev/banger/internal/diskspace"
	"github.com/bangerdev/banger/internal/vmm"
)

// WorkDisk makes a VM's writable disk at path: a sparse file of size bytes
// with an empty ext4, whatever the image's size (the image is shared
// read-only below it, never copied). A failure leaves no file.
func WorkDisk(ctx context.Context, path string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	// The disk is sparse: it takes what mkfs writes now and what the
	// guest writes later. Refuse a nearly full file system by name
	// rather than let mkfs fail with its own words.
	if err := diskspace.Need(filepath.Dir(path), 0); err != nil {
		return fmt.Errorf("making the work disk: %w", err)
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

// failureBytes bounds what Failure reads of each log: the guest writes
// the console, and may have written gigabytes.
const failureBytes = 64 << 10

// Failure says why a VM did not come up: the console's end, and the VMM's
// own complaint (vmmName says whose) when it has one.
func Failure(in vmm.Instance, vmmName string) string {
	log := tailFile(in.ConsoleLog(), failureBytes)
	msg := fmt.Sprintf("the console ends with:\n%s", Tail(log, 15))
	if len(bytes.TrimSpace(log)) == 0 {
		msg = "the console is empty: the kernel never started"
	}
	if in.VMMLog() != in.ConsoleLog() {
		if vlog := tailFile(in.VMMLog(), failureBytes); len(bytes.TrimSpace(vlog)) > 0 {
			msg += fmt.Sprintf("\n%s said:\n%s", vmmName, Tail(vlog, 10))
		}
	}
	return msg
}

// tailFile is at most the last max bytes of the file at path (nothing if
// it cannot be read), from the start of a line when it cut the file.
func tailFile(path string, max int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	off := fi.Size() - max
	if off < 0 {
		off = 0
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, max))
	if err != nil {
		return nil
	}
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return b
}

// Tail is the last n lines of b.
func Tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
