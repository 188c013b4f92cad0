package passwd

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeEtc(t *testing.T, passwd, group string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"passwd": passwd, "group": group} {
		if body == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestLookup(t *testing.T) {
	root := writeEtc(t,
		"root:x:0:0:root:/root:/bin/bash\n# comment\nbroken line\ndev:x:1000:1000:Dev,,,:/home/dev:/bin/zsh\nnohome:x:1001:100:::\n",
		"root:x:0:\nwheel:x:10:dev,other\ndev:x:1000:\ndocker:x:999:dev\n")
	for _, tc := range []struct {
		user string
		want Account
		err  error
	}{
		{"", Account{Name: "root", Home: "/root", Shell: "/bin/bash", Groups: []uint32{0}}, nil},
		{"dev", Account{Name: "dev", UID: 1000, GID: 1000, Home: "/home/dev", Shell: "/bin/zsh", Groups: []uint32{1000, 10, 999}}, nil},
		{"1000", Account{Name: "dev", UID: 1000, GID: 1000, Home: "/home/dev", Shell: "/bin/zsh", Groups: []uint32{1000, 10, 999}}, nil},
		{"nohome", Account{Name: "nohome", UID: 1001, GID: 100, Home: "/", Groups: []uint32{100}}, nil},
		{"4242", Account{Name: "4242", UID: 4242, GID: 4242, Home: "/", Groups: []uint32{4242}}, nil},
		{"ghost", Account{}, ErrUnknownUser},
	} {
		got, err := Lookup(root, tc.user)
		if !errors.Is(err, tc.err) || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v, %v", tc.user, got, err, tc.want, tc.err)
		}
	}
}

func TestLookupWithoutPasswd(t *testing.T) {
	root := writeEtc(t, "", "")
	got, err := Lookup(root, "root")
	if err != nil || got.UID != 0 || got.Home != "/root" {
		t.Fatalf("root without passwd = %+v, %v", got, err)
	}
	if _, err := Lookup(root, "dev"); !errors.Is(err, ErrUnknownUser) || !strings.Contains(err.Error(), "dev") {
		t.Fatalf("named user without passwd = %v", err)
	}
}

func FuzzLookup(f *testing.F) {
	f.Add("root:x:0:0:root:/root:/bin/sh\n", "wheel:x:10:root\n", "root")
	f.Add("a:b:c:d:e:f:g\n", "::::\n", "a")
	f.Fuzz(func(t *testing.T, passwd, group, user string) {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "etc"), 0o755)
		os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(passwd), 0o644)
		os.WriteFile(filepath.Join(root, "etc/group"), []byte(group), 0o644)
		acct, err := Lookup(root, user)
		if err == nil && (acct.Name == "" || len(acct.Groups) == 0 || acct.Groups[0] != acct.GID) {
			t.Fatalf("Lookup(%q) = %+v", user, acct)
		}
	})
}

func TestNames(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("passwd", "root:x:0:0:root:/root:/bin/sh\n# a comment\nuser:x:1000:1000::/home/user:/bin/bash\nbroken\nalias:x:1000:1000::/:\nbad:x:nan:0::/:\n")
	write("group", "root:x:0:\nuser:x:1000:\nstaff:x:50:user\n")
	users, groups, err := Names(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users[0] != "root" || users[1000] != "user" || len(groups) != 3 || groups[50] != "staff" {
		t.Fatalf("users %v groups %v", users, groups)
	}
	if u, g, err := Names(t.TempDir()); err != nil || len(u)+len(g) != 0 {
		t.Fatalf("no files: %v %v %v", u, g, err)
	}
}
