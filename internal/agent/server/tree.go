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

	"github.com/bangerdev/banger/internal/agent/link"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/tree"
)

// handleTree serves the tree methods.
func (s *Server) handleTree(l *link.Link, stream uint32, req proto.Request, ch <-chan proto.Frame) {
	switch req.Method {
	case proto.MethodPutTree:
		var p proto.PutTreeParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			s.respond(l, stream, nil, fmt.Errorf("bad put_tree params: %v", err))
			return
		}
		in := l.NewReader(ch, proto.Stdin, nil)
		r, err := tree.Extract(in, p, tree.Local{})
		if err == nil {
			err = finish(p)
		}
		if err != nil {
			_, _ = io.Copy(io.Discard, in) // the rest of what the caller sends
		}
		s.respond(l, stream, r, err)
	case proto.MethodGetTree:
		var p proto.GetTreeParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			s.respond(l, stream, nil, fmt.Errorf("bad get_tree params: %v", err))
			return
		}
		list, err := io.ReadAll(io.LimitReader(l.NewReader(ch, proto.Stdin, nil), 64<<20))
		if err != nil {
			s.respond(l, stream, nil, fmt.Errorf("reading get_tree paths: %v", err))
			return
		}
		var paths []string
		for _, p := range strings.Split(string(list), "\x00") {
			if p != "" {
				paths = append(paths, p)
			}
		}
		r, err := tree.Write(l.NewWriter(stream, proto.Stdout), tree.Spec{Dir: p.Dir, Paths: paths})
		s.respond(l, stream, r, err)
	case proto.MethodManifest:
		var p proto.ManifestParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			s.respond(l, stream, nil, fmt.Errorf("bad manifest params: %v", err))
			return
		}
		// The list goes as stdout, one JSON entry per line: a large tree's
		// would not fit the answer's frame.
		entries, err := tree.Manifest(p.Dir, p.Exclude)
		if err == nil {
			w := bufio.NewWriterSize(l.NewWriter(stream, proto.Stdout), 128<<10)
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
		s.respond(l, stream, proto.ManifestResult{Count: len(entries)}, err)
	}
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
