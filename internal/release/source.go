package release

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Source is where releases come from: a base URL or a directory holding
// SHA256SUMS, its signature and the tarballs; or one tarball, with the
// index and signature beside it.
type Source struct {
	where string // as given, for messages
	base  *url.URL
	dir   string
	// File is the tarball a source of one file names ("" otherwise).
	File   string
	Client *http.Client
}

// OpenSource reads from: http(s)://BASE, a directory, or a tarball.
func OpenSource(from string) (*Source, error) {
	s := &Source{where: from, Client: http.DefaultClient}
	if strings.HasPrefix(from, "http://") || strings.HasPrefix(from, "https://") {
		u, err := url.Parse(strings.TrimSuffix(from, "/") + "/")
		if err != nil {
			return nil, fmt.Errorf("reading the release source %q: %w", from, err)
		}
		s.base = u
		return s, nil
	}
	fi, err := os.Stat(from)
	switch {
	case err != nil:
		return nil, fmt.Errorf("reading the release source: %w; give --from a URL, a directory or a tarball, or set update_url in config.toml", err)
	case fi.IsDir():
		s.dir = from
	default:
		s.dir, s.File = filepath.Dir(from), filepath.Base(from)
	}
	return s, nil
}

// String is the source as given.
func (s *Source) String() string { return s.where }

// Fetch reads name from the source, refusing more than max bytes.
func (s *Source) Fetch(ctx context.Context, name string, max int64) ([]byte, error) {
	var r io.ReadCloser
	if s.base != nil {
		u := s.base.JoinPath(name).String()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("fetching %s: %w", u, err)
		}
		resp, err := s.Client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("fetching %s: %w", u, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("fetching %s: %s", u, resp.Status)
		}
		r = resp.Body
	} else {
		f, err := os.Open(filepath.Join(s.dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading %s: %w (a release source holds %s, %s and the tarballs)", filepath.Join(s.dir, name), err, SumsName, SigName)
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		r = f
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s from %s: %w", name, s.where, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("reading %s from %s: more than %d bytes", name, s.where, max)
	}
	return b, nil
}

// Index fetches the source's index and checks its signature by key,
// before anything else is read from it.
func (s *Source) Index(ctx context.Context, key Key) (Index, error) {
	sums, err := s.Fetch(ctx, SumsName, MaxSums)
	if err != nil {
		return nil, err
	}
	sig, err := s.Fetch(ctx, SigName, MaxSig)
	if err != nil {
		return nil, err
	}
	if err := Verify(key, sums, sig); err != nil {
		return nil, fmt.Errorf("%w (source %s)", err, s.where)
	}
	return ParseSums(sums)
}

// Tarball fetches e's tarball and checks it against the index.
func (s *Source) Tarball(ctx context.Context, e Entry) ([]byte, error) {
	b, err := s.Fetch(ctx, e.File, MaxTarball)
	if err != nil {
		return nil, err
	}
	if err := e.CheckSum(b); err != nil {
		return nil, err
	}
	return b, nil
}
