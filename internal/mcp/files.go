package mcp

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangerdev/banger/api"
)

// Bounds of the file tools' answers, for a model's context.
const (
	defaultReadBytes = 64 << 10
	maxReadBytes     = 1 << 20
	defaultListMax   = 500
	defaultSearchMax = 200
)

// ReadIn are file_read's arguments.
type ReadIn struct {
	Name   string `json:"name" jsonschema:"the sandbox's name"`
	Path   string `json:"path" jsonschema:"absolute path of the file"`
	Offset int64  `json:"offset,omitempty" jsonschema:"byte offset to start at"`
	Limit  int64  `json:"limit,omitempty" jsonschema:"bytes to read (default 65536, at most 1048576)"`
}

// ReadOut is file_read's result.
type ReadOut struct {
	Content  string `json:"content"`
	Encoding string `json:"encoding" jsonschema:"utf-8, or base64 for bytes that are not text"`
	Offset   int64  `json:"offset"`
	Bytes    int    `json:"bytes" jsonschema:"bytes read"`
	Size     int64  `json:"size" jsonschema:"the whole file's size"`
	EOF      bool   `json:"eof" jsonschema:"true when the read reached the end of the file"`
}

// WriteIn are file_write's arguments.
type WriteIn struct {
	Name     string `json:"name" jsonschema:"the sandbox's name"`
	Path     string `json:"path" jsonschema:"absolute path of the file (replaced whole)"`
	Content  string `json:"content" jsonschema:"the file's content"`
	Encoding string `json:"encoding,omitempty" jsonschema:"utf-8 (default) or base64"`
	Mode     string `json:"mode,omitempty" jsonschema:"permissions in octal, e.g. 0755 (default 0644)"`
	Parents  bool   `json:"parents,omitempty" jsonschema:"create missing parent directories"`
}

// PathIn names a path in a sandbox.
type PathIn struct {
	Name string `json:"name" jsonschema:"the sandbox's name"`
	Path string `json:"path" jsonschema:"an absolute path"`
}

// ListIn are file_list's arguments.
type ListIn struct {
	Name  string `json:"name" jsonschema:"the sandbox's name"`
	Path  string `json:"path" jsonschema:"absolute path of the directory"`
	Depth int    `json:"depth,omitempty" jsonschema:"levels to list (default 1)"`
	Max   int    `json:"max,omitempty" jsonschema:"entries at most (default 500, at most 10000)"`
}

// GlobIn are file_glob's arguments.
type GlobIn struct {
	Name    string `json:"name" jsonschema:"the sandbox's name"`
	Pattern string `json:"pattern" jsonschema:"an absolute path pattern: * ? [...] within a name, ** for any number of directories (e.g. /workspace/**/*.py)"`
	Max     int    `json:"max,omitempty" jsonschema:"paths at most (default 500, at most 10000)"`
}

// SearchIn are file_search's arguments.
type SearchIn struct {
	Name    string `json:"name" jsonschema:"the sandbox's name"`
	Pattern string `json:"pattern" jsonschema:"a regular expression (RE2 syntax)"`
	Path    string `json:"path,omitempty" jsonschema:"absolute directory to search under (default /workspace)"`
	Include string `json:"include,omitempty" jsonschema:"only files whose name matches this glob, e.g. *.go"`
	Max     int    `json:"max,omitempty" jsonschema:"matching lines at most (default 200, at most 10000)"`
}

// MoveIn are file_move's arguments.
type MoveIn struct {
	Name string `json:"name" jsonschema:"the sandbox's name"`
	From string `json:"from" jsonschema:"absolute path to move"`
	To   string `json:"to" jsonschema:"absolute destination path"`
}

// RemoveIn are file_remove's arguments.
type RemoveIn struct {
	Name      string `json:"name" jsonschema:"the sandbox's name"`
	Path      string `json:"path" jsonschema:"absolute path to remove"`
	Recursive bool   `json:"recursive,omitempty" jsonschema:"remove a directory and everything in it (needs confirm)"`
	Confirm   bool   `json:"confirm,omitempty" jsonschema:"must be true with recursive"`
}

// EntriesOut lists files.
type EntriesOut struct {
	Entries   []api.FileEntry `json:"entries"`
	Truncated bool            `json:"truncated" jsonschema:"true when max cut the list"`
}

// SearchOut is file_search's result.
type SearchOut struct {
	Matches   []api.FileMatch `json:"matches"`
	Truncated bool            `json:"truncated" jsonschema:"true when max cut the matches"`
}

// Done says what an operation did.
type Done struct {
	Path string `json:"path"`
	Size int64  `json:"size,omitempty"`
}

func (s *Server) addFileTools() {
	readOnly := &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)}
	sdk.AddTool(s.srv, &sdk.Tool{Name: "file_read", Title: "Read a file", Annotations: readOnly,
		Description: "Read a file in a sandbox, a part at a time (offset, limit): text as is, other bytes as base64; size and eof say what is left."}, s.fileRead)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "file_write", Title: "Write a file",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(true), IdempotentHint: true, OpenWorldHint: new(false)},
		Description: "Write a file in a sandbox, replacing it whole (never half-written), optionally creating its parent directories and setting its mode."}, s.fileWrite)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "file_list", Title: "List a directory", Annotations: readOnly,
		Description: "List a directory in a sandbox, depth levels down, with each entry's type, size, mode and time."}, s.fileList)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "file_glob", Title: "Find files by pattern", Annotations: readOnly,
		Description: "The paths in a sandbox matching a pattern such as /workspace/**/*_test.go."}, s.fileGlob)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "file_search", Title: "Search file contents", Annotations: readOnly,
		Description: "Search the text files under a directory of a sandbox for a regular expression: path:line:text rows (.git and binary files left out)."}, s.fileSearch)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "file_stat", Title: "Describe a file", Annotations: readOnly,
		Description: "A path's type (file, dir, symlink), size, mode and time; a symlink is described, not followed."}, s.fileStat)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "file_move", Title: "Move a file",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(true), OpenWorldHint: new(false)},
		Description: "Move or rename a file or directory in a sandbox."}, s.fileMove)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "file_remove", Title: "Remove a file",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: new(true), IdempotentHint: true, OpenWorldHint: new(false)},
		Description: "Remove a file or an empty directory in a sandbox; a directory with what is in it only with recursive and confirm: true."}, s.fileRemove)
}

func (s *Server) fileRead(ctx context.Context, _ *sdk.CallToolRequest, in ReadIn) (*sdk.CallToolResult, ReadOut, error) {
	if in.Limit < 0 || in.Limit > maxReadBytes {
		return nil, ReadOut{}, fmt.Errorf("%w: limit %d: read 1 to %d bytes at a time", api.ErrInvalidArgument, in.Limit, maxReadBytes)
	}
	if _, err := s.mine(ctx, in.Name); err != nil {
		return nil, ReadOut{}, err
	}
	limit := in.Limit
	if limit == 0 {
		limit = defaultReadBytes
	}
	r, err := s.d.ReadFile(ctx, api.VMFileReadParams{Name: in.Name, Path: in.Path, Offset: in.Offset, Limit: limit})
	if err != nil {
		return nil, ReadOut{}, err
	}
	out := ReadOut{Offset: in.Offset, Bytes: len(r.Data), Size: r.Size, EOF: r.EOF, Encoding: "utf-8", Content: string(r.Data)}
	if !utf8.Valid(r.Data) {
		out.Encoding, out.Content = "base64", base64.StdEncoding.EncodeToString(r.Data)
	}
	more := ""
	if !r.EOF {
		more = fmt.Sprintf(" (more from offset %d)", in.Offset+int64(len(r.Data)))
	}
	if out.Encoding == "base64" {
		return text("%d bytes of %s, not text: base64 in the structured result%s", out.Bytes, in.Path, more), out, nil
	}
	return text("%s%s", out.Content, more), out, nil
}

func (s *Server) fileWrite(ctx context.Context, _ *sdk.CallToolRequest, in WriteIn) (*sdk.CallToolResult, Done, error) {
	data := []byte(in.Content)
	switch in.Encoding {
	case "", "utf-8":
	case "base64":
		var err error
		if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
			return nil, Done{}, fmt.Errorf("%w: content is not base64: %v", api.ErrInvalidArgument, err)
		}
	default:
		return nil, Done{}, fmt.Errorf("%w: encoding %q: use utf-8 or base64", api.ErrInvalidArgument, in.Encoding)
	}
	var mode uint64
	if in.Mode != "" {
		var err error
		if mode, err = strconv.ParseUint(in.Mode, 8, 32); err != nil || mode > 0o7777 {
			return nil, Done{}, fmt.Errorf("%w: mode %q: give octal permissions such as 0644 or 0755", api.ErrInvalidArgument, in.Mode)
		}
	}
	if _, err := s.mine(ctx, in.Name); err != nil {
		return nil, Done{}, err
	}
	r, err := s.d.WriteFile(ctx, api.VMFileWriteParams{Name: in.Name, Path: in.Path, Data: data, Mode: uint32(mode), Parents: in.Parents})
	if err != nil {
		return nil, Done{}, err
	}
	return text("wrote %d bytes to %s", r.Size, r.Path), Done{Path: r.Path, Size: r.Size}, nil
}

// fs runs one operation on this server's sandbox.
func (s *Server) fs(ctx context.Context, p api.VMFSParams) (api.VMFSResult, error) {
	if _, err := s.mine(ctx, p.Name); err != nil {
		return api.VMFSResult{}, err
	}
	return s.d.FS(ctx, p)
}

func entries(r api.VMFSResult) (*sdk.CallToolResult, EntriesOut) {
	out := EntriesOut{Entries: r.Entries, Truncated: r.Truncated}
	if out.Entries == nil {
		out.Entries = []api.FileEntry{}
	}
	var lines []string
	for _, e := range out.Entries {
		name := e.Path
		if e.Type == "dir" {
			name += "/"
		}
		lines = append(lines, fmt.Sprintf("%s %d", name, e.Size))
	}
	cut := ""
	if r.Truncated {
		cut = "\n(cut at max; ask for more, or less depth)"
	}
	return text("%s%s", strings.Join(lines, "\n"), cut), out
}

func (s *Server) fileList(ctx context.Context, _ *sdk.CallToolRequest, in ListIn) (*sdk.CallToolResult, EntriesOut, error) {
	r, err := s.fs(ctx, api.VMFSParams{Name: in.Name, Op: api.FSList, Path: in.Path, Depth: in.Depth, Max: cmp.Or(in.Max, defaultListMax)})
	if err != nil {
		return nil, EntriesOut{}, err
	}
	res, out := entries(r)
	return res, out, nil
}

func (s *Server) fileGlob(ctx context.Context, _ *sdk.CallToolRequest, in GlobIn) (*sdk.CallToolResult, EntriesOut, error) {
	r, err := s.fs(ctx, api.VMFSParams{Name: in.Name, Op: api.FSGlob, Path: in.Pattern, Max: cmp.Or(in.Max, defaultListMax)})
	if err != nil {
		return nil, EntriesOut{}, err
	}
	res, out := entries(r)
	return res, out, nil
}

func (s *Server) fileSearch(ctx context.Context, _ *sdk.CallToolRequest, in SearchIn) (*sdk.CallToolResult, SearchOut, error) {
	dir := in.Path
	if dir == "" {
		dir = "/workspace"
	}
	r, err := s.fs(ctx, api.VMFSParams{Name: in.Name, Op: api.FSSearch, Path: dir, Pattern: in.Pattern, Include: in.Include, Max: cmp.Or(in.Max, defaultSearchMax)})
	if err != nil {
		return nil, SearchOut{}, err
	}
	out := SearchOut{Matches: r.Matches, Truncated: r.Truncated}
	if out.Matches == nil {
		out.Matches = []api.FileMatch{}
	}
	rows := make([]string, 0, len(out.Matches))
	for _, m := range out.Matches {
		rows = append(rows, fmt.Sprintf("%s:%d:%s", m.Path, m.Line, m.Text))
	}
	if r.Truncated {
		rows = append(rows, "(cut at max)")
	}
	if len(rows) == 0 {
		return text("no match"), out, nil
	}
	return text("%s", strings.Join(rows, "\n")), out, nil
}

func (s *Server) fileStat(ctx context.Context, _ *sdk.CallToolRequest, in PathIn) (*sdk.CallToolResult, api.FileEntry, error) {
	r, err := s.fs(ctx, api.VMFSParams{Name: in.Name, Op: api.FSStat, Path: in.Path})
	if err != nil {
		return nil, api.FileEntry{}, err
	}
	e := r.Entries[0]
	return text("%s: %s, %d bytes, mode %04o", e.Path, e.Type, e.Size, e.Mode), e, nil
}

func (s *Server) fileMove(ctx context.Context, _ *sdk.CallToolRequest, in MoveIn) (*sdk.CallToolResult, Done, error) {
	if _, err := s.fs(ctx, api.VMFSParams{Name: in.Name, Op: api.FSMove, Path: in.From, To: in.To}); err != nil {
		return nil, Done{}, err
	}
	return text("moved %s to %s", in.From, in.To), Done{Path: in.To}, nil
}

func (s *Server) fileRemove(ctx context.Context, _ *sdk.CallToolRequest, in RemoveIn) (*sdk.CallToolResult, Done, error) {
	if in.Recursive && !in.Confirm {
		return nil, Done{}, fmt.Errorf("%w: a recursive remove deletes %s and everything in it; call again with confirm: true if that is meant", api.ErrInvalidArgument, in.Path)
	}
	if _, err := s.fs(ctx, api.VMFSParams{Name: in.Name, Op: api.FSRemove, Path: in.Path, Recursive: in.Recursive}); err != nil {
		return nil, Done{}, err
	}
	return text("removed %s", in.Path), Done{Path: in.Path}, nil
}
