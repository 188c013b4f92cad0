// Package record reads and writes banger's install record
// (/etc/banger/install.toml): who owns the daemon, who else may use it,
// where the binaries and the helper's socket are. The CLI's doctor reads
// it; internal/install, which runs as root, writes it.
package record

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/BurntSushi/toml"

	"github.com/bangerdev/banger/internal/paths"
)

// File is where the install record lives, under the root.
const File = "/etc/banger/install.toml"

// HelperSocket is the root helper's socket when installed.
const HelperSocket = paths.HelperSocket

// ErrNotInstalled means there is no install record.
var ErrNotInstalled = errors.New("banger is not installed on this host")

// Record is what install wrote down: who owns the daemon, who else may
// use it, where the binaries are. The daemon (system layout) and the
// helper read it; uninstall and status start from it.
type Record struct {
	Owner        string `toml:"owner"`
	UID          int    `toml:"uid"`
	GID          int    `toml:"gid"`
	Group        string `toml:"group,omitempty"` // may use the daemon's socket (0660)
	Prefix       string `toml:"prefix"`
	HelperSocket string `toml:"helper_socket"`
	Version      string `toml:"version"`
}

// Read reads root's install record.
func Read(root string) (Record, error) {
	path := Under(root, File)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, fmt.Errorf("%w (no %s); install it with `sudo banger system install`", ErrNotInstalled, path)
	}
	if err != nil {
		return Record{}, fmt.Errorf("reading %s: %w", path, err)
	}
	var r Record
	md, err := toml.Decode(string(b), &r)
	if err != nil {
		return Record{}, fmt.Errorf("reading %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return Record{}, fmt.Errorf("reading %s: unknown key %s", path, und[0])
	}
	if r.Owner == "" || r.UID <= 0 || !filepath.IsAbs(r.Prefix) || !filepath.IsAbs(r.HelperSocket) {
		return Record{}, fmt.Errorf("reading %s: owner, uid, prefix and helper_socket are required; run `sudo banger system install` again", path)
	}
	return r, nil
}

// Encode is the record as install writes it.
func (r Record) Encode() []byte {
	var b bytes.Buffer
	b.WriteString("# Written by `banger system install`; run it again rather than editing this file.\n")
	_ = toml.NewEncoder(&b).Encode(r)
	return b.Bytes()
}

// Under places an absolute path under a staging root.
func Under(root, path string) string {
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, path)
}
