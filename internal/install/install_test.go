package install

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bangerdev/banger/internal/install/record"

	"github.com/bangerdev/banger/internal/lockfile"
	"github.com/bangerdev/banger/internal/roottest"
)

func TestUnits(t *testing.T) {
	r := record.Record{Owner: "alice", UID: 1000, GID: 1000, Prefix: "/opt/banger", HelperSocket: record.HelperSocket, Version: "1.2.3"}
	shared := r
	shared.Group = "team"
	for _, tc := range []struct {
		name, unit string
		want, not  []string
	}{
		{"daemon, owner alone", daemonUnit(r, "alice", []string{"kvm"}),
			[]string{"User=alice\n", "Group=alice\n", "SupplementaryGroups=kvm\n", "ExecStart=/opt/banger/lib/banger/bangerd --system\n",
				"KillMode=process\n", "RuntimeDirectoryMode=0700\n", "RuntimeDirectoryPreserve=yes\n", "StateDirectoryMode=0700\n", "Wants=banger-helper.service\n"},
			[]string{"0750", "root"}},
		{"daemon, shared with a group", daemonUnit(shared, "alice", []string{"kvm", "team"}),
			[]string{"SupplementaryGroups=kvm team\n", "RuntimeDirectoryMode=0750\n"}, nil},
		{"daemon, no kvm group", daemonUnit(r, "alice", nil), nil, []string{"SupplementaryGroups"}},
		{"helper", helperUnit(r),
			[]string{"ExecStart=/opt/banger/bin/banger system helper --owner alice --socket /run/banger-helper/helper.sock --config /etc/banger/config.toml\n",
				"RuntimeDirectory=banger-helper\n", "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_CHOWN\n", "NoNewPrivileges=yes\n", "Before=bangerd.service\n"},
			[]string{"User=", "KillMode"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, w := range tc.want {
				if !strings.Contains(tc.unit, w) {
					t.Errorf("missing %q in\n%s", w, tc.unit)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(tc.unit, n) {
					t.Errorf("unexpected %q in\n%s", n, tc.unit)
				}
			}
		})
	}
}

func TestRecord(t *testing.T) {
	root := t.TempDir()
	if _, err := record.Read(root); !errors.Is(err, record.ErrNotInstalled) || !strings.Contains(err.Error(), "sudo banger system install") {
		t.Fatalf("no record: %v", err)
	}
	r := record.Record{Owner: "alice", UID: 1000, GID: 1000, Group: "team", Prefix: "/usr/local", HelperSocket: record.HelperSocket, Version: "v1"}
	must(t, os.MkdirAll(filepath.Join(root, "etc/banger"), 0o755))
	write := func(b []byte) { must(t, os.WriteFile(filepath.Join(root, record.File), b, 0o644)) }
	write(r.Encode())
	got, err := record.Read(root)
	if err != nil || got != r {
		t.Fatalf("read back %+v, %v; want %+v", got, err, r)
	}
	for name, doc := range map[string]string{
		"unknown key":     string(r.Encode()) + "sneaky = 1\n",
		"no owner":        "uid = 1000\nprefix = \"/usr\"\nhelper_socket = \"/run/x\"\n",
		"root owner":      "owner = \"root\"\nuid = 0\nprefix = \"/usr\"\nhelper_socket = \"/run/x\"\n",
		"relative prefix": "owner = \"a\"\nuid = 5\nprefix = \"usr\"\nhelper_socket = \"/run/x\"\n",
		"not toml":        "owner = ",
	} {
		write([]byte(doc))
		if _, err := record.Read(root); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLookupGroup(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nkvm:x:993:alice,bob\nteam:x:1001:\nbroken:x:nope:\n"), 0o644))
	for _, tc := range []struct {
		name    string
		ok      bool
		gid     int
		members int
		err     bool
	}{
		{"kvm", true, 993, 2, false}, {"team", true, 1001, 0, false}, {"absent", false, 0, 0, false}, {"broken", false, 0, 0, true},
	} {
		g, ok, err := LookupGroup(root, tc.name)
		if ok != tc.ok || (err != nil) != tc.err || g.GID != tc.gid || len(g.Members) != tc.members {
			t.Errorf("%s: %+v %v %v", tc.name, g, ok, err)
		}
	}
}

// stage is a staging root with the files usermod --prefix needs, the
// owner, a kvm group and a team group in them, the host's own unit
// directory for systemd-analyze, and the binaries to install.
func stage(t *testing.T, owner roottest.User) (root string, from Binaries) {
	root = t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	files := map[string]string{
		"etc/passwd":  fmt.Sprintf("root:x:0:0::/root:/bin/sh\n%s:x:%d:%d::/nonexistent:/usr/sbin/nologin\n", owner.Name, owner.UID, owner.GID),
		"etc/group":   fmt.Sprintf("root:x:0:\n%s:x:%d:\nkvm:x:993:\nteam:x:1777:\n", owner.Name, owner.GID),
		"etc/shadow":  "root:!:19000::::::\n" + owner.Name + ":!:19000:0:99999:7:::\n",
		"etc/gshadow": "root:*::\n" + owner.Name + ":!::\nkvm:!::\nteam:!::\n",
	}
	for name, content := range files {
		must(t, os.WriteFile(filepath.Join(root, name), []byte(content), 0o644))
	}
	bin := t.TempDir()
	for _, name := range []string{"banger", "bangerd", "banger-agent"} {
		must(t, os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\necho "+name+"\n"), 0o700))
	}
	return root, Binaries{CLI: filepath.Join(bin, "banger"), Daemon: filepath.Join(bin, "bangerd"), Agent: filepath.Join(bin, "banger-agent")}
}

type meta struct {
	mode     fs.FileMode
	uid, gid int
}

func metaOf(t *testing.T, path string) meta {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return meta{fi.Mode(), int(st.Uid), int(st.Gid)}
}

// tree is every path under root with its mode and owner, and the
// content of each file.
func tree(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	must(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		m := metaOf(t, p)
		v := fmt.Sprintf("%v %d:%d", m.mode, m.uid, m.gid)
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			v += " " + string(b)
		}
		out[rel] = v
		return nil
	}))
	return out
}

// TestStagedInstall installs into a staging root and checks every file,
// mode, owner and unit; again, to see nothing change; then moves a
// root-only layout over, and uninstalls with and without --purge.
func TestStagedInstall(t *testing.T) {
	roottest.Require(t, "it makes users and gives files to them")
	owner, remove, err := roottest.AddUser("bgi")
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	root, from := stage(t, owner)
	var said []string
	opts := Options{Root: root, Prefix: "/usr/local", Owner: Account{owner.Name, owner.UID}, OwnerGroup: Account{owner.Name, owner.GID},
		Group: "team", From: from, Version: "v9.9.9", Say: func(f string, a ...any) { said = append(said, fmt.Sprintf(f, a...)) }}
	rec, changed, err := Apply(opts)
	if err != nil || !changed {
		t.Fatalf("install: %v (changed %v)", err, changed)
	}
	want := map[string]meta{
		"usr/local/bin/banger":                     {0o755, 0, 0},
		"usr/local/lib/banger/bangerd":             {0o755, 0, 0},
		"usr/local/lib/banger/banger-agent":        {0o755, 0, 0},
		"usr/local/lib/banger":                     {fs.ModeDir | 0o755, 0, 0},
		"etc/banger":                               {fs.ModeDir | 0o755, 0, 0},
		"etc/banger/install.toml":                  {0o644, 0, 0},
		"etc/systemd/system/bangerd.service":       {0o644, 0, 0},
		"etc/systemd/system/banger-helper.service": {0o644, 0, 0},
		"var/lib/banger":                           {fs.ModeDir | 0o700, owner.UID, owner.GID},
		"var/cache/banger":                         {fs.ModeDir | 0o700, owner.UID, owner.GID},
		"var/log/banger":                           {fs.ModeDir | 0o700, owner.UID, owner.GID},
	}
	for path, m := range want {
		if got := metaOf(t, filepath.Join(root, path)); got != m {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", path, got.mode, got.uid, got.gid, m.mode, m.uid, m.gid)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "run")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a staging install made run/: %v", err)
	}
	for _, bin := range []string{"bin/banger", "lib/banger/bangerd", "lib/banger/banger-agent"} {
		got, _ := os.ReadFile(filepath.Join(root, "usr/local", bin))
		src, _ := os.ReadFile(map[string]string{"bin/banger": from.CLI, "lib/banger/bangerd": from.Daemon, "lib/banger/banger-agent": from.Agent}[bin])
		if !bytes.Equal(got, src) {
			t.Errorf("%s is not its source", bin)
		}
	}
	if got, err := record.Read(root); err != nil || got != rec || got.Owner != owner.Name || got.Group != "team" || got.UID != owner.UID {
		t.Errorf("record %+v, %v", got, err)
	}
	unit, _ := os.ReadFile(filepath.Join(root, "etc/systemd/system/bangerd.service"))
	if string(unit) != daemonUnit(rec, owner.Name, []string{"kvm", "team"}) {
		t.Errorf("daemon unit:\n%s", unit)
	}
	if g, _, _ := LookupGroup(root, "kvm"); len(g.Members) != 1 || g.Members[0] != owner.Name {
		t.Errorf("owner not added to kvm: %+v", g)
	}
	verifyUnits(t, root)

	// Again: nothing changes, and it says so.
	before := tree(t, root)
	said = nil
	if _, changed, err := Apply(opts); err != nil || changed {
		t.Fatalf("second install: %v (changed %v)", err, changed)
	}
	for _, line := range said {
		if !strings.HasPrefix(line, "unchanged") {
			t.Errorf("second install: %q", line)
		}
	}
	after := tree(t, root)
	for p, v := range before {
		if after[p] != v && !strings.HasPrefix(p, "etc/g") { // usermod's backups
			t.Errorf("%s changed: %q → %q", p, v, after[p])
		}
	}

	// A group that does not exist is refused before anything is written.
	bad := opts
	bad.Group = "nosuchgroup"
	if _, _, err := Apply(bad); err == nil || !strings.Contains(err.Error(), "groupadd nosuchgroup") {
		t.Errorf("missing group: %v", err)
	}
	bad = opts
	bad.Owner.ID = 0
	if _, _, err := Apply(bad); err == nil {
		t.Error("root as the owner: accepted")
	}
}

// verifyUnits runs systemd-analyze verify on the staged units, with the
// host's own units copied in for the dependencies they name.
func verifyUnits(t *testing.T, root string) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze is not installed: units not verified")
		return
	}
	for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			must(t, os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755))
			if out, err := exec.Command("cp", "-a", dir, filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v: %s", err, out)
			}
			defer os.RemoveAll(filepath.Join(root, "usr/lib/systemd"))
			break
		}
	}
	cmd := exec.Command("systemd-analyze", "verify", "--root="+root, "/etc/systemd/system/"+DaemonUnit, "/etc/systemd/system/"+HelperUnit)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	// Warnings (a misspelled key) exit 0: the output must be empty too.
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("systemd-analyze verify: %v: %s", err, stderr.String())
	}
	// The helper's exposure as systemd rates it (6.3 MEDIUM before its
	// sandboxing, 2.7 OK with it): a change that widens it past 3.0
	// fails here.
	sec := exec.Command("systemd-analyze", "security", "--offline=yes", "--root="+root, "--threshold=30", "--no-pager", "/etc/systemd/system/"+HelperUnit)
	if out, err := sec.CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze security of the helper: %v:\n%s", err, out)
	} else if !strings.Contains(string(out), "Overall exposure level for "+HelperUnit+": 2.") {
		t.Errorf("the helper's exposure:\n%s", out)
	}
}

// TestUpgradeFromRootLayout gives a root daemon's state, cache and logs
// to the owner, and refuses while that daemon or a VMM still uses them.
func TestUpgradeFromRootLayout(t *testing.T) {
	roottest.Require(t, "it makes users and gives files to them")
	owner, remove, err := roottest.AddUser("bgu")
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	root, from := stage(t, owner)
	old := []string{"var/lib/banger/banger.db", "var/lib/banger/vms/0123/work.ext4", "var/cache/banger/oci/blobs/x", "var/log/banger/bangerd.log"}
	for _, p := range old {
		must(t, os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o700))
		must(t, os.WriteFile(filepath.Join(root, p), []byte("old"), 0o600))
	}
	opts := Options{Root: root, Owner: Account{owner.Name, owner.UID}, OwnerGroup: Account{owner.Name, owner.GID}, From: from}

	lock, err := lockfile.Acquire(filepath.Join(root, "var/lib/banger/bangerd.lock"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Apply(opts); err == nil || !strings.Contains(err.Error(), "banger daemon stop") {
		t.Errorf("with the old daemon running: %v", err)
	}
	must(t, lock.Release())
	vmm := exec.Command("sh", "-c", "sleep 60", filepath.Join(root, "var/lib/banger/vms/0123/work.ext4"))
	must(t, vmm.Start())
	_, _, err = Apply(opts)
	_ = vmm.Process.Kill()
	_ = vmm.Wait()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", vmm.Process.Pid)) {
		t.Errorf("with a VMM running: %v", err)
	}
	if m := metaOf(t, filepath.Join(root, old[0])); m.uid != 0 {
		t.Errorf("a refused upgrade gave away %s", old[0])
	}

	if _, _, err := Apply(opts); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(old, "var/lib/banger/vms", "var/cache/banger/oci/blobs") {
		if m := metaOf(t, filepath.Join(root, p)); m.uid != owner.UID || m.gid != owner.GID {
			t.Errorf("%s: %d:%d after the upgrade", p, m.uid, m.gid)
		}
	}

	// Uninstall keeps the state; --purge removes it.
	must(t, Uninstall(root, false, nil))
	for _, gone := range []string{"usr/local/bin/banger", "usr/local/lib/banger", record.File, "etc/systemd/system/" + DaemonUnit, "etc/systemd/system/" + HelperUnit} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left by uninstall: %v", gone, err)
		}
	}
	for _, kept := range old {
		if _, err := os.Stat(filepath.Join(root, kept)); err != nil {
			t.Errorf("uninstall removed %s: %v", kept, err)
		}
	}
	if err := Uninstall(root, false, nil); !errors.Is(err, record.ErrNotInstalled) {
		t.Errorf("uninstall twice: %v", err)
	}
	must(t, Uninstall(root, true, nil))
	for _, gone := range []string{"var/lib/banger", "var/cache/banger", "var/log/banger", "etc/banger"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left by --purge: %v", gone, err)
		}
	}
}

// TestAddToGroup adds a throwaway user to a throwaway group on the host,
// as install does for kvm, and a second time changes nothing.
func TestAddToGroup(t *testing.T) {
	roottest.Require(t, "it makes users and gives files to them")
	u, remove, err := roottest.AddUser("bgk")
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	group := u.Name + "g"
	if out, err := exec.Command("groupadd", "--system", group).CombinedOutput(); err != nil {
		t.Fatalf("groupadd: %v: %s", err, out)
	}
	defer exec.Command("groupdel", group).Run()
	if added, err := AddToGroup("", u.Name, group); err != nil || !added {
		t.Fatalf("first: %v %v", added, err)
	}
	if added, err := AddToGroup("", u.Name, group); err != nil || added {
		t.Fatalf("second: %v %v", added, err)
	}
	out, _ := exec.Command("id", "-nG", u.Name).Output()
	if !strings.Contains(" "+string(out), " "+group) {
		t.Errorf("id -nG %s: %s", u.Name, out)
	}
	if _, err := AddToGroup("", u.Name, "nosuchgroup"+u.Name); err == nil {
		t.Error("a missing group: accepted")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
