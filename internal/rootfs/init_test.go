package rootfs

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestInit: an image's systemd is found where Debian, usr-merged or
// not, keeps it, through links resolved inside the image; a look-alike
// (not executable, a directory, another program as /sbin/init, a link
// out of the image or in a loop) is no init.
func TestInit(t *testing.T) {
	usrMerged := []ent{
		{name: "usr/lib/systemd/", typ: tar.TypeDir},
		{name: "usr/sbin/", typ: tar.TypeDir},
		{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
		{name: "sbin", typ: tar.TypeSymlink, link: "usr/sbin"},
		{name: "usr/lib/systemd/systemd", body: "ELF", mode: 0o755},
	}
	for _, tc := range []struct {
		name   string
		layers [][]ent
		want   string
	}{
		{name: "none", layers: [][]ent{{{name: "bin/sh", body: "x", mode: 0o755}}}},
		{name: "usr-merged with systemd-sysv", layers: [][]ent{append(usrMerged,
			ent{name: "usr/sbin/init", typ: tar.TypeSymlink, link: "../lib/systemd/systemd"})}, want: "/sbin/init"},
		{name: "usr-merged without systemd-sysv", layers: [][]ent{usrMerged}, want: "/lib/systemd/systemd"},
		{name: "absolute link", layers: [][]ent{{
			{name: "lib/systemd/systemd", body: "ELF", mode: 0o755},
			{name: "sbin/init", typ: tar.TypeSymlink, link: "/lib/systemd/systemd"},
		}}, want: "/sbin/init"},
		{name: "in a later layer", layers: [][]ent{
			{{name: "sbin/init", body: "busybox", mode: 0o755}},
			{{name: "usr/lib/systemd/systemd", body: "ELF", mode: 0o755}, {name: "sbin/.wh.init"}, {name: "sbin/init", typ: tar.TypeSymlink, link: "/usr/lib/systemd/systemd"}},
		}, want: "/sbin/init"},
		{name: "another init", layers: [][]ent{{{name: "sbin/init", body: "busybox", mode: 0o755}}}},
		{name: "not executable", layers: [][]ent{{{name: "lib/systemd/systemd", body: "ELF", mode: 0o644}}}},
		{name: "a directory", layers: [][]ent{{{name: "lib/systemd/systemd/", typ: tar.TypeDir}}}},
		{name: "link climbing out stays inside", layers: [][]ent{{
			{name: "usr/lib/systemd/systemd", body: "ELF", mode: 0o755},
			{name: "sbin/init", typ: tar.TypeSymlink, link: "../../../../usr/lib/systemd/systemd"},
		}}, want: "/sbin/init"},
		// What reaches the guest's command line is the fixed name, never
		// the image's link target (here one with words of its own).
		{name: "target with command line words", layers: [][]ent{{
			{name: "x banger.ssh_keys=AAAA init=/bin/sh/systemd", body: "ELF", mode: 0o755},
			{name: "sbin/init", typ: tar.TypeSymlink, link: "/x banger.ssh_keys=AAAA init=/bin/sh/systemd"},
		}}, want: "/sbin/init"},
		{name: "link loop", layers: [][]ent{{
			{name: "sbin/init", typ: tar.TypeSymlink, link: "/sbin/init2"},
			{name: "sbin/init2", typ: tar.TypeSymlink, link: "/sbin/init"},
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tars [][]byte
			for _, l := range tc.layers {
				tars = append(tars, layerTar(t, l...))
			}
			f, err := os.Create(filepath.Join(t.TempDir(), "rootfs.ext4"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, err := Build(context.Background(), memLayers(tars...), f, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if st.Init != tc.want {
				t.Fatalf("Init = %q, want %q", st.Init, tc.want)
			}
		})
	}
}
