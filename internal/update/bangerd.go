package update

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Exit codes of `bangerd --check-migrations`.
const (
	ExitWillMigrate = 10
	ExitRefuse      = 20
)

// Owner is the user whose state an installed banger keeps.
type Owner struct{ UID, GID int }

// Bangerd runs a bangerd binary's store commands for an update:
// --check-migrations, --backup-store and --restore-store. Root's update
// never opens, copies or moves the store itself: the owner's state
// directory is the owner's to change (and a guest that escapes QEMU is
// the owner), so any step root took there by path could be turned by a
// symlink onto any file of the host. With Owner set, bangerd runs with
// the owner's uid and gid and no other group, from /, with a clean
// environment: the most it can touch is what the owner could.
type Bangerd struct {
	Owner *Owner
	// Args select the layout (--system), before the command's own.
	Args []string
	// Env is added to the child's environment: with Owner, to a clean
	// one (PATH alone); without, to this process's.
	Env []string
}

// timeout bounds one store command (a backup of a large store included).
const bangerdTimeout = 5 * time.Minute

func (b Bangerd) run(ctx context.Context, bangerd string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, bangerdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bangerd, append(append([]string{}, b.Args...), args...)...)
	if b.Owner != nil {
		cmd.Dir = "/"
		cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"}, b.Env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(b.Owner.UID), Gid: uint32(b.Owner.GID), Groups: []uint32{}},
			Setsid:     true,
			Pdeathsig:  syscall.SIGKILL,
		}
	} else if len(b.Env) > 0 {
		cmd.Env = append(cmd.Environ(), b.Env...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// CheckMigrations says what the bangerd at path would do to the store.
func (b Bangerd) CheckMigrations(ctx context.Context, bangerd string) (Migration, string, error) {
	out, err := b.run(ctx, bangerd, "--check-migrations")
	var exit *exec.ExitError
	switch {
	case err == nil:
		return Compatible, out, nil
	case errors.As(err, &exit) && exit.ExitCode() == ExitWillMigrate:
		return WillMigrate, out, nil
	case errors.As(err, &exit) && exit.ExitCode() == ExitRefuse:
		return Refuses, out, nil
	}
	return 0, "", fmt.Errorf("%s --check-migrations: %w: %s", filepath.Base(bangerd), err, out)
}

// Backup has the bangerd at path copy the store to dst, beside it.
func (b Bangerd) Backup(ctx context.Context, bangerd, dst string) error {
	if out, err := b.run(ctx, bangerd, "--backup-store", dst); err != nil {
		return fmt.Errorf("%s --backup-store: %w: %s", filepath.Base(bangerd), err, out)
	}
	return nil
}

// Restore has the bangerd at path put the copy backup in the store's
// place (no daemon may have it open).
func (b Bangerd) Restore(ctx context.Context, bangerd, backup string) error {
	if out, err := b.run(ctx, bangerd, "--restore-store", backup); err != nil {
		return fmt.Errorf("%s --restore-store: %w: %s", filepath.Base(bangerd), err, out)
	}
	return nil
}
