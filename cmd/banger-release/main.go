// Command banger-release makes banger's signed releases (`make release`):
// it packs a version's binaries into a tarball in a release directory,
// adds it to the directory's SHA256SUMS and signs that with the release
// key (minisign's format), saying when it was issued and until when users
// may trust it (-valid-for; -resign signs the index again before then).
// -genkey makes a key pair.
package main

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"aead.dev/minisign"

	"github.com/bangerdev/banger/internal/release"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "banger-release: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("banger-release", flag.ContinueOnError)
	version := fs.String("version", "", "the release's version (MAJOR.MINOR.PATCH[-PRE])")
	keyFile := fs.String("key", "", "the release's private key (minisign; an encrypted one's password in BANGER_RELEASE_PASSWORD)")
	bin := fs.String("bin", "bin", "the directory holding banger, bangerd and banger-agent built for the version")
	out := fs.String("out", "dist", "the release directory: the tarball, SHA256SUMS and its signature go there")
	genkey := fs.String("genkey", "", "make a new key pair: FILE (private, unencrypted, 0600) and FILE.pub")
	validFor := fs.Duration("valid-for", release.DefaultValidity, "how long users trust the signed index (its expiry); sign it again with -resign before then")
	resign := fs.Bool("resign", false, "only sign the index in -out again, issued now, valid for -valid-for")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *genkey != "" {
		return genKey(*genkey)
	}
	if *validFor <= 0 {
		return fmt.Errorf("-valid-for %s: a positive duration (default %s)", *validFor, release.DefaultValidity)
	}
	if *resign {
		key, err := readKey(*keyFile)
		if err != nil {
			return err
		}
		return release.Resign(*out, key, *validFor)
	}
	if !release.ValidVersion(*version) {
		return fmt.Errorf("VERSION=%q is not MAJOR.MINOR.PATCH[-PRE]; run `make release VERSION=1.2.3 KEY=FILE`", *version)
	}
	if *keyFile == "" {
		return errors.New("no key: run `make release VERSION=... KEY=FILE` (make one with `go run ./cmd/banger-release -genkey FILE`)")
	}
	key, err := readKey(*keyFile)
	if err != nil {
		return err
	}
	return release.Publish(*bin, *out, *version, key, *validFor)
}

func readKey(path string) (minisign.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("reading the release key: %w", err)
	}
	var key minisign.PrivateKey
	if minisign.IsEncrypted(b) {
		key, err = minisign.DecryptKey(os.Getenv("BANGER_RELEASE_PASSWORD"), b)
	} else {
		err = key.UnmarshalText(b)
	}
	if err != nil {
		return key, fmt.Errorf("reading the release key %s: %w", path, err)
	}
	return key, nil
}

func genKey(path string) error {
	pub, key, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	text, err := key.MarshalText()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, text, 0o600); err != nil {
		return err
	}
	pubText, err := pub.MarshalText()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+".pub", append(pubText, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("private key %s (keep it secret), public key %s.pub:\n%s\n", path, filepath.Base(path), pubText)
	return nil
}
