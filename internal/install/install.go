package install

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/bangerdev/banger/internal/install/record"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/lockfile"
	"github.com/bangerdev/banger/internal/paths"
)

// Account is a user or group by name and id.
type Account struct {
	Name string
	ID   int
}

// Binaries are the files installed: the running CLI and the daemon and
// agent built beside it.
type Binaries struct {
	CLI, Daemon, Agent string
}

// Options say what to install where.
type Options struct {
	// Root is a staging root: everything is written under it, and the
	// host is left alone (no user's groups changed, no unit started).
	// Empty or "/" is the host.
	Root   string
	Prefix string // the binaries' prefix (default /usr/local)
	Owner  Account
	// OwnerGroup is the owner's primary group.
	OwnerGroup Account
	// Group may also use the daemon (its socket 0660); empty: the owner
	// alone.
	Group   string
	From    Binaries
	Version string
	// Say reports each step, one line each.
	Say func(format string, args ...any)
}

// KVMGroup is the group that may open /dev/kvm on Debian and most
// distributions: the owner's VMMs need it.
const KVMGroup = "kvm"

func (o Options) staging() bool { return Staging(o.Root) }

// Staging says whether root is a staging root rather than the host's.
func Staging(root string) bool { return root != "" && root != "/" }

// Apply installs, or brings an install up to date. Each file is written
// only when it differs (atomically, through a temporary file beside it);
// a root-only layout's state (a root daemon's, before the privilege
// split) is given to the owner, once nothing uses it.
func Apply(opts Options) (r record.Record, changed bool, err error) {
	o := &run{Options: opts}
	r, err = o.apply()
	return r, o.changed, err
}

// run is one Apply: whether it changed anything (a unit to reload, a
// daemon to restart).
type run struct {
	Options
	changed bool
}

func (o *run) apply() (record.Record, error) {
	if o.Prefix == "" {
		o.Prefix = "/usr/local"
	}
	if !filepath.IsAbs(o.Prefix) {
		return record.Record{}, fmt.Errorf("--prefix %s: an absolute path is needed", o.Prefix)
	}
	if o.Owner.ID <= 0 {
		return record.Record{}, fmt.Errorf("owner %s: the daemon runs as an ordinary user; name one with --owner (a root daemon needs no install: `banger daemon start`)", o.Owner.Name)
	}
	if o.Say == nil {
		o.Say = func(string, ...any) {}
	}
	r := record.Record{Owner: o.Owner.Name, UID: o.Owner.ID, GID: o.OwnerGroup.ID, Group: o.Group,
		Prefix: filepath.Clean(o.Prefix), HelperSocket: record.HelperSocket, Version: o.Version}
	var extra []string
	if o.Group != "" {
		if _, ok, err := LookupGroup(o.Root, o.Group); err != nil {
			return record.Record{}, err
		} else if !ok {
			return record.Record{}, fmt.Errorf("--group %s: no such group; make it first (`groupadd %s`) and add the users who may use banger", o.Group, o.Group)
		}
		extra = append(extra, o.Group)
	}
	if _, ok, err := LookupGroup(o.Root, KVMGroup); err == nil && ok {
		extra = append([]string{KVMGroup}, extra...)
	}
	for _, f := range []struct{ src, dst string }{
		{o.From.CLI, cliPath}, {o.From.Daemon, daemonPath}, {o.From.Agent, agentPath},
	} {
		if err := o.copyFile(f.src, filepath.Join(r.Prefix, f.dst)); err != nil {
			return record.Record{}, err
		}
	}
	sys := paths.System()
	if err := o.takeOver(sys); err != nil {
		return record.Record{}, err
	}
	for _, dir := range []string{sys.StateDir, sys.CacheDir, sys.LogDir} {
		if err := o.dir(dir, 0o700, o.Owner.ID, o.OwnerGroup.ID); err != nil {
			return record.Record{}, err
		}
	}
	if !o.staging() {
		// systemd makes these at each start; a daemon started by hand
		// (no systemd) finds them too.
		runGID, runMode := o.OwnerGroup.ID, fs.FileMode(0o700)
		if o.Group != "" {
			g, _, _ := LookupGroup(o.Root, o.Group)
			runGID, runMode = g.GID, 0o750
		}
		if err := o.dir(sys.RuntimeDir, runMode, o.Owner.ID, runGID); err != nil {
			return record.Record{}, err
		}
		if err := o.dir(filepath.Dir(r.HelperSocket), 0o755, 0, 0); err != nil {
			return record.Record{}, err
		}
	}
	if err := o.dir(sys.ConfigDir, 0o755, 0, 0); err != nil {
		return record.Record{}, err
	}
	if err := o.file(record.File, r.Encode(), 0o644); err != nil {
		return record.Record{}, err
	}
	if err := o.dir(unitDir, 0o755, 0, 0); err != nil {
		return record.Record{}, err
	}
	if err := o.file(filepath.Join(unitDir, DaemonUnit), []byte(daemonUnit(r, o.OwnerGroup.Name, extra)), 0o644); err != nil {
		return record.Record{}, err
	}
	if err := o.file(filepath.Join(unitDir, HelperUnit), []byte(helperUnit(r)), 0o644); err != nil {
		return record.Record{}, err
	}
	if slices.Contains(extra, KVMGroup) {
		switch added, err := AddToGroup(o.Root, o.Owner.Name, KVMGroup); {
		case err != nil:
			return record.Record{}, err
		case added:
			o.changed = true
			o.Say("added %s to group %s (its VMMs open /dev/kvm)", o.Owner.Name, KVMGroup)
		default:
			o.Say("unchanged %s in group %s", o.Owner.Name, KVMGroup)
		}
	} else {
		o.Say("no group %s here (VMs run under emulation where /dev/kvm is missing)", KVMGroup)
	}
	return r, nil
}

// copyFile installs a binary, root's and 0755.
func (o *run) copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("reading %s: %w; build banger first (`make build`) and run install from its bin/", src, err)
	}
	if err := o.dir(filepath.Dir(dst), 0o755, 0, 0); err != nil {
		return err
	}
	return o.file(dst, b, 0o755)
}

// file writes data at path (under the root) as root's with mode, unless
// it is there already.
func (o *run) file(path string, data []byte, mode fs.FileMode) error {
	full := record.Under(o.Root, path)
	if old, err := os.ReadFile(full); err == nil && bytes.Equal(old, data) {
		if err := ensureMeta(full, mode, 0, 0); err != nil {
			return err
		}
		o.Say("unchanged %s", path)
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(full), "."+filepath.Base(full)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err == nil {
		err = tmp.Sync()
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Chown(tmp.Name(), 0, 0); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), full); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	o.changed = true
	o.Say("wrote %s", path)
	return nil
}

// dir makes a directory (under the root) with its owner and mode.
func (o *run) dir(path string, mode fs.FileMode, uid, gid int) error {
	full := record.Under(o.Root, path)
	fi, err := os.Lstat(full)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(full, mode); err != nil {
			return fmt.Errorf("creating %s: %w", path, err)
		}
		o.changed = true
		o.Say("created %s", path)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory (a symlink?); move it away and run install again", path)
	}
	return ensureMeta(full, mode, uid, gid)
}

func ensureMeta(path string, mode fs.FileMode, uid, gid int) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid {
		if err := os.Lchown(path, uid, gid); err != nil {
			return fmt.Errorf("giving %s to %d:%d: %w", path, uid, gid, err)
		}
	}
	if fi.Mode().Perm() != mode {
		return os.Chmod(path, mode)
	}
	return nil
}

// takeOver gives a root-only layout's state, cache and logs to the
// owner. A daemon or a VMM still using them would be left with files it
// no longer owns: refused, naming them. Only a tree root owns is taken
// over, and never by path: the owner (who may be racing this, as soon as
// a directory is theirs) could swap any directory for a symlink between
// a path's lookup and its use (giveTree).
func (o *run) takeOver(l paths.Layout) error {
	state := record.Under(o.Root, l.StateDir)
	fi, err := os.Lstat(state)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) == o.Owner.ID {
		return nil
	}
	if held, _ := lockfile.Held(filepath.Join(state, filepath.Base(l.LockFile()))); held {
		return fmt.Errorf("a bangerd runs on %s: stop it first (`banger daemon stop`), then install again", l.StateDir)
	}
	if users := Users(state); len(users) > 0 {
		return fmt.Errorf("%s is in use by %s: stop its VMs first (`banger vm stop NAME`), then install again", l.StateDir, strings.Join(users, ", "))
	}
	var dirs []string
	for _, dir := range []string{l.StateDir, l.CacheDir, l.LogDir} {
		fi, err := os.Lstat(record.Under(o.Root, dir))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory (a symlink?); move it away and install again", dir)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 && int(st.Uid) != o.Owner.ID {
			return fmt.Errorf("%s is uid %d's, neither root's nor %s's: banger takes over only a layout root made; move it away and install again",
				dir, st.Uid, o.Owner.Name)
		}
		dirs = append(dirs, dir)
	}
	n := 0
	for _, dir := range dirs {
		k, err := giveTree(record.Under(o.Root, dir), o.Owner.ID, o.OwnerGroup.ID)
		n += k
		if err != nil {
			return fmt.Errorf("giving %s to %s: %w", dir, o.Owner.Name, err)
		}
	}
	o.changed = true
	o.Say("moved the root-only layout over: %d files of %s, %s and %s now %s's", n, l.StateDir, l.CacheDir, l.LogDir, o.Owner.Name)
	return nil
}

// giveTree gives the tree at path to uid:gid through descriptors alone:
// each directory is opened below its parent's descriptor without
// following a link (O_NOFOLLOW), every entry is changed by fchownat with
// AT_SYMLINK_NOFOLLOW in the directory that holds it, and a directory
// is given away only once everything below it is done, so the new owner
// holds none of it while root still works inside. A symlink is given
// away itself, never followed; what another process swaps in meanwhile
// is either not found or not followed. Its parent is root's: the path
// itself cannot be swapped.
func giveTree(path string, uid, gid int) (int, error) {
	parent, err := unix.Open(filepath.Dir(path), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(parent)
	return giveAt(parent, filepath.Base(path), uid, gid, 0)
}

// maxDepth bounds the walk (a layout is a few levels deep).
const maxDepth = 64

func giveAt(parent int, name string, uid, gid, depth int) (int, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("%s: more than %d directories deep", name, maxDepth)
	}
	n := 0
	d, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
		// A file or a symlink: given away as it is.
	case errors.Is(err, unix.ENOENT):
		return 0, nil // gone meanwhile
	case err != nil:
		return 0, fmt.Errorf("%s: %w", name, err)
	default:
		f := os.NewFile(uintptr(d), name)
		names, err := f.Readdirnames(-1)
		if err == nil {
			for _, child := range names {
				k, cerr := giveAt(d, child, uid, gid, depth+1)
				n += k
				if cerr != nil {
					err = fmt.Errorf("%s/%w", name, cerr)
					break
				}
			}
		}
		if err == nil {
			err = unix.Fchown(d, uid, gid) // the directory opened, whatever its name holds now
		}
		f.Close()
		if err != nil {
			return n, err
		}
		return n + 1, nil
	}
	if err := unix.Fchownat(parent, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.ENOENT) {
		return n, fmt.Errorf("%s: %w", name, err)
	}
	return n + 1, nil
}

// Users lists the processes (name and pid) whose command line names a
// path under dir: the VMMs and helpers of a layout.
func Users(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmd, []byte(dir+"/")) {
			continue
		}
		name, _, _ := bytes.Cut(cmd, []byte{0})
		out = append(out, fmt.Sprintf("%s (pid %d)", filepath.Base(string(name)), pid))
	}
	return out
}
