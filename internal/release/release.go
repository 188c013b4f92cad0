// Package release makes and checks banger's signed releases. A release
// source (a base URL, a directory) holds one tarball per version, each
// with the CLI (also the root helper: `banger system helper`), the daemon
// and the guest agent, and one SHA256SUMS index of every tarball there,
// signed with banger's release key in minisign's format (aead.dev/
// minisign, which the minisign tool verifies too). Everything a source
// serves is hostile until checked: the index's signature first, then a
// tarball's checksum against the index, then each of its entries.
package release

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"aead.dev/minisign"
	"golang.org/x/mod/semver"

	"github.com/bangerdev/banger/internal/wholefile"
)

const (
	// SumsName is the index of a release source; SigName its signature.
	SumsName = "SHA256SUMS"
	SigName  = "SHA256SUMS.minisig"
	// Bounds on what a source may send.
	MaxSums    = 1 << 20
	MaxSig     = 4 << 10
	MaxTarball = 512 << 20
	MaxBinary  = 256 << 20
	maxEntries = 10000
)

// Binaries are the files of a release, in every tarball.
var Binaries = []string{"banger", "bangerd", "banger-agent"}

// PinnedKey is banger's release public key (minisign key ID
// 2F6D39AF00551C81): what `banger update` trusts unless told
// --pubkey-file.
const PinnedKey = "RWSBHFUArzltL9HsKoPI5oae2Dva8L4eowIi6OmzsOYvoFBZa8eBqSfJ"

var versionRe = regexp.MustCompile(`^[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}(-[0-9A-Za-z.]{1,32})?$`)

// ValidVersion says whether v is a release version: MAJOR.MINOR.PATCH
// with an optional -PRERELEASE.
func ValidVersion(v string) bool { return versionRe.MatchString(v) }

// Compare orders two valid versions as semantic versions.
func Compare(a, b string) int { return semver.Compare("v"+a, "v"+b) }

// TarballName is the file of a version's tarball.
func TarballName(version string) string { return "banger-" + version + "-linux-amd64.tar.gz" }

// Entry is one tarball an index names.
type Entry struct {
	Version string
	File    string
	Sum     [sha256.Size]byte
}

// Index is a source's SHA256SUMS: the tarballs it serves.
type Index []Entry

var sumsLine = regexp.MustCompile(`^([0-9a-f]{64}) [ *]banger-([^/\s]+)-linux-amd64\.tar\.gz$`)

// ParseSums reads an index: "HEX  FILE" lines, as sha256sum writes them.
// A line that is not a banger tarball's, or a version twice, is refused.
func ParseSums(b []byte) (Index, error) {
	if len(b) > MaxSums {
		return nil, fmt.Errorf("reading %s: %d bytes, more than %d", SumsName, len(b), MaxSums)
	}
	var ix Index
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		m := sumsLine.FindStringSubmatch(line)
		if m == nil || !ValidVersion(m[2]) {
			return nil, fmt.Errorf("reading %s: line %d is not \"SHA256  banger-VERSION-linux-amd64.tar.gz\"", SumsName, n)
		}
		if len(ix) == maxEntries {
			return nil, fmt.Errorf("reading %s: more than %d entries", SumsName, maxEntries)
		}
		if _, ok := ix.Find(m[2]); ok {
			return nil, fmt.Errorf("reading %s: version %s twice", SumsName, m[2])
		}
		e := Entry{Version: m[2], File: TarballName(m[2])}
		_, _ = hex.Decode(e.Sum[:], []byte(m[1])) // the pattern checked it
		ix = append(ix, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", SumsName, err)
	}
	if len(ix) == 0 {
		return nil, fmt.Errorf("reading %s: it names no release", SumsName)
	}
	return ix, nil
}

// Bytes writes the index as sha256sum does, oldest version first.
func (ix Index) Bytes() []byte {
	sorted := slices.Clone(ix)
	slices.SortFunc(sorted, func(a, b Entry) int { return Compare(a.Version, b.Version) })
	var b bytes.Buffer
	for _, e := range sorted {
		fmt.Fprintf(&b, "%x  %s\n", e.Sum, e.File)
	}
	return b.Bytes()
}

// Find is the entry of version.
func (ix Index) Find(version string) (Entry, bool) {
	i := slices.IndexFunc(ix, func(e Entry) bool { return e.Version == version })
	if i < 0 {
		return Entry{}, false
	}
	return ix[i], true
}

// Latest is the newest version; prereleases count only when no release
// is newer.
func (ix Index) Latest() Entry {
	return slices.MaxFunc(ix, func(a, b Entry) int { return Compare(a.Version, b.Version) })
}

// Versions lists the index's versions, oldest first.
func (ix Index) Versions() []string {
	var vs []string
	for _, e := range ix {
		vs = append(vs, e.Version)
	}
	slices.SortFunc(vs, Compare)
	return vs
}

// Key is a release public key.
type Key = minisign.PublicKey

// ParseKey reads a public key: minisign's file (a comment line, then the
// key) or the key alone.
func ParseKey(text string) (Key, error) {
	var key minisign.PublicKey
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if err := key.UnmarshalText([]byte(strings.TrimSpace(lines[len(lines)-1]))); err != nil {
		return key, fmt.Errorf("reading the release public key: %w", err)
	}
	return key, nil
}

// Meta is what an index's signature vouches for beside the index (in
// minisign's trusted comment, which the signature covers): when it was
// issued and until when it may be trusted. A mirror can hold back an
// older index, signed and whole, to freeze or roll back its users:
// `banger update` refuses one issued before the newest it has verified
// (update.Mark), and one past its expiry.
type Meta struct {
	Issued  time.Time
	Expires time.Time
}

// DefaultValidity is how long a newly signed index may be trusted:
// a publisher signs it again (banger-release -resign) before then.
const DefaultValidity = 90 * 24 * time.Hour

var (
	// ErrBadSignature: the index is not signed by the trusted key.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrBadChecksum: a tarball is not the one its index names.
	ErrBadChecksum = errors.New("checksum does not match")
	// ErrExpired: the index is past its expiry.
	ErrExpired = errors.New("release index expired")
	// ErrStale: the index was issued before one already verified.
	ErrStale = errors.New("release index older than one already seen")
)

const metaPrefix = "banger release index"

func (m Meta) comment() string {
	return fmt.Sprintf("%s issued=%s expires=%s", metaPrefix, m.Issued.UTC().Format(time.RFC3339), m.Expires.UTC().Format(time.RFC3339))
}

// parseMeta reads a trusted comment; one without both times (an index
// signed before banger signed them) is refused.
func parseMeta(comment string) (Meta, error) {
	var m Meta
	rest, ok := strings.CutPrefix(comment, metaPrefix+" ")
	fields := strings.Fields(rest)
	if !ok || len(fields) != 2 {
		return m, fmt.Errorf("%w: the signature of %s carries no issue time and expiry (an index signed by an older banger-release): "+
			"the publisher signs it again with `banger-release -resign`", ErrBadSignature, SumsName)
	}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return m, fmt.Errorf("%w: the signature of %s: %q is not a time", ErrBadSignature, SumsName, f)
		}
		switch k {
		case "issued":
			m.Issued = t
		case "expires":
			m.Expires = t
		}
	}
	if m.Issued.IsZero() || !m.Expires.After(m.Issued) {
		return m, fmt.Errorf("%w: the signature of %s: %q names no issue time before its expiry", ErrBadSignature, SumsName, comment)
	}
	return m, nil
}

// Verify checks the index's signature by key, and returns what the
// signature says of the index.
func Verify(key Key, sums, sig []byte) (Meta, error) {
	if len(sig) > MaxSig {
		return Meta{}, fmt.Errorf("%w: the signature is %d bytes, more than %d", ErrBadSignature, len(sig), MaxSig)
	}
	if !minisign.Verify(key, sums, sig) {
		return Meta{}, fmt.Errorf("%w: %s is not signed by the release key %X", ErrBadSignature, SumsName, key.ID())
	}
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil { // Verify read it already
		return Meta{}, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return parseMeta(s.TrustedComment)
}

// Check says whether an index with m may be used at now, given mark, the
// newest issue time already verified (zero: none yet).
func (m Meta) Check(now, mark time.Time) error {
	switch {
	case now.After(m.Expires):
		return fmt.Errorf("%w: it expired at %s (issued %s): the source serves an index its publisher no longer vouches for; "+
			"try again later or another source (--from)", ErrExpired, m.Expires.Format(time.RFC3339), m.Issued.Format(time.RFC3339))
	case m.Issued.Before(mark):
		return fmt.Errorf("%w: it was issued at %s, before the newest this host has verified (%s): the source may be holding "+
			"updates back; use another source (--from)", ErrStale, m.Issued.Format(time.RFC3339), mark.Format(time.RFC3339))
	}
	return nil
}

// Sign signs an index with a private key, for `make release`, saying it
// was issued now and may be trusted for validFor.
func Sign(key minisign.PrivateKey, sums []byte, now time.Time, validFor time.Duration) []byte {
	m := Meta{Issued: now.Truncate(time.Second), Expires: now.Truncate(time.Second).Add(validFor)}
	return minisign.SignWithComments(key, sums, m.comment(), "signature from banger's release key")
}

// CheckSum says whether tarball is the one e names.
func (e Entry) CheckSum(tarball []byte) error {
	if sha256.Sum256(tarball) != e.Sum {
		return fmt.Errorf("%w: %s is not the tarball %s names (tampered or corrupt)", ErrBadChecksum, e.File, SumsName)
	}
	return nil
}

// Publish adds the binaries in bin as release version to the release
// directory out: its tarball, then SHA256SUMS with every tarball there
// (read back from the index already there) and its signature, issued now
// and valid for validFor. A version already published is replaced.
func Publish(bin, out, version string, key minisign.PrivateKey, validFor time.Duration) error {
	tarball, err := Pack(bin, version)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("publishing release %s: %w", version, err)
	}
	var ix Index
	if old, err := os.ReadFile(filepath.Join(out, SumsName)); err == nil {
		if ix, err = ParseSums(old); err != nil {
			return fmt.Errorf("publishing release %s: the index there: %w", version, err)
		}
	}
	ix = slices.DeleteFunc(ix, func(e Entry) bool { return e.Version == version })
	ix = append(ix, Entry{Version: version, File: TarballName(version), Sum: sha256.Sum256(tarball)})
	sums := ix.Bytes()
	for _, f := range []struct {
		name string
		b    []byte
	}{{TarballName(version), tarball}, {SumsName, sums}, {SigName, Sign(key, sums, time.Now(), validFor)}} {
		if err := wholefile.Write(filepath.Join(out, f.name), f.b, 0o644); err != nil {
			return fmt.Errorf("publishing release %s: %w", version, err)
		}
	}
	return nil
}

// Resign signs the index of the release directory out again, issued
// now and valid for validFor, so its users keep trusting it: a
// publisher does so before the last signature expires.
func Resign(out string, key minisign.PrivateKey, validFor time.Duration) error {
	sums, err := os.ReadFile(filepath.Join(out, SumsName))
	if err != nil {
		return fmt.Errorf("signing the index again: %w", err)
	}
	if _, err := ParseSums(sums); err != nil {
		return fmt.Errorf("signing the index again: %w", err)
	}
	if err := wholefile.Write(filepath.Join(out, SigName), Sign(key, sums, time.Now(), validFor), 0o644); err != nil {
		return fmt.Errorf("signing the index again: %w", err)
	}
	return nil
}
