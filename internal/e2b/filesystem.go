package e2b

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	pb "github.com/bangerdev/banger/internal/e2b/envd/filesystempb"
)

// Bounds of the file system service.
const (
	maxPath     = 4096
	maxListed   = 10000   // entries of one ListDir
	maxUpload   = 1 << 30 // bytes of one upload (each file of a multipart)
	maxDepth    = 16
	maxFileRead = 1 << 30
)

// home is where a relative path of user's starts: E2B's paths may be
// relative to the user's home.
// fsTimeout bounds one fs operation in a guest (a list of 10,000
// entries under emulation takes seconds).
const fsTimeout = time.Minute

// defaultUser is E2B's: its templates run commands and write files as
// "user", home /home/user.
const defaultUser = "user"

// makeUser makes the default user in a guest that lacks it (useradd, or
// busybox's adduser), as root; it changes nothing where it exists.
const makeUser = `id -u ` + defaultUser + ` >/dev/null 2>&1 && exit 0
sh=/bin/sh; [ -x /bin/bash ] && sh=/bin/bash
useradd -m -s "$sh" ` + defaultUser + ` 2>/dev/null || adduser -D -s "$sh" ` + defaultUser

// ensureUser makes the sandbox's default user and records it; an image
// that cannot make one keeps its own user (root for most), logged.
func (s *Service) ensureUser(ctx context.Context, id string) {
	user := defaultUser
	g, err := s.o.VMs.Guest(ctx, id)
	if err == nil {
		var res proto.ExecResult
		out := &head{n: 200} // what the guest says is kept only to log
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, err = g.Exec(ctx, proto.ExecParams{Args: []string{"/bin/sh", "-c", makeUser}, User: "root"}, nil, out, out)
		cancel()
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("exit %d: %q", res.ExitCode, out.b)
		}
	}
	if err != nil {
		s.o.Logger.Warn("e2b: the image cannot make E2B's default user; requests naming none run as the image's", "sandbox", id, "err", err)
		user = ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb, ok := s.sandboxes[id]; ok {
		sb.User = user
		_ = s.saveLocked()
	}
}

// head keeps the first n bytes written to it and drops the rest.
type head struct {
	b []byte
	n int
}

func (h *head) Write(p []byte) (int, error) {
	h.b = append(h.b, p[:min(len(p), h.n-len(h.b))]...)
	return len(p), nil
}

// userIn is who a request of sandbox id naming user runs as: user, else
// the sandbox's default.
func (s *Service) userIn(id, user string) string {
	if user != "" {
		return user
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb, ok := s.sandboxes[id]; ok {
		return sb.User
	}
	return ""
}

// ownerFor is the owner the agent gives what user makes: "" for root
// (its own).
func ownerFor(user string) string {
	if user == "root" {
		return ""
	}
	return user
}

func home(user string) string {
	if user == "" || user == "root" {
		return "/root"
	}
	return "/home/" + user
}

// guestPath is p made absolute and clean, or an error that says why not.
func guestPath(p, user string) (string, error) {
	if p == "" || len(p) > maxPath || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: path %.60q: 1 to %d bytes, no NUL", api.ErrInvalidArgument, p, maxPath)
	}
	if strings.HasPrefix(p, "~/") || p == "~" {
		p = home(user) + strings.TrimPrefix(p, "~")
	}
	if !path.IsAbs(p) {
		p = path.Join(home(user), p)
	}
	return path.Clean(p), nil
}

// fsErr maps an agent's answer onto Connect's codes: the guest's errors
// are text (bounded by the link), matched here only to pick a code.
func fsErr(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	code := connect.CodeInternal
	switch {
	case errors.Is(err, api.ErrInvalidArgument):
		code = connect.CodeInvalidArgument
	case errors.Is(err, proto.ErrFrame):
		code = connect.CodeDataLoss
	case strings.Contains(msg, "no such file or directory"), strings.Contains(msg, "not exist"):
		code = connect.CodeNotFound
	case strings.Contains(msg, "file exists"):
		code = connect.CodeAlreadyExists
	case strings.Contains(msg, "permission denied"):
		code = connect.CodePermissionDenied
	case strings.Contains(msg, "not a directory"), strings.Contains(msg, "is a directory"), strings.Contains(msg, "directory not empty"):
		code = connect.CodeFailedPrecondition
	}
	return connect.NewError(code, err)
}

func entryOf(e proto.FSEntry) *pb.EntryInfo {
	info := &pb.EntryInfo{Name: path.Base(e.Path), Path: e.Path, Size: e.Size, Mode: e.Mode,
		ModifiedTime: timestamppb.New(time.Unix(e.ModTime, 0)), Owner: e.Owner, Group: e.Group}
	mode := fs.FileMode(e.Mode & 0o777)
	switch e.Type {
	case "f":
		info.Type = pb.FileType_FILE_TYPE_FILE
	case "d":
		info.Type = pb.FileType_FILE_TYPE_DIRECTORY
		mode |= fs.ModeDir
	case "l":
		info.Type = pb.FileType_FILE_TYPE_SYMLINK
		mode |= fs.ModeSymlink
		// Absolute, as envd gives it: a relative target is read from the
		// link's directory (lexically; the guest is not asked again).
		link := e.Link
		if !path.IsAbs(link) {
			link = path.Join(path.Dir(e.Path), link)
		}
		info.SymlinkTarget = &link
	}
	info.Permissions = mode.String()
	return info
}

type filesystemService struct{ s *Service }

// op runs one fs operation in the request's sandbox.
func (f *filesystemService) op(ctx context.Context, h http.Header, p proto.FSParams) (proto.FSResult, string, error) {
	user, err := userOf(h)
	if err != nil {
		return proto.FSResult{}, "", err
	}
	id := sandboxFrom(ctx)
	user = f.s.userIn(id, user)
	if p.Op == proto.FSMkdir {
		p.Owner = ownerFor(user)
	}
	if p.Path, err = guestPath(p.Path, user); err != nil {
		return proto.FSResult{}, "", connect.NewError(connect.CodeInvalidArgument, err)
	}
	if p.To != "" {
		if p.To, err = guestPath(p.To, user); err != nil {
			return proto.FSResult{}, "", connect.NewError(connect.CodeInvalidArgument, err)
		}
	}
	g, err := f.s.o.VMs.Guest(ctx, id)
	if err != nil {
		return proto.FSResult{}, "", connect.NewError(connect.CodeUnavailable, fmt.Errorf("sandbox %s: %w", id, err))
	}
	// A guest that does not answer holds this request no longer.
	ctx, cancel := context.WithTimeout(ctx, fsTimeout)
	defer cancel()
	r, err := g.FS(ctx, p)
	return r, p.Path, fsErr(err)
}

func (f *filesystemService) stat(ctx context.Context, h http.Header, p string) (*pb.EntryInfo, error) {
	r, _, err := f.op(ctx, h, proto.FSParams{Op: proto.FSStat, Path: p})
	if err != nil {
		return nil, err
	}
	return entryOf(r.Entries[0]), nil
}

func (f *filesystemService) Stat(ctx context.Context, req *connect.Request[pb.StatRequest]) (*connect.Response[pb.StatResponse], error) {
	e, err := f.stat(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.StatResponse{Entry: e}), nil
}

func (f *filesystemService) MakeDir(ctx context.Context, req *connect.Request[pb.MakeDirRequest]) (*connect.Response[pb.MakeDirResponse], error) {
	if _, err := f.stat(ctx, req.Header(), req.Msg.GetPath()); err == nil {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("%s already exists", req.Msg.GetPath()))
	} else if connect.CodeOf(err) != connect.CodeNotFound {
		return nil, err
	}
	if _, _, err := f.op(ctx, req.Header(), proto.FSParams{Op: proto.FSMkdir, Path: req.Msg.GetPath()}); err != nil {
		return nil, err
	}
	e, err := f.stat(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.MakeDirResponse{Entry: e}), nil
}

func (f *filesystemService) Move(ctx context.Context, req *connect.Request[pb.MoveRequest]) (*connect.Response[pb.MoveResponse], error) {
	if _, _, err := f.op(ctx, req.Header(), proto.FSParams{Op: proto.FSMove, Path: req.Msg.GetSource(), To: req.Msg.GetDestination()}); err != nil {
		return nil, err
	}
	e, err := f.stat(ctx, req.Header(), req.Msg.GetDestination())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.MoveResponse{Entry: e}), nil
}

func (f *filesystemService) ListDir(ctx context.Context, req *connect.Request[pb.ListDirRequest]) (*connect.Response[pb.ListDirResponse], error) {
	depth := int(req.Msg.GetDepth())
	if depth == 0 {
		depth = 1
	}
	if depth > maxDepth {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("depth %d: at most %d", depth, maxDepth))
	}
	dir, err := f.stat(ctx, req.Header(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	if dir.Type != pb.FileType_FILE_TYPE_DIRECTORY {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s is not a directory", dir.Path))
	}
	r, _, err := f.op(ctx, req.Header(), proto.FSParams{Op: proto.FSList, Path: dir.Path, Depth: depth, Max: maxListed})
	if err != nil {
		return nil, err
	}
	out := &pb.ListDirResponse{}
	for _, e := range r.Entries {
		if e.Path == dir.Path {
			continue
		}
		out.Entries = append(out.Entries, entryOf(e))
	}
	return connect.NewResponse(out), nil
}

func (f *filesystemService) Remove(ctx context.Context, req *connect.Request[pb.RemoveRequest]) (*connect.Response[pb.RemoveResponse], error) {
	// As envd's (os.RemoveAll): what is not there is removed already.
	if _, _, err := f.op(ctx, req.Header(), proto.FSParams{Op: proto.FSRemove, Path: req.Msg.GetPath(), Recursive: true}); err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		return nil, err
	}
	return connect.NewResponse(&pb.RemoveResponse{}), nil
}

// Bounds of watching.
const (
	maxWatchers      = 64    // a sandbox's watchers of CreateWatcher
	maxWatcherEvents = 10000 // events a watcher keeps between two reads
)

var watchTypes = map[string]pb.EventType{
	proto.WatchCreate: pb.EventType_EVENT_TYPE_CREATE,
	proto.WatchWrite:  pb.EventType_EVENT_TYPE_WRITE,
	proto.WatchRemove: pb.EventType_EVENT_TYPE_REMOVE,
	proto.WatchRename: pb.EventType_EVENT_TYPE_RENAME,
	proto.WatchChmod:  pb.EventType_EVENT_TYPE_CHMOD,
}

// watchStart checks what a watch names (a directory) and returns its
// guest, its params and its sandbox.
func (f *filesystemService) watchStart(ctx context.Context, h http.Header, dir string, recursive bool) (Guest, proto.WatchParams, string, error) {
	e, err := f.stat(ctx, h, dir)
	if err != nil {
		return nil, proto.WatchParams{}, "", err
	}
	if e.Type != pb.FileType_FILE_TYPE_DIRECTORY {
		return nil, proto.WatchParams{}, "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s is not a directory", e.Path))
	}
	id := sandboxFrom(ctx)
	g, err := f.s.o.VMs.Guest(ctx, id)
	if err != nil {
		return nil, proto.WatchParams{}, "", connect.NewError(connect.CodeUnavailable, err)
	}
	return g, proto.WatchParams{Path: e.Path, Recursive: recursive}, id, nil
}

// WatchDir streams a directory's changes (inotify in the guest, through
// the agent) until the client goes.
func (f *filesystemService) WatchDir(ctx context.Context, req *connect.Request[pb.WatchDirRequest], stream *connect.ServerStream[pb.WatchDirResponse]) error {
	g, p, _, err := f.watchStart(ctx, req.Header(), req.Msg.GetPath(), req.Msg.GetRecursive())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan *pb.FilesystemEvent, subscriberQueue)
	ended := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		ended <- g.Watch(ctx, p, func() { close(ready) }, func(e proto.WatchEvent) error {
			select {
			case events <- &pb.FilesystemEvent{Name: e.Name, Type: watchTypes[e.Op]}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	// The start event says the watch is in place, as envd's does: a
	// change made after it is seen.
	select {
	case <-ready:
	case err := <-ended:
		return fsErr(err)
	case <-ctx.Done():
		return nil
	}
	if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Start{Start: &pb.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}
	tick := time.NewTicker(keepaliveOf(req.Header()))
	defer tick.Stop()
	for {
		select {
		case e := <-events:
			if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Filesystem{Filesystem: e}}); err != nil {
				return err
			}
		case <-tick.C:
			if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Keepalive{Keepalive: &pb.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
		case err := <-ended:
			if ctx.Err() != nil {
				return nil
			}
			return fsErr(err)
		case <-ctx.Done():
			return nil
		}
	}
}

// dirWatcher is a watch of CreateWatcher: its events kept until read.
type dirWatcher struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	events []*pb.FilesystemEvent
	lost   int   // events dropped past maxWatcherEvents since the last read
	err    error // why the watch ended, if it did
}

func (f *filesystemService) CreateWatcher(ctx context.Context, req *connect.Request[pb.CreateWatcherRequest]) (*connect.Response[pb.CreateWatcherResponse], error) {
	g, p, id, err := f.watchStart(ctx, req.Header(), req.Msg.GetPath(), req.Msg.GetRecursive())
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &dirWatcher{cancel: cancel}
	wid, err := f.s.addWatcher(id, w)
	if err != nil {
		cancel()
		return nil, connect.NewError(connect.CodeResourceExhausted, err)
	}
	ready := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		err := g.Watch(wctx, p, func() { close(ready) }, func(e proto.WatchEvent) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			if len(w.events) >= maxWatcherEvents {
				w.lost++
				return nil
			}
			w.events = append(w.events, &pb.FilesystemEvent{Name: e.Name, Type: watchTypes[e.Op]})
			return nil
		})
		w.mu.Lock()
		if wctx.Err() == nil {
			w.err = fsErr(err)
		}
		w.mu.Unlock()
	}()
	// Answered once the watch is in place, so what changes after is kept.
	select {
	case <-ready:
	case <-ended:
		w.mu.Lock()
		err := w.err
		w.mu.Unlock()
		if err != nil {
			_, _ = f.s.watcher(id, wid, true)
			return nil, err
		}
	case <-ctx.Done():
		_, _ = f.s.watcher(id, wid, true)
		cancel()
		return nil, ctx.Err()
	}
	return connect.NewResponse(&pb.CreateWatcherResponse{WatcherId: wid}), nil
}

func (f *filesystemService) GetWatcherEvents(ctx context.Context, req *connect.Request[pb.GetWatcherEventsRequest]) (*connect.Response[pb.GetWatcherEventsResponse], error) {
	w, err := f.s.watcher(sandboxFrom(ctx), req.Msg.GetWatcherId(), false)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lost > 0 {
		lost := w.lost
		w.lost = 0
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("watcher %s kept %d events and lost %d more since the last read; read more often", req.Msg.GetWatcherId(), maxWatcherEvents, lost))
	}
	if w.err != nil && len(w.events) == 0 {
		return nil, w.err
	}
	out := &pb.GetWatcherEventsResponse{Events: w.events}
	w.events = nil
	return connect.NewResponse(out), nil
}

func (f *filesystemService) RemoveWatcher(ctx context.Context, req *connect.Request[pb.RemoveWatcherRequest]) (*connect.Response[pb.RemoveWatcherResponse], error) {
	w, err := f.s.watcher(sandboxFrom(ctx), req.Msg.GetWatcherId(), true)
	if err != nil {
		return nil, err
	}
	w.cancel()
	return connect.NewResponse(&pb.RemoveWatcherResponse{}), nil
}

// fileUser is the user of a /files request: its Basic authorization, or
// its username parameter.
func fileUser(r *http.Request) (string, error) {
	user, err := userOf(r.Header)
	if err != nil || user != "" {
		return user, err
	}
	user = r.URL.Query().Get("username")
	if user != "" && !validUser(user) {
		return "", fmt.Errorf("%w: username %q: a user name of the guest", api.ErrInvalidArgument, user)
	}
	return user, nil
}

// checkSignature checks a signed /files URL (the SDKs' downloadUrl and
// uploadUrl): v1_ and base64 of sha256("path:operation:user:token[:expiry]").
func (s *Service) checkSignature(r *http.Request, id, operation, user string) error {
	q := r.URL.Query()
	sig := q.Get("signature")
	if sig == "" {
		if equal(r.Header.Get("X-Access-Token"), s.envdToken(id)) {
			return nil
		}
		return signatureError("no X-Access-Token and no signature")
	}
	raw := fmt.Sprintf("%s:%s:%s:%s", q.Get("path"), operation, user, s.envdToken(id))
	exp := q.Get("signature_expiration")
	if exp != "" {
		raw += ":" + exp
	}
	if !equal(sig, signature(raw)) {
		return signatureError(fmt.Sprintf("invalid signature for %s of %s", operation, q.Get("path")))
	}
	// Only a signature this sandbox made is said to be expired.
	if exp != "" {
		if n, err := strconv.ParseInt(exp, 10, 64); err != nil || time.Unix(n, 0).Before(s.o.Now()) {
			return errExpired
		}
	}
	return nil
}

// errExpired refuses a sandbox's own signature past its expiry.
const errExpired = signatureError("signature is already expired")

// signatureError refuses a signed URL in envd's words (the SDKs compare
// them); it is a permission_denied.
type signatureError string

func (e signatureError) Error() string { return string(e) }
func (e signatureError) Unwrap() error { return api.ErrPermissionDenied }

// signature is the SDKs' signature of raw: v1_ and unpadded base64 of
// its sha256.
func signature(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
}

func writeFileErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch connect.CodeOf(fsErr(err)) {
	case connect.CodeNotFound:
		code = http.StatusNotFound
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition:
		code = http.StatusBadRequest
	case connect.CodePermissionDenied:
		code = http.StatusUnauthorized
	}
	if errors.Is(err, api.ErrPermissionDenied) {
		code = http.StatusUnauthorized
	}
	writeError(w, code, "%s", err)
}

// download: GET /files?path=…: the file's bytes.
func (s *Service) download(w http.ResponseWriter, r *http.Request) {
	id := sandboxFrom(r.Context())
	user, err := fileUser(r)
	if err == nil {
		err = s.checkSignature(r, id, "read", user)
	}
	if err != nil {
		writeFileErr(w, err)
		return
	}
	user = s.userIn(id, user)
	p, err := guestPath(r.URL.Query().Get("path"), user)
	if err != nil {
		writeFileErr(w, err)
		return
	}
	g, err := s.o.VMs.Guest(r.Context(), id)
	if err != nil {
		writeErr(w, err)
		return
	}
	st, err := g.FS(r.Context(), proto.FSParams{Op: proto.FSStat, Path: p})
	if err != nil {
		writeFileErr(w, err)
		return
	}
	if st.Entries[0].Type == "d" {
		writeError(w, http.StatusBadRequest, "%s is a directory", p)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p)}))
	cw := &countingWriter{w: w}
	if _, err := g.ReadFileRange(r.Context(), proto.FileParams{Path: p, Limit: maxFileRead}, cw); err != nil {
		if cw.n == 0 {
			writeFileErr(w, err)
		}
		s.o.Logger.Warn("e2b download", "sandbox", id, "path", p, "err", err)
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// uploaded is one file of an upload's answer.
type uploaded struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
}

// upload: POST /files?path=…: the body (octet-stream) or each part of a
// multipart form, written whole, parents made.
func (s *Service) upload(w http.ResponseWriter, r *http.Request) {
	id := sandboxFrom(r.Context())
	user, err := fileUser(r)
	if err == nil {
		err = s.checkSignature(r, id, "write", user)
	}
	if err != nil {
		writeFileErr(w, err)
		return
	}
	user = s.userIn(id, user)
	var body io.Reader = http.MaxBytesReader(w, r.Body, maxUpload+1<<20)
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		// What it inflates to is bounded by maxUpload a file below.
		zr, err := gzip.NewReader(body)
		if err != nil {
			writeError(w, http.StatusBadRequest, "Content-Encoding gzip: %s", err)
			return
		}
		defer zr.Close()
		body = zr
	default:
		writeError(w, http.StatusBadRequest, "Content-Encoding %q: send the file as is or gzip", enc)
		return
	}
	g, err := s.o.VMs.Guest(r.Context(), id)
	if err != nil {
		writeErr(w, err)
		return
	}
	write := func(name string, body io.Reader) (uploaded, error) {
		p, err := guestPath(name, user)
		if err != nil {
			return uploaded{}, err
		}
		lim := &io.LimitedReader{R: body, N: maxUpload + 1}
		n, err := g.WriteFileWith(r.Context(), proto.FileParams{Path: p, Mode: 0o644, Parents: true, Owner: ownerFor(user)}, lim)
		if err != nil {
			return uploaded{}, err
		}
		if lim.N <= 0 {
			return uploaded{}, fmt.Errorf("%w: %s: larger than %d bytes", api.ErrInvalidArgument, p, maxUpload)
		}
		s.logf(id, "info", "file written", "path", p, "bytes", strconv.FormatInt(n, 10), "user", user)
		return uploaded{Name: path.Base(p), Type: "file", Path: p}, nil
	}
	var out []uploaded
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		u, err := write(r.URL.Query().Get("path"), body)
		if err != nil {
			writeFileErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, []uploaded{u})
		return
	}
	mr := multipart.NewReader(body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "reading the multipart upload: %s", err)
			return
		}
		if part.FormName() != "file" {
			continue
		}
		name := r.URL.Query().Get("path")
		if name == "" {
			name = partName(part)
		}
		u, err := write(name, part)
		if err != nil {
			writeFileErr(w, err)
			return
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		writeError(w, http.StatusBadRequest, "no file in the upload: a multipart form with \"file\" parts, or an octet-stream body")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// partName is a multipart part's filename as the SDK sent it, a path
// (Part.FileName keeps only its last element); guestPath checks it.
func partName(p *multipart.Part) string {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}
