// Package tokenfile keeps bearer tokens in a file of their SHA-256
// hashes: made once (the secret shown only then), listed without
// secrets, revoked by ID prefix, verified in constant time. `banger mcp`
// keeps its HTTP tokens so and bangerd its E2B API keys.
package tokenfile

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/wholefile"
)

// maxTokenFile bounds what is read of the token file.
const maxTokenFile = 1 << 20

// Token is a bearer token as kept: its secret only as a SHA-256 hash.
type Token struct {
	ID      string    `json:"id"`   // the hash's first 12 hex digits: what logs and revoke name
	Name    string    `json:"name"` // a label for people
	Hash    string    `json:"sha256,omitempty"`
	Created time.Time `json:"created"`
	// Limits of what the token's holder may have at once (0: none).
	MaxSandboxes int `json:"max_sandboxes,omitempty"`
	MaxMemoryMiB int `json:"max_memory_mib,omitempty"`
}

// Tokens is a file of tokens (0600).
type Tokens struct {
	path string
	kind Kind
}

// Kind says what tokens of a file look like and how errors name them.
type Kind struct {
	Prefix string // starts every secret, so a leaked one is recognisable
	Bytes  int    // random bytes after it, in hex
	Noun   string // "token", "key": for errors
	List   string // the command that lists them: for errors
}

// Open is the token file at path (made on the first Create).
func Open(path string, kind Kind) *Tokens { return &Tokens{path: path, kind: kind} }

// Path is the file's path.
func (t *Tokens) Path() string { return t.path }

// Create makes a token from tok's name and limits and keeps its hash;
// the secret is returned once, here.
func (t *Tokens) Create(tok Token) (secret string, made Token, err error) {
	if len(tok.Name) > 64 || strings.IndexFunc(tok.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return "", Token{}, fmt.Errorf("%w: %s name %q: at most 64 printable characters", api.ErrInvalidArgument, t.kind.Noun, tok.Name)
	}
	if tok.MaxSandboxes < 0 || tok.MaxMemoryMiB < 0 {
		return "", Token{}, fmt.Errorf("%w: a %s's limits are counts, 0 for none", api.ErrInvalidArgument, t.kind.Noun)
	}
	raw := make([]byte, t.kind.Bytes)
	if _, err := rand.Read(raw); err != nil {
		return "", Token{}, err
	}
	secret = t.kind.Prefix + hex.EncodeToString(raw)
	hash := hashToken(secret)
	tok.ID, tok.Hash, tok.Created = hash[:12], hash, time.Now().UTC().Truncate(time.Second)
	err = t.update(func(all []Token) ([]Token, error) { return append(all, tok), nil })
	tok.Hash = ""
	return secret, tok, err
}

// List is every token, secrets unknown.
func (t *Tokens) List() ([]Token, error) {
	all, err := t.read()
	for i := range all {
		all[i].Hash = ""
	}
	return all, err
}

// Revoke removes the token whose ID is id (or starts with it, when one
// does).
func (t *Tokens) Revoke(id string) (Token, error) {
	var gone Token
	err := t.update(func(all []Token) ([]Token, error) {
		var keep []Token
		n := 0
		for _, tok := range all {
			if id != "" && strings.HasPrefix(tok.ID, id) {
				gone = tok
				n++
				continue
			}
			keep = append(keep, tok)
		}
		switch {
		case n == 0:
			return nil, fmt.Errorf("%s %q: %w (`%s` shows the IDs)", t.kind.Noun, id, api.ErrNotFound, t.kind.List)
		case n > 1:
			return nil, fmt.Errorf("%w: %q names %d %ss; give more of the ID", api.ErrInvalidArgument, id, n, t.kind.Noun)
		}
		return keep, nil
	})
	gone.Hash = ""
	return gone, err
}

// Verify is the token whose secret was presented. The file is read on
// each call, so a revoke takes effect at once.
func (t *Tokens) Verify(secret string) (Token, bool, error) {
	all, err := t.read()
	if err != nil {
		return Token{}, false, err
	}
	presented := hashToken(secret)
	for _, tok := range all {
		if subtle.ConstantTimeCompare([]byte(presented), []byte(tok.Hash)) == 1 {
			tok.Hash = ""
			return tok, true, nil
		}
	}
	return Token{}, false, nil
}

func hashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func (t *Tokens) read() ([]Token, error) {
	f, err := os.Open(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxTokenFile {
		return nil, fmt.Errorf("reading %s: larger than %d bytes", t.path, maxTokenFile)
	}
	var all []Token
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, fmt.Errorf("reading %s: %w (remove it and make new %ss)", t.path, err, t.kind.Noun)
	}
	return all, nil
}

// update changes the file under a lock (two creates at once lose none),
// writing it whole.
func (t *Tokens) update(change func([]Token) ([]Token, error)) error {
	if err := os.MkdirAll(filepath.Dir(t.path), 0o700); err != nil {
		return err
	}
	lock, err := os.OpenFile(t.path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", t.path, err)
	}
	all, err := t.read()
	if err != nil {
		return err
	}
	if all, err = change(all); err != nil {
		return err
	}
	if all == nil {
		all = []Token{}
	}
	data, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	return wholefile.Write(t.path, append(data, '\n'), 0o600)
}
