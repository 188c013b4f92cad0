package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
)

// Files reads, writes and manages a running VM's files through its agent
// (a suspended VM is resumed first, as exec does). What the guest
// answers is checked (client.CheckFS) and bounded before it is passed on.
type Files struct{ saved *saved }

// Files is the VMs' file operations.
func (s *Service) Files() *Files { return &Files{saved: s.saved} }

// defaultRead is a read's size when the caller gives none.
const defaultRead = 1 << 20

// guestPath checks a path the caller gives for the guest.
func guestPath(what, p string) error {
	if !path.IsAbs(p) || len(p) > 4096 || strings.ContainsRune(p, 0) {
		return fmt.Errorf("%w: %s %q: give an absolute path in the guest, such as /workspace/main.go", api.ErrInvalidArgument, what, p)
	}
	return nil
}

// Read is a part of a guest file.
func (f *Files) Read(ctx context.Context, p api.VMFileReadParams) (api.VMFileReadResult, error) {
	if err := guestPath("path", p.Path); err != nil {
		return api.VMFileReadResult{}, err
	}
	if p.Offset < 0 || p.Limit < 0 || p.Limit > api.MaxFileRead {
		return api.VMFileReadResult{}, fmt.Errorf("%w: offset %d, limit %d: read at most %d bytes from a non-negative offset", api.ErrInvalidArgument, p.Offset, p.Limit, api.MaxFileRead)
	}
	limit := p.Limit
	if limit == 0 {
		limit = defaultRead
	}
	rec, c, err := f.saved.awake(ctx, p.Name)
	if err != nil {
		return api.VMFileReadResult{}, err
	}
	var b bytes.Buffer
	r, err := c.ReadFileRange(ctx, proto.FileParams{Path: p.Path, Offset: p.Offset, Limit: limit}, &b)
	if err != nil {
		return api.VMFileReadResult{}, fmt.Errorf("vm %s: reading %s: %w", rec.Name, p.Path, agentErr(err))
	}
	return api.VMFileReadResult{Data: b.Bytes(), Size: r.Total, EOF: p.Offset+int64(b.Len()) >= r.Total}, nil
}

// Write replaces a guest file whole.
func (f *Files) Write(ctx context.Context, p api.VMFileWriteParams) (api.VMFileWriteResult, error) {
	if err := guestPath("path", p.Path); err != nil {
		return api.VMFileWriteResult{}, err
	}
	if len(p.Data) > api.MaxFileWrite || p.Mode > 0o7777 {
		return api.VMFileWriteResult{}, fmt.Errorf("%w: %d bytes, mode %o: write at most %d bytes with a mode of at most 7777", api.ErrInvalidArgument, len(p.Data), p.Mode, api.MaxFileWrite)
	}
	rec, c, err := f.saved.awake(ctx, p.Name)
	if err != nil {
		return api.VMFileWriteResult{}, err
	}
	n, err := c.WriteFileWith(ctx, proto.FileParams{Path: p.Path, Mode: p.Mode, Parents: p.Parents}, bytes.NewReader(p.Data))
	if err != nil {
		return api.VMFileWriteResult{}, fmt.Errorf("vm %s: %w", rec.Name, agentErr(err))
	}
	return api.VMFileWriteResult{Path: p.Path, Size: n}, nil
}

// FS does one file-system operation in the guest.
func (f *Files) FS(ctx context.Context, p api.VMFSParams) (api.VMFSResult, error) {
	switch p.Op {
	case api.FSStat, api.FSList, api.FSMkdir, api.FSRemove, api.FSGlob, api.FSSearch:
	case api.FSMove:
		if err := guestPath("to", p.To); err != nil {
			return api.VMFSResult{}, err
		}
	default:
		return api.VMFSResult{}, fmt.Errorf("%w: op %q: use stat, list, mkdir, move, remove, glob or search", api.ErrInvalidArgument, p.Op)
	}
	if err := guestPath("path", p.Path); err != nil {
		return api.VMFSResult{}, err
	}
	if p.Max < 0 || p.Max > client.MaxFSEntries || p.Depth < 0 || len(p.Pattern) > 4096 || len(p.Include) > 255 {
		return api.VMFSResult{}, fmt.Errorf("%w: max %d, depth %d: give max 0 to %d, a depth of 0 or more, a pattern under 4 KiB", api.ErrInvalidArgument, p.Max, p.Depth, client.MaxFSEntries)
	}
	if p.Op == api.FSSearch && p.Pattern == "" {
		return api.VMFSResult{}, fmt.Errorf("%w: search needs a pattern (a regular expression)", api.ErrInvalidArgument)
	}
	rec, c, err := f.saved.awake(ctx, p.Name)
	if err != nil {
		return api.VMFSResult{}, err
	}
	r, err := c.FS(ctx, proto.FSParams{Op: p.Op, Path: p.Path, To: p.To, Depth: p.Depth, Max: p.Max, Recursive: p.Recursive, Pattern: p.Pattern, Include: p.Include})
	if err != nil {
		return api.VMFSResult{}, fmt.Errorf("vm %s: %s %s: %w", rec.Name, p.Op, p.Path, agentErr(err))
	}
	res := api.VMFSResult{Truncated: r.Truncated}
	for _, e := range r.Entries {
		res.Entries = append(res.Entries, api.FileEntry{Path: e.Path, Type: typeName(e.Type), Mode: e.Mode, Size: e.Size, ModTime: e.ModTime, Link: e.Link})
	}
	for _, m := range r.Matches {
		res.Matches = append(res.Matches, api.FileMatch(m))
	}
	return res, nil
}

// typeName spells the agent's one-letter file type.
func typeName(t string) string {
	switch t {
	case "f":
		return "file"
	case "d":
		return "dir"
	case "l":
		return "symlink"
	}
	return "other"
}

// agentErr marks an answer the guest broke the protocol with as the
// guest's refusal; the agent's own errors (no such file) pass as they are.
func agentErr(err error) error {
	if errors.Is(err, proto.ErrFrame) {
		return fmt.Errorf("%w: %w", api.ErrGuestRefused, err)
	}
	return err
}
