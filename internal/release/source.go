package release

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Source is where releases come from: a base URL or a directory holding
// SHA256SUMS, its signature and the tarballs; or one tarball, with the
// index and signature beside it.
type Source struct {
	where string // as given, for messages
	base  *url.URL
	dir   string
	// File is the tarball a source of one file names ("" otherwise).
	File      string
	Client    *http.Client
	Deadlines Deadlines
}

// Deadlines bound every fetch from a URL: a mirror that accepts and then
// sends nothing, or drips, cannot hold an update (or `--check`) forever.
type Deadlines struct {
	Connect time.Duration // to connect (and finish TLS)
	Header  time.Duration // from the request to the response's headers
	Index   time.Duration // the whole of SHA256SUMS or its signature
	Tarball time.Duration // the whole of a tarball
}

// DefaultDeadlines are a source's unless changed.
var DefaultDeadlines = Deadlines{Connect: 15 * time.Second, Header: 30 * time.Second, Index: 2 * time.Minute, Tarball: 15 * time.Minute}

// client is an HTTP client whose every stage has d's deadline.
func client(d Deadlines) *http.Client {
	dialer := &net.Dialer{Timeout: d.Connect}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   d.Connect,
		ResponseHeaderTimeout: d.Header,
		ForceAttemptHTTP2:     true,
	}}
}

// OpenSource reads from: http(s)://BASE, a directory, or a tarball.
func OpenSource(from string) (*Source, error) {
	return OpenSourceWith(from, DefaultDeadlines)
}

// OpenSourceWith is OpenSource with other deadlines (tests).
func OpenSourceWith(from string, d Deadlines) (*Source, error) {
	s := &Source{where: from, Client: client(d), Deadlines: d}
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

// Fetch reads name from the source, refusing more than max bytes or
// taking longer than total.
func (s *Source) Fetch(ctx context.Context, name string, max int64, total time.Duration) ([]byte, error) {
	if total > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, total)
		defer cancel()
	}
	var r io.ReadCloser
	if s.base != nil {
		u := s.base.JoinPath(name).String()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("fetching %s: %w", u, err)
		}
		resp, err := s.Client.Do(req)
		if err != nil {
			if ctx.Err() != nil && total > 0 {
				return nil, fmt.Errorf("fetching %s: not done within %s: %w", u, total, err)
			}
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
		if ctx.Err() != nil && total > 0 {
			return nil, fmt.Errorf("reading %s from %s: not done within %s: %w", name, s.where, total, err)
		}
		return nil, fmt.Errorf("reading %s from %s: %w", name, s.where, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("reading %s from %s: more than %d bytes", name, s.where, max)
	}
	return b, nil
}

// Index fetches the source's index and checks its signature by key,
// before anything else is read from it; it returns what the signature
// says of it too (for the caller to check against its high-water mark).
func (s *Source) Index(ctx context.Context, key Key) (Index, Meta, error) {
	sums, err := s.Fetch(ctx, SumsName, MaxSums, s.Deadlines.Index)
	if err != nil {
		return nil, Meta{}, err
	}
	sig, err := s.Fetch(ctx, SigName, MaxSig, s.Deadlines.Index)
	if err != nil {
		return nil, Meta{}, err
	}
	meta, err := Verify(key, sums, sig)
	if err != nil {
		return nil, meta, fmt.Errorf("%w (source %s)", err, s.where)
	}
	ix, err := ParseSums(sums)
	return ix, meta, err
}

// Tarball fetches e's tarball and checks it against the index.
func (s *Source) Tarball(ctx context.Context, e Entry) ([]byte, error) {
	b, err := s.Fetch(ctx, e.File, MaxTarball, s.Deadlines.Tarball)
	if err != nil {
		return nil, err
	}
	if err := e.CheckSum(b); err != nil {
		return nil, err
	}
	return b, nil
}
