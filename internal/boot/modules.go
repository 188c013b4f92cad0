package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/bundle"
)

// ModulesFile is a bundle's modules disk, beside its kernel.
const ModulesFile = "modules.ext4"

// nobody is the user a root daemon runs depmod as.
const nobody = 65534

// Deadlines of the host programs a modules disk takes: depmod parses a
// hostile bundle, mkfs copies its tree.
const (
	depmodTimeout = 2 * time.Minute
	mkfsTimeout   = 10 * time.Minute
)

// maxIndex bounds each index file taken from depmod's output (a Debian
// kernel's largest, modules.alias, is about 1.5 MiB).
const maxIndex = 64 << 20

// indexFiles are the files depmod writes (kmod 30 to 34): the only ones
// taken from its output.
var indexFiles = []string{
	"modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.softdep",
	"modules.weakdep", "modules.symbols", "modules.symbols.bin", "modules.builtin.bin",
	"modules.builtin.alias.bin", "modules.devname",
}

// ErrNoDepmod: the host has no depmod, which indexes the modules for the
// guest's modprobe; VMs then have only the initramfs's modules.
var ErrNoDepmod = errors.New("depmod is not installed (Debian: apt-get install kmod)")

// ModulesDisk is the read-only disk of the bundle in dir's whole module
// tree, for the guest's modprobe: an ext4 image of it with depmod's
// indexes, built once per bundle and kept in it, shared by every VM of
// that kernel (nothing is copied per VM). "" when the bundle has no
// modules. A failed build leaves nothing.
func ModulesDisk(ctx context.Context, dir, version string) (string, error) {
	depmod, err := exec.LookPath("depmod")
	if err != nil {
		// Not on a user's PATH on Debian: it lives in /usr/sbin.
		depmod = "/usr/sbin/depmod"
	}
	return modulesDisk(ctx, dir, version, depmod)
}

// modulesDisk is ModulesDisk with the depmod to run. depmod parses a
// bundle's module files (a bundle pulled from a registry is as hostile
// as an image), so what it leaves is not trusted: it runs confined
// (confined), in a tree of links of its own, and the disk is made from a
// second tree, the daemon's alone, of the bundle's files and depmod's
// known index files, each opened without following links and checked.
func modulesDisk(ctx context.Context, dir, version, depmod string) (string, error) {
	path := filepath.Join(dir, ModulesFile)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	src := bundle.Modules(dir)
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return "", nil
	}
	if err := bundle.CheckRelease(version); err != nil {
		return "", fmt.Errorf("making the modules disk: %w", err)
	}
	if _, err := os.Stat(depmod); err != nil {
		return "", ErrNoDepmod
	}
	staging, err := os.MkdirTemp(dir, ".modules-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(staging)
	// depmod's tree: its base directory is staging/depmod.
	base := filepath.Join(staging, "depmod")
	tree := filepath.Join(base, "lib", "modules", version)
	if _, err := linkTree(src, tree, nil); err != nil {
		return "", fmt.Errorf("making the modules disk: %w", err)
	}
	uid, err := runDepmod(ctx, staging, base, tree, depmod, version)
	if err != nil {
		return "", fmt.Errorf("making the modules disk: %w", err)
	}
	// The disk's tree: the bundle's files (not what depmod's tree holds
	// now) and the index files, copied.
	disk := filepath.Join(staging, "disk")
	size, err := linkTree(src, disk, indexFiles)
	if err != nil {
		return "", fmt.Errorf("making the modules disk: %w", err)
	}
	n, err := takeIndexes(tree, disk, uid)
	if err != nil {
		return "", fmt.Errorf("making the modules disk: %w", err)
	}
	size += n
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
	mctx, cancel := context.WithTimeout(ctx, mkfsTimeout)
	defer cancel()
	if out, err := exec.CommandContext(mctx, "mkfs.ext4", "-q", "-F", "-L", "banger-modules", "-O", "^has_journal",
		"-E", "root_owner=0:0,lazy_itable_init=1,nodiscard", "-d", disk, "--", img).CombinedOutput(); err != nil {
		if mctx.Err() != nil {
			err = fmt.Errorf("%w (after %s)", mctx.Err(), mkfsTimeout)
		}
		return "", fmt.Errorf("making the modules disk: mkfs.ext4: %v: %s", err, strings.TrimSpace(string(out)))
	}
	// Concurrent builds make the same disk: the last rename wins, whole.
	if err := os.Rename(img, path); err != nil {
		return "", err
	}
	return path, nil
}

// linkTree mirrors the tree at src under dst with hard links (copies
// where linking fails), leaving out the top-level files named in skip,
// and returns the bytes of its files. Symlinks (build, source: host
// paths) are left out.
func linkTree(src, dst string, skip []string) (int64, error) {
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
			if slices.Contains(skip, rel) {
				return nil
			}
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

// takeIndexes copies depmod's index files from its tree into the disk's,
// and returns their bytes. Each is opened without following a link and
// without blocking (a FIFO), and taken only when it is a regular file of
// depmod's user with one link (a hard link to someone else's file is
// not depmod's output), of at most maxIndex bytes.
func takeIndexes(tree, disk string, uid int) (int64, error) {
	d, err := unix.Open(tree, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("opening depmod's output: %w", err)
	}
	defer unix.Close(d)
	var total int64
	for _, name := range indexFiles {
		fd, err := unix.Openat(d, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			continue // an older depmod writes fewer
		}
		if err != nil {
			return 0, fmt.Errorf("depmod's %s: %w", name, err)
		}
		f := os.NewFile(uintptr(fd), name)
		n, err := takeIndex(f, filepath.Join(disk, name), uid)
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("depmod's %s: %w", name, err)
		}
		total += n
	}
	return total, nil
}

func takeIndex(f *os.File, dst string, uid int) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return 0, errors.New("not a regular file")
	case int(st.Uid) != uid:
		return 0, fmt.Errorf("owned by uid %d, not depmod's %d", st.Uid, uid)
	case st.Nlink != 1:
		return 0, fmt.Errorf("%d links to it", st.Nlink)
	case st.Size > maxIndex:
		return 0, fmt.Errorf("%d bytes, more than %d", st.Size, maxIndex)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, io.LimitReader(f, maxIndex+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > maxIndex {
		err = fmt.Errorf("grew past %d bytes", maxIndex)
	}
	return n, err
}

// runDepmod runs `depmod -b BASE -- version` confined, and returns the
// uid it ran as (the owner its index files must have).
//
// It runs in a PID namespace of its own, whose init it is: when it exits
// (or its deadline kills it) the kernel kills whatever it started, so
// nothing it ran outlives it to change its tree while the disk is made.
// It has no network. A root daemon runs it as nobody, owning only tree
// (where it writes its indexes) and reaching base through a descriptor,
// since the daemon's directories above it are closed to others. Another
// daemon's user has nothing more to drop and needs a user namespace for
// the PID namespace: where the host allows none, no disk is made.
func runDepmod(ctx context.Context, staging, base, tree, depmod, version string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, depmodTimeout)
	defer cancel()
	uid := os.Geteuid()
	attr := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC,
		Pdeathsig:  syscall.SIGKILL,
	}
	arg := base
	var extra []*os.File
	if uid == 0 {
		uid = nobody
		for _, d := range []string{staging, base, filepath.Dir(filepath.Dir(tree)), filepath.Dir(tree)} {
			if err := os.Chmod(d, 0o755); err != nil {
				return 0, err
			}
		}
		if err := os.Chown(tree, nobody, nobody); err != nil {
			return 0, err
		}
		f, err := os.Open(base)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		extra, arg = []*os.File{f}, "/proc/self/fd/3"
		attr.Credential = &syscall.Credential{Uid: nobody, Gid: nobody, NoSetGroups: true}
	} else {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		gid := os.Getegid()
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	}
	cmd := exec.CommandContext(ctx, depmod, "-b", arg, "--", version)
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = attr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	switch {
	case ctx.Err() != nil:
		return 0, fmt.Errorf("depmod: did not finish within %s", depmodTimeout)
	case err != nil && cmd.Process == nil && uid != nobody:
		return 0, fmt.Errorf("depmod cannot be confined here (a user namespace is refused: %w); VMs of this kernel get the initramfs's modules only", err)
	case err != nil:
		return 0, fmt.Errorf("depmod: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return uid, nil
}
