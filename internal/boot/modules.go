package boot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/bangerdev/banger/internal/bundle"
)

// ModulesFile is a bundle's modules disk, beside its kernel.
const ModulesFile = "modules.ext4"

// nobody is the user a root daemon runs depmod as.
const nobody = 65534

// ErrNoDepmod: the host has no depmod, which indexes the modules for the
// guest's modprobe; VMs then have only the initramfs's modules.
var ErrNoDepmod = errors.New("depmod is not installed (Debian: apt-get install kmod)")

// ModulesDisk is the read-only disk of the bundle in dir's whole module
// tree, for the guest's modprobe: an ext4 image of it with depmod's
// indexes, built once per bundle and kept in it, shared by every VM of
// that kernel (nothing is copied per VM). "" when the bundle has no
// modules. A failed build leaves nothing.
func ModulesDisk(ctx context.Context, dir, version string) (string, error) {
	path := filepath.Join(dir, ModulesFile)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	src := bundle.Modules(dir)
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return "", nil
	}
	if version == "" || strings.ContainsAny(version, "/\x00") || version == "." || version == ".." {
		return "", fmt.Errorf("the kernel's version %q names no modules directory", version)
	}
	depmod, err := exec.LookPath("depmod")
	if err != nil {
		// Not on a user's PATH on Debian: it lives in /usr/sbin.
		depmod = "/usr/sbin/depmod"
		if _, err := os.Stat(depmod); err != nil {
			return "", ErrNoDepmod
		}
	}
	staging, err := os.MkdirTemp(dir, ".modules-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(staging)
	tree := filepath.Join(staging, "lib", "modules", version)
	size, err := linkTree(src, tree)
	if err != nil {
		return "", fmt.Errorf("making the modules disk: %w", err)
	}
	cmd, done, err := confined(ctx, staging, tree, depmod, version)
	if err != nil {
		return "", fmt.Errorf("making the modules disk: %w", err)
	}
	out, err := cmd.CombinedOutput()
	done()
	if err != nil {
		return "", fmt.Errorf("making the modules disk: depmod: %v: %s", err, strings.TrimSpace(string(out)))
	}
	img := filepath.Join(staging, ModulesFile)
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return "", err
	}
	// Room for the indexes and the file system's own: a fifth more.
	err = f.Truncate(size + size/5 + 32<<20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "banger-modules", "-O", "^has_journal",
		"-E", "root_owner=0:0,lazy_itable_init=1,nodiscard", "-d", tree, img).CombinedOutput(); err != nil {
		return "", fmt.Errorf("making the modules disk: mkfs.ext4: %v: %s", err, strings.TrimSpace(string(out)))
	}
	// Concurrent builds make the same disk: the last rename wins, whole.
	if err := os.Rename(img, path); err != nil {
		return "", err
	}
	return path, nil
}

// linkTree mirrors the tree at src under dst with hard links (copies
// where linking fails), so depmod writes its indexes into dst alone,
// and returns the bytes of its files. Symlinks (build, source: host
// paths) are left out.
func linkTree(src, dst string) (int64, error) {
	var size int64
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		// Modes set whatever the daemon's umask: a confined depmod
		// reads as nobody. The bundle's files are no secret (its
		// directory is closed to others); a link shares their mode.
		switch {
		case d.IsDir():
			if err := os.MkdirAll(to, 0o755); err != nil {
				return err
			}
			return os.Chmod(to, 0o755)
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			size += fi.Size()
			if os.Link(p, to) != nil {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				if err := os.WriteFile(to, b, 0o644); err != nil {
					return err
				}
			}
			return os.Chmod(to, 0o644)
		}
		return nil
	})
	return size, err
}

// confined is `depmod -b STAGING version`, which parses a bundle's
// module files (a bundle pulled from a registry is as hostile as an
// image), given as little as the daemon can: a root daemon runs it as
// nobody, with no network, owning only tree (where it writes its
// indexes) and reaching staging through a descriptor, since the
// daemon's directories above it are closed to others. Another daemon's
// user has nothing more to drop. done closes what it was given.
func confined(ctx context.Context, staging, tree, depmod, version string) (*exec.Cmd, func(), error) {
	if os.Geteuid() != 0 {
		return exec.CommandContext(ctx, depmod, "-b", staging, version), func() {}, nil
	}
	for _, d := range []string{staging, filepath.Join(staging, "lib"), filepath.Join(staging, "lib", "modules")} {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, nil, err
		}
	}
	if err := os.Chown(tree, nobody, nobody); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(staging)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, depmod, "-b", "/proc/self/fd/3", version)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, NoSetGroups: true},
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC,
	}
	return cmd, func() { f.Close() }, nil
}
