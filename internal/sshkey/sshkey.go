// Package sshkey makes and keeps ed25519 SSH keys: the agent's host key
// on a VM's disk, banger's own client key in the daemon's state.
package sshkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/internal/wholefile"
)

// LoadOrCreate loads the ed25519 private key at path (OpenSSH format,
// mode 0600), creating it the first time, so it stays the same across
// restarts. A damaged key is replaced.
func LoadOrCreate(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if s, perr := ssh.ParsePrivateKey(b); perr == nil {
			return s, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return Create(path)
}

// Create makes a new ed25519 key at path (mode 0600), replacing any:
// a guest restored from a template must not keep the template's.
func Create(path string) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "banger")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := wholefile.Write(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// NewKey makes an ed25519 key that lives only in memory.
func NewKey() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}
