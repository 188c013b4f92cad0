package api

// File transfers through the API are bounded: a read answers at most
// MaxFileRead bytes, a write carries at most MaxFileWrite (both travel in
// one frame, base64 in JSON).
const (
	MaxFileRead  = 4 << 20
	MaxFileWrite = 4 << 20
)

// VMFileReadParams are the params of MethodVMFileRead: Limit bytes (0:
// 1 MiB; at most MaxFileRead) of the guest file Path from Offset.
type VMFileReadParams struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Offset int64  `json:"offset,omitempty"`
	Limit  int64  `json:"limit,omitempty"`
}

// VMFileReadResult answers MethodVMFileRead.
type VMFileReadResult struct {
	Data []byte `json:"data"`
	Size int64  `json:"size"` // the whole file's
	// EOF: the part read reaches the file's end.
	EOF bool `json:"eof"`
}

// VMFileWriteParams are the params of MethodVMFileWrite: Data replaces
// the guest file Path whole (written beside, then renamed).
type VMFileWriteParams struct {
	Name string `json:"name"`
	Path string `json:"path"`
	Data []byte `json:"data"`
	Mode uint32 `json:"mode,omitempty"` // default 0644
	// Parents creates missing parent directories.
	Parents bool `json:"parents,omitempty"`
}

// VMFileWriteResult answers MethodVMFileWrite.
type VMFileWriteResult struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// File-system operations of MethodVMFS.
const (
	FSStat   = "stat"
	FSList   = "list"
	FSMkdir  = "mkdir"
	FSMove   = "move"
	FSRemove = "remove"
	FSGlob   = "glob"
	FSSearch = "search"
)

// VMFSParams are the params of MethodVMFS. Paths are absolute.
type VMFSParams struct {
	Name string `json:"name"`
	Op   string `json:"op"`
	// Path is what the operation is on; for glob, the pattern ("**" any
	// number of directories).
	Path  string `json:"path"`
	To    string `json:"to,omitempty"`    // move
	Depth int    `json:"depth,omitempty"` // list: levels (default 1)
	// Max bounds entries or matches (default and at most 10000).
	Max       int    `json:"max,omitempty"`
	Recursive bool   `json:"recursive,omitempty"` // remove: a directory and all in it
	Pattern   string `json:"pattern,omitempty"`   // search: a regular expression (RE2)
	Include   string `json:"include,omitempty"`   // search: only files whose name matches ("*.go")
}

// FileEntry is a guest file as stat, list and glob see it.
type FileEntry struct {
	Path    string `json:"path"`
	Type    string `json:"type"` // file, dir, symlink or other
	Mode    uint32 `json:"mode"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime"` // Unix seconds
	Link    string `json:"link,omitempty"`
}

// FileMatch is a line a search found.
type FileMatch struct {
	Path string `json:"path"`
	Line int    `json:"line"`
	Text string `json:"text"`
}

// VMFSResult answers MethodVMFS.
type VMFSResult struct {
	Entries []FileEntry `json:"entries,omitempty"`
	Matches []FileMatch `json:"matches,omitempty"`
	// Truncated: Max cut the answer.
	Truncated bool `json:"truncated,omitempty"`
}
