package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// maxWatchLine bounds one event line of a guest's watch.
const maxWatchLine = 8 << 10

// Watch streams the changes under a guest directory to emit until ctx
// ends (then the agent stops watching) or emit fails; ready (if not nil)
// is called once the guest's watch is in place. Every event is checked
// (ParseWatchEvents) before emit sees it.
func (c *Client) Watch(ctx context.Context, p proto.WatchParams, ready func(), emit func(proto.WatchEvent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := ParseWatchEvents(pr, ready, emit)
		pr.CloseWithError(io.ErrClosedPipe)
		cancel() // a broken line or a failed emit ends the watch
		done <- err
	}()
	var r struct{}
	err := c.download(ctx, proto.MethodWatch, p, nil, pw, &r)
	pw.CloseWithError(io.EOF)
	if perr := <-done; perr != nil {
		return perr
	}
	return err
}

// ParseWatchEvents reads a guest's watch lines from r: first the start
// line (then ready is called, if not nil), then events, each handed to
// emit: a line of at most 8 KiB, JSON of a known op and a name that is a
// clean relative path of at most 4 KiB without NUL. Anything else is the
// guest breaking the protocol.
func ParseWatchEvents(r io.Reader, ready func(), emit func(proto.WatchEvent) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxWatchLine)
	started := false
	for sc.Scan() {
		var ev proto.WatchEvent
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ev); err != nil {
			return fmt.Errorf("%w: watch event: %v", proto.ErrFrame, err)
		}
		if !started {
			if ev != (proto.WatchEvent{Op: proto.WatchStart}) {
				return fmt.Errorf("%w: a watch began with %.80q, not its start", proto.ErrFrame, sc.Text())
			}
			started = true
			if ready != nil {
				ready()
			}
			continue
		}
		if err := CheckWatchEvent(ev); err != nil {
			return err
		}
		if err := emit(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return fmt.Errorf("%w: a watch event line over %d bytes", proto.ErrFrame, maxWatchLine)
		}
		return err
	}
	return nil
}

// CheckWatchEvent checks one event of a guest's watch.
func CheckWatchEvent(ev proto.WatchEvent) error {
	switch ev.Op {
	case proto.WatchCreate, proto.WatchWrite, proto.WatchRemove, proto.WatchRename, proto.WatchChmod:
	default:
		return fmt.Errorf("%w: watch event op %.20q", proto.ErrFrame, ev.Op)
	}
	n := ev.Name
	if n == "" || len(n) > maxFSPath || strings.ContainsRune(n, 0) || path.IsAbs(n) || path.Clean(n) != n || n == ".." || strings.HasPrefix(n, "../") {
		return fmt.Errorf("%w: watch event name %.60q: a clean path under the directory", proto.ErrFrame, n)
	}
	return nil
}
