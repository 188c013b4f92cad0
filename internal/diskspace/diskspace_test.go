package diskspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/roottest"
)

func TestExplainPassesOthers(t *testing.T) {
	for _, err := range []error{nil, errors.New("disk on fire"), fmt.Errorf("open: %w", fs.ErrNotExist)} {
		if got := Explain(err); got != err {
			t.Errorf("Explain(%v) = %v", err, got)
		}
	}
	already := fmt.Errorf("x: %w", api.ErrNoSpace)
	if Explain(already) != already {
		t.Fatal("an explained error was explained again")
	}
	bare := Explain(fmt.Errorf("sqlite: %w", syscall.ENOSPC))
	if !errors.Is(bare, api.ErrNoSpace) || !errors.Is(bare, syscall.ENOSPC) {
		t.Fatalf("a pathless ENOSPC: %v", bare)
	}
}

func TestMountOf(t *testing.T) {
	if got := mountOf("/"); got != "/" {
		t.Fatalf("mountOf(/) = %s", got)
	}
	// /proc is its own mount on every Linux this runs on.
	if got := mountOf("/proc/self"); got != "/proc" {
		t.Fatalf("mountOf(/proc/self) = %s", got)
	}
	u, err := Of(filepath.Join(t.TempDir(), "not", "yet"))
	if err != nil || u.Total <= 0 || u.Mount == "" {
		t.Fatalf("Of a path not there yet: %+v, %v", u, err)
	}
}

// TestFullFileSystem fills a real 4 MiB tmpfs: the write's ENOSPC is
// explained with the mount, and Need refuses before writing.
func TestFullFileSystem(t *testing.T) {
	roottest.Require(t, "mounts a small tmpfs")
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	dir := filepath.Join(mnt, "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 8<<20), 0o600)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 8 MiB on 4: %v", err)
	}
	got := Explain(fmt.Errorf("store the rootfs: %w", err))
	if !errors.Is(got, api.ErrNoSpace) || !errors.Is(got, syscall.ENOSPC) || api.CodeOf(got) != api.CodeNoSpace {
		t.Fatalf("explained: %v", got)
	}
	for _, want := range []string{"mounted at " + mnt, "(4 MiB, ", filepath.Join(dir, "big"), "free space there"} {
		if !strings.Contains(got.Error(), want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if err := Need(filepath.Join(dir, "new"), 1); !errors.Is(err, api.ErrNoSpace) || !strings.Contains(err.Error(), "mounted at "+mnt) {
		t.Fatalf("Need on a full file system: %v", err)
	}
	if err := Need(dir, 0); !errors.Is(err, api.ErrNoSpace) || !strings.Contains(err.Error(), "less than the 64 MiB banger keeps free") {
		t.Fatalf("Need of nothing on a full file system: %v", err)
	}
	if err := Need(t.TempDir(), 1); err != nil {
		t.Fatalf("Need where there is room: %v", err)
	}
}
