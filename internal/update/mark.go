package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/bangerdev/banger/internal/release"
	"github.com/bangerdev/banger/internal/wholefile"
)

// MarkName is the usual name of Host.MarkFile, beside the binaries (root's
// directory, installed).
const MarkName = ".banger-update-mark.json"

// Mark is the high-water mark of the indexes this host has verified: an
// index issued before IndexIssued is refused (a mirror replaying an old
// one to hold an update back); Version is the newest release a verified
// index listed, for messages.
type Mark struct {
	IndexIssued time.Time `json:"index_issued"`
	Version     string    `json:"version,omitempty"`
}

// maxMark bounds the mark file read.
const maxMark = 4 << 10

// ReadMark reads the mark at path; none yet (or no path) is the zero
// mark. A mark that does not parse is refused: losing it would let an
// old index in again.
func ReadMark(path string) (Mark, error) {
	var m Mark
	if path == "" {
		return m, nil
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return m, nil
	case err != nil:
		return m, fmt.Errorf("reading the update mark: %w", err)
	case len(b) > maxMark:
		return m, fmt.Errorf("reading the update mark %s: %d bytes; remove it if you trust the next index you fetch", path, len(b))
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("reading the update mark %s: %w; remove it if you trust the next index you fetch", path, err)
	}
	return m, nil
}

// Raise records an index issued at issued listing up to version, when it
// is newer than what m holds, at path (written beside and renamed).
func (m Mark) Raise(path string, issued time.Time, version string) error {
	if path == "" {
		return nil
	}
	n := m
	if issued.After(n.IndexIssued) {
		n.IndexIssued = issued.UTC()
	}
	if release.ValidVersion(version) && (n.Version == "" || !release.ValidVersion(n.Version) || release.Compare(version, n.Version) > 0) {
		n.Version = version
	}
	if n == m {
		return nil
	}
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if err := wholefile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("keeping the update mark: %w", err)
	}
	return nil
}
