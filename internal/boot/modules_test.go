package boot

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/bundle"
	"github.com/bangerdev/banger/internal/roottest"
)

// TestModulesDisk: a bundle's module tree becomes an ext4 image with
// depmod's indexes, once; the bundle's own files are untouched; a
// bundle without modules has none. As root, depmod runs as nobody.
func TestModulesDisk(t *testing.T) {
	if _, err := exec.LookPath("depmod"); err != nil {
		if _, err := os.Stat("/usr/sbin/depmod"); err != nil {
			t.Fatalf("depmod is missing (make deps installs kmod): %v", err)
		}
	}
	roottest.Require(t, "to see depmod run as nobody")
	// As the daemon runs: what it makes is its own alone.
	defer syscall.Umask(syscall.Umask(0o077))
	dir := t.TempDir()
	if p, err := ModulesDisk(context.Background(), dir, "6.1.0-test"); err != nil || p != "" {
		t.Fatalf("a bundle without modules: %q, %v", p, err)
	}
	mods := filepath.Join(bundle.Modules(dir), "kernel")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	// A real module, from this machine's kernel when it has one, so
	// modules.dep must name it; else a stand-in.
	ko := []byte("not an ELF")
	if found, _ := filepath.Glob("/lib/modules/*/kernel/drivers/net/dummy.ko"); len(found) > 0 {
		ko, _ = os.ReadFile(found[0])
	}
	if err := os.WriteFile(filepath.Join(mods, "x.ko"), ko, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := ModulesDisk(context.Background(), dir, "6.1.0-test")
	if err != nil || p != filepath.Join(dir, ModulesFile) {
		t.Fatalf("ModulesDisk = %q, %v", p, err)
	}
	out, err := exec.Command("debugfs", "-R", "ls -l /", p).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "modules.dep") || !strings.Contains(string(out), "kernel") {
		t.Fatalf("the disk holds:\n%s", out)
	}
	// The indexes were written by nobody, into the disk alone.
	if _, err := os.Stat(filepath.Join(bundle.Modules(dir), "modules.dep")); !os.IsNotExist(err) {
		t.Fatalf("depmod wrote into the bundle: %v", err)
	}
	// depmod's output was copied into the daemon's own tree: root's.
	if strings.Contains(string(out), " 65534 ") {
		t.Fatalf("the disk holds nobody's files:\n%s", out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mods, "x.ko"), &st); err != nil || st.Uid != uint32(os.Geteuid()) {
		t.Fatalf("the bundle's file changed owner: %v %d", err, st.Uid)
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, ".modules-*")); len(entries) != 0 {
		t.Fatalf("staging left: %v", entries)
	}
}

// TestDepmodLeavesNothing: a depmod that a hostile bundle took over
// (here a stand-in script, run as depmod is) leaves a child racing the
// host for its tree: symlinks and a FIFO at the index files' names, the
// module files swapped for links to a root-only host file, a hard link
// tried. No host byte reaches the disk (the secret's bytes are nowhere
// in the image), what is not depmod's own output is refused by name, no
// process it started outlives it, and a depmod that never ends is ended
// by its deadline with all it started.
func TestDepmodLeavesNothing(t *testing.T) {
	roottest.Require(t, "to run depmod as nobody in a PID namespace")
	defer syscall.Umask(syscall.Umask(0o077))
	hostDir := t.TempDir()
	secret := []byte("banger-test-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36))
	secretFile := filepath.Join(hostDir, "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	mark := "banger-racer-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	standIn := func(t *testing.T, body string) string {
		d, err := os.MkdirTemp("", "banger-depmod-") // nobody must reach it
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		p := filepath.Join(d, "depmod")
		script := "#!/bin/sh\n# stand-in depmod: -b BASE -- VERSION\ncd \"$2/lib/modules/$4\" || exit 1\n" +
			strings.NewReplacer("SECRET", secretFile, "MARK", mark).Replace(body)
		if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(os.Chmod(d, 0o755), os.Chmod(p, 0o755)); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The racer: a child that outlives the stand-in unless the kernel
	// ends it, named by MARK on its command line.
	const racer = `sh -c 'while :; do
	ln -sfn SECRET kernel/x.ko 2>/dev/null; ln -sfn SECRET modules.builtin 2>/dev/null
	ln SECRET hard 2>/dev/null; ln -sfn /etc etc 2>/dev/null
done' MARK &
`
	bundleDir := func(t *testing.T) string {
		dir := t.TempDir()
		mods := filepath.Join(bundle.Modules(dir), "kernel")
		if err := os.MkdirAll(mods, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mods, "x.ko"), []byte("the bundle's module"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bundle.Modules(dir), "modules.builtin"), []byte("kernel/y.ko\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	survivors := func() []string {
		var found []string
		pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range pids {
			if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), mark) {
				found = append(found, p)
			}
		}
		return found
	}
	for _, tc := range []struct {
		name, body string
		refused    string // "": the disk is made
		ctx        time.Duration
	}{
		{"a racer in the tree, good indexes", racer + "echo 'kernel/x.ko:' > modules.dep\nsleep 0.3\n", "", 0},
		{"an index made a symlink to a host file", racer + "ln -sfn SECRET modules.dep\nsleep 0.3\n", "modules.dep", 0},
		{"an index made a FIFO", racer + "mkfifo modules.alias\n", "modules.alias: not a regular file", 0},
		{"an index hard-linked to a file of its own", racer + "echo x > mine; ln mine modules.symbols\n", "modules.symbols: 2 links", 0},
		{"a depmod that never ends", racer + "exec sleep 1000\n", "did not finish", 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := bundleDir(t)
			ctx := context.Background()
			if tc.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctx)
				defer cancel()
			}
			start := time.Now()
			p, err := modulesDisk(ctx, dir, "6.1.0-test", standIn(t, tc.body))
			if s := survivors(); len(s) > 0 {
				t.Fatalf("processes the stand-in started outlived it: %v", s)
			}
			if tc.ctx > 0 && time.Since(start) > tc.ctx+10*time.Second {
				t.Fatalf("a depmod that never ends held the build for %s", time.Since(start))
			}
			if b, _ := os.ReadFile(filepath.Join(bundle.Modules(dir), "kernel", "x.ko")); string(b) != "the bundle's module" {
				t.Fatalf("the bundle's module changed: %q", b)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".modules-*")); len(left) != 0 {
				t.Fatalf("staging left: %v", left)
			}
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("want a refusal naming %q, got %q, %v", tc.refused, p, err)
				}
				if _, err := os.Stat(filepath.Join(dir, ModulesFile)); !os.IsNotExist(err) {
					t.Fatalf("a refused build left a disk: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			img, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(img, secret) {
				t.Fatalf("the host's secret is in the modules disk")
			}
			out, err := exec.Command("debugfs", "-R", "cat /kernel/x.ko", p).Output()
			if err != nil || string(out) != "the bundle's module" {
				t.Fatalf("the disk's x.ko: %q, %v", out, err)
			}
			for _, gone := range []string{"/etc", "/hard"} {
				if out, _ := exec.Command("debugfs", "-R", "stat "+gone, p).CombinedOutput(); !strings.Contains(string(out), "not found") {
					t.Fatalf("the disk holds %s, which the racer made:\n%s", gone, out)
				}
			}
			if out, err := exec.Command("debugfs", "-R", "cat /modules.dep", p).Output(); err != nil || string(out) != "kernel/x.ko:\n" {
				t.Fatalf("the disk's modules.dep: %q, %v", out, err)
			}
		})
	}
}
