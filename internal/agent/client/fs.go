package client

import (
	"context"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// Bounds on what an fs answer may hold, whatever the guest sends.
const (
	MaxFSEntries  = 10000 // entries or matches of one answer
	maxFSPath     = 4096
	maxMatchText  = 2048 // a matching line's text (the agent sends 400 bytes)
	maxEntryTypes = "fdlo"
)

// FS does one file-system operation in the guest. The answer is checked
// against the question (CheckFS): a guest that breaks it gets a bad frame
// error, never a caller's trust.
func (c *Client) FS(ctx context.Context, p proto.FSParams) (proto.FSResult, error) {
	var r proto.FSResult
	if err := c.Call(ctx, proto.MethodFS, p, &r); err != nil {
		return proto.FSResult{}, err
	}
	if err := CheckFS(p, r); err != nil {
		return proto.FSResult{}, err
	}
	return r, nil
}

// CheckFS checks a guest's fs answer to p: counts within p.Max (and
// MaxFSEntries), absolute clean paths of sane length under what was asked
// about, known types, bounded text.
func CheckFS(p proto.FSParams, r proto.FSResult) error {
	most := p.Max
	if most <= 0 || most > MaxFSEntries {
		most = MaxFSEntries
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: fs %s: %s", proto.ErrFrame, p.Op, fmt.Sprintf(format, args...))
	}
	if len(r.Entries) > most || len(r.Matches) > most {
		return bad("%d entries and %d matches, at most %d asked", len(r.Entries), len(r.Matches), most)
	}
	switch p.Op {
	case proto.FSStat:
		if len(r.Entries) != 1 || len(r.Matches) != 0 {
			return bad("%d entries for one path", len(r.Entries))
		}
	case proto.FSList, proto.FSGlob:
		if len(r.Matches) != 0 {
			return bad("matches in a listing")
		}
	case proto.FSSearch:
		if len(r.Entries) != 0 {
			return bad("entries in a search")
		}
	default:
		if len(r.Entries)+len(r.Matches) != 0 || r.Truncated {
			return bad("an answer where none was due")
		}
	}
	under := path.Clean(p.Path)
	within := func(q string) bool {
		if p.Op == proto.FSGlob || p.Op == proto.FSStat {
			return true
		}
		return q == under || strings.HasPrefix(q, strings.TrimSuffix(under, "/")+"/")
	}
	checkPath := func(q string) error {
		switch {
		case len(q) > maxFSPath || !path.IsAbs(q) || path.Clean(q) != q || strings.ContainsRune(q, 0):
			return bad("path %.80q", q)
		case !within(q):
			return bad("%.80q is not under %.80q", q, under)
		}
		return nil
	}
	for _, e := range r.Entries {
		if err := checkPath(e.Path); err != nil {
			return err
		}
		if len(e.Type) != 1 || !strings.Contains(maxEntryTypes, e.Type) || e.Size < 0 || e.Mode > 0o7777 || len(e.Link) > maxFSPath {
			return bad("entry %.80q: type %.8q, size %d, mode %o", e.Path, e.Type, e.Size, e.Mode)
		}
		if !accountName(e.Owner) || !accountName(e.Group) {
			return bad("entry %.80q: owner %.40q, group %.40q", e.Path, e.Owner, e.Group)
		}
	}
	for _, m := range r.Matches {
		if err := checkPath(m.Path); err != nil {
			return err
		}
		if m.Line < 1 || len(m.Text) > maxMatchText {
			return bad("match %.80q:%d of %d bytes", m.Path, m.Line, len(m.Text))
		}
	}
	return nil
}

// ReadFileRange copies at most limit bytes (0: all) of a guest file from
// offset to w; more than limit from the guest is a bad frame.
func (c *Client) ReadFileRange(ctx context.Context, p proto.FileParams, w io.Writer) (proto.FileResult, error) {
	var res proto.FileResult
	if p.Limit > 0 {
		w = &capWriter{w: w, left: p.Limit}
	}
	err := c.download(ctx, proto.MethodReadFile, p, nil, w, &res)
	return res, err
}

// capWriter fails a write past its bytes.
type capWriter struct {
	w    io.Writer
	left int64
}

func (c *capWriter) Write(b []byte) (int, error) {
	if int64(len(b)) > c.left {
		return 0, fmt.Errorf("%w: read_file sent more than it was asked", proto.ErrFrame)
	}
	c.left -= int64(len(b))
	return c.w.Write(b)
}

// WriteFileWith writes r to a guest file as p says (mode, parents).
func (c *Client) WriteFileWith(ctx context.Context, p proto.FileParams, r io.Reader) (int64, error) {
	var res proto.FileResult
	if err := c.upload(ctx, proto.MethodWriteFile, p, r, &res); err != nil {
		return 0, fmt.Errorf("sending %s: %w", p.Path, err)
	}
	return res.Size, nil
}

// accountName: empty, or a user or group name as passwd files hold them
// (at most 32 of [A-Za-z0-9._-], a trailing '$' for machine accounts,
// not starting with '-'), or a number.
func accountName(s string) bool {
	if s == "" {
		return true
	}
	if len(s) > 32 || s[0] == '-' {
		return false
	}
	s = strings.TrimSuffix(s, "$")
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == ""
}
