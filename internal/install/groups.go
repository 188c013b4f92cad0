package install

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/install/record"
)

// Group is one entry of a root's /etc/group.
type Group struct {
	Name    string
	GID     int
	Members []string
}

// LookupGroup reads a group from root's /etc/group (local groups only:
// the ones install adds users to are local).
func LookupGroup(root, name string) (Group, bool, error) {
	f, err := os.Open(record.Under(root, "/etc/group"))
	if err != nil {
		return Group{}, false, fmt.Errorf("reading the groups: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) != 4 || fields[0] != name {
			continue
		}
		gid, err := strconv.Atoi(fields[2])
		if err != nil {
			return Group{}, false, fmt.Errorf("group %s: gid %q: %w", name, fields[2], err)
		}
		g := Group{Name: name, GID: gid}
		if fields[3] != "" {
			g.Members = strings.Split(fields[3], ",")
		}
		return g, true, nil
	}
	return Group{}, false, sc.Err()
}

// AddToGroup makes user a member of group in root's /etc/group (usermod,
// which locks and edits the group and shadow files together). A member
// already is left alone: it reports false.
func AddToGroup(root, user, group string) (bool, error) {
	g, ok, err := LookupGroup(root, group)
	if err != nil {
		return false, err
	}
	if !ok {
		return false, fmt.Errorf("no group %s", group)
	}
	if slices.Contains(g.Members, user) {
		return false, nil
	}
	args := []string{"--append", "--groups", group, user}
	if Staging(root) {
		args = append([]string{"--prefix", root}, args...)
	}
	if out, err := exec.Command("usermod", args...).CombinedOutput(); err != nil {
		return false, fmt.Errorf("adding %s to group %s: usermod: %v: %s", user, group, err, strings.TrimSpace(string(out)))
	}
	return true, nil
}
