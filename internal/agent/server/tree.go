package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/tree"
)

// putTree extracts the caller's tar stream into p.Dir, all or nothing;
// the manifests' cache learns the files' hashes as they are written.
func putTree(s *Server, c *call, p proto.PutTreeParams) (proto.TreeResult, error) {
	in := c.in(nil)
	r, err := tree.Extract(in, p, tree.Local{Cache: &s.manifests})
	if err == nil {
		err = finish(p)
	}
	if err != nil {
		_, _ = io.Copy(io.Discard, in) // the rest of what the caller sends
	}
	return r, err
}

// getTree streams a tar of the paths the caller sends (NUL-separated, on
// stdin) under p.Dir.
func getTree(_ *Server, c *call, p proto.GetTreeParams) (proto.TreeResult, error) {
	list, err := io.ReadAll(io.LimitReader(c.in(nil), 64<<20))
	if err != nil {
		return proto.TreeResult{}, fmt.Errorf("reading get_tree paths: %v", err)
	}
	var paths []string
	for _, p := range strings.Split(string(list), "\x00") {
		if p != "" {
			paths = append(paths, p)
		}
	}
	return tree.Write(c.out(proto.Stdout), tree.Spec{Dir: p.Dir, Paths: paths})
}

// manifest lists the tree under p.Dir with hashes. The list goes as
// stdout, one JSON entry per line: a large tree's would not fit the
// answer's frame.
func manifest(s *Server, c *call, p proto.ManifestParams) (proto.ManifestResult, error) {
	entries, err := s.manifests.Manifest(p.Dir, p.Exclude)
	if err == nil {
		w := bufio.NewWriterSize(c.out(proto.Stdout), 128<<10)
		enc := json.NewEncoder(w)
		for _, e := range entries {
			if err = enc.Encode(e); err != nil {
				break
			}
		}
		if ferr := w.Flush(); err == nil {
			err = ferr
		}
	}
	return proto.ManifestResult{Count: len(entries)}, err
}

// ReadOnlyMarker records, on the guest's disk, the directories the agent
// bind-mounts read-only at every boot.
const ReadOnlyMarker = "/etc/banger/readonly"

// finish applies what a put asks once its files are in place.
func finish(p proto.PutTreeParams) error {
	if !p.ReadOnly {
		return nil
	}
	if err := MountReadOnly(p.Dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(ReadOnlyMarker), 0o755); err != nil {
		return err
	}
	return os.WriteFile(ReadOnlyMarker, []byte(p.Dir+"\n"), 0o644)
}

// MountReadOnly bind-mounts dir over itself, read-only.
func MountReadOnly(dir string) error {
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("making %s read-only: %w", dir, err)
	}
	return nil
}
