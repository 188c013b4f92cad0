package rootfs

import (
	"archive/tar"
	"strings"
)

// systemdPaths are where an image keeps systemd, in the order an init is
// taken from: /sbin/init when it is systemd (systemd-sysv), else systemd
// itself. The host only ever names one of these to a guest.
var systemdPaths = []string{"/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd"}

// IsInit says whether p is one of the places an init is taken from.
func IsInit(p string) bool {
	for _, s := range systemdPaths {
		if p == s {
			return true
		}
	}
	return false
}

// systemd is the first of systemdPaths that resolves, inside the image,
// to an executable regular file named systemd; "" when none does.
func (t *tree) systemd() string {
	for _, p := range systemdPaths {
		n := t.lookup(p)
		if n != nil && n.ino != nil && n.ino.hdr.Typeflag == tar.TypeReg && n.ino.hdr.Mode&0o111 != 0 && n.name == "systemd" {
			return p
		}
	}
	return ""
}

// lookup finds the node at p, following symbolic links (the last
// component's too) inside the root as a chroot would; nil when nothing
// is there or the links loop.
func (t *tree) lookup(p string) *node {
	parts, err := cleanName(p)
	if err != nil || len(parts) == 0 {
		return nil
	}
	depth := 0
	for {
		dir, err := t.resolveDir(parts[:len(parts)-1], nil, &depth)
		if err != nil || dir == nil {
			return nil
		}
		last := parts[len(parts)-1]
		switch last {
		case ".", "":
			return dir
		case "..":
			return dir.parent
		}
		n := dir.children[last]
		if n == nil || !n.isSymlink() {
			return n
		}
		if depth++; depth > maxSymlinks {
			return nil
		}
		target := n.ino.hdr.Linkname
		if !strings.HasPrefix(target, "/") {
			target = t.pathOf(dir) + "/" + target
		}
		// Not cleaned: ".." is resolved component by component, so a
		// link's parent is the directory it is reached through.
		parts = strings.Split(strings.TrimPrefix(target, "/"), "/")
		if len(parts) > maxDepth {
			return nil
		}
	}
}
