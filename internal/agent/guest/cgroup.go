//go:build linux

package guest

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where the unified hierarchy goes, as systemd puts it.
const cgroupRoot = "/sys/fs/cgroup"

// mountCgroups mounts cgroup2 (the unified hierarchy) at /sys/fs/cgroup
// with every controller the kernel has enabled for child groups, as
// systemd does: dockerd, runc, systemd-run and the like need it. The
// root group is exempt from cgroup2's no-internal-processes rule, so the
// guest's processes stay where they are.
func mountCgroups() error {
	if err := unix.Mount("cgroup2", cgroupRoot, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RELATIME, "nsdelegate,memory_recursiveprot"); err != nil && err != unix.EBUSY {
		return fmt.Errorf("mounting it on %s: %w", cgroupRoot, err)
	}
	b, err := os.ReadFile(cgroupRoot + "/cgroup.controllers")
	if err != nil {
		return err
	}
	var enable []string
	for _, c := range strings.Fields(string(b)) {
		enable = append(enable, "+"+c)
	}
	if len(enable) == 0 {
		return nil
	}
	// One write, all or none; a controller the kernel refuses fails it,
	// then each is tried alone so the others are still delegated.
	ctl := cgroupRoot + "/cgroup.subtree_control"
	if err := os.WriteFile(ctl, []byte(strings.Join(enable, " ")), 0); err == nil {
		return nil
	}
	var refused []string
	for _, c := range enable {
		if err := os.WriteFile(ctl, []byte(c), 0); err != nil {
			refused = append(refused, c[1:])
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("controllers not enabled: %s", strings.Join(refused, " "))
	}
	return nil
}
