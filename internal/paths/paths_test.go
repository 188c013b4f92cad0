package paths

import (
	"errors"
	"strings"
	"testing"
)

func env(vars map[string]string) Env {
	return Env{Getenv: func(k string) string { return vars[k] }, UID: 1000, HomeDir: "/home/ada"}
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name   string
		vars   map[string]string
		system bool
		want   Layout
	}{
		{
			name: "user defaults",
			want: Layout{Mode: ModeUser, ConfigDir: "/home/ada/.config/banger", StateDir: "/home/ada/.local/share/banger",
				CacheDir: "/home/ada/.cache/banger", RuntimeDir: "/tmp/banger-1000", LogDir: "/home/ada/.local/state/banger"},
		},
		{
			name: "user xdg",
			vars: map[string]string{"XDG_CONFIG_HOME": "/c", "XDG_DATA_HOME": "/d", "XDG_CACHE_HOME": "/k", "XDG_STATE_HOME": "/s", "XDG_RUNTIME_DIR": "/run/user/1000"},
			want: Layout{Mode: ModeUser, ConfigDir: "/c/banger", StateDir: "/d/banger", CacheDir: "/k/banger", RuntimeDir: "/run/user/1000/banger", LogDir: "/s/banger"},
		},
		{
			name: "relative xdg ignored",
			vars: map[string]string{"XDG_CONFIG_HOME": "rel", "XDG_RUNTIME_DIR": "run"},
			want: Layout{Mode: ModeUser, ConfigDir: "/home/ada/.config/banger", StateDir: "/home/ada/.local/share/banger",
				CacheDir: "/home/ada/.cache/banger", RuntimeDir: "/tmp/banger-1000", LogDir: "/home/ada/.local/state/banger"},
		},
		{
			name:   "system flag",
			system: true,
			want:   System(),
		},
		{
			name: "system env",
			vars: map[string]string{"BANGER_MODE": "system"},
			want: System(),
		},
		{
			name:   "home wins over system",
			vars:   map[string]string{"BANGER_HOME": "/tmp/bh", "BANGER_MODE": "system"},
			system: true,
			want: Layout{Mode: ModeHome, Home: "/tmp/bh", ConfigDir: "/tmp/bh", StateDir: "/tmp/bh/state",
				CacheDir: "/tmp/bh/cache", RuntimeDir: "/tmp/bh/run", LogDir: "/tmp/bh/logs"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(env(tc.vars), tc.system)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Resolve =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

func TestSystemPaths(t *testing.T) {
	l := System()
	if l.Socket() != "/run/banger/bangerd.sock" || l.StateDir != "/var/lib/banger" || l.CacheDir != "/var/cache/banger" {
		t.Fatalf("system layout = %+v, socket %s", l, l.Socket())
	}
}

func TestHomeRelocatesEverything(t *testing.T) {
	l, err := Resolve(env(map[string]string{"BANGER_HOME": "/srv/b"}), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{l.ConfigFile(), l.Socket(), l.LockFile(), l.Database(), l.LogFile(), l.StartupLog(), l.OCICacheDir()} {
		if !strings.HasPrefix(p, "/srv/b/") {
			t.Errorf("%s is outside BANGER_HOME", p)
		}
	}
	for _, d := range l.Dirs() {
		if !strings.HasPrefix(d.Path+"/", "/srv/b/") || d.Mode != 0o700 {
			t.Errorf("dir %+v", d)
		}
	}
}

func TestSocketTooLong(t *testing.T) {
	_, err := Resolve(env(map[string]string{"BANGER_HOME": "/" + strings.Repeat("x", 120)}), false)
	if !errors.Is(err, ErrSocketPathTooLong) || !strings.Contains(err.Error(), "shorter BANGER_HOME") {
		t.Fatalf("err = %v", err)
	}
}

func TestUserWithoutHome(t *testing.T) {
	_, err := Resolve(Env{Getenv: func(string) string { return "" }}, false)
	if err == nil || !strings.Contains(err.Error(), "BANGER_HOME") {
		t.Fatalf("err = %v", err)
	}
}
