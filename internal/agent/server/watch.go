package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// watchMaxDirs bounds the directories one recursive watch adds (each an
// inotify watch of the guest's kernel).
const watchMaxDirs = 8192

const watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_DELETE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_ATTRIB | unix.IN_ONLYDIR

// watch streams the changes under p.Path as WatchEvent lines until the
// host resets the stream.
func watch(_ *Server, c *call, p proto.WatchParams) (struct{}, error) {
	if !path.IsAbs(p.Path) {
		return struct{}{}, fmt.Errorf("path %q is not absolute", p.Path)
	}
	root := path.Clean(p.Path)
	if fi, err := os.Stat(root); err != nil {
		return struct{}{}, err
	} else if !fi.IsDir() {
		return struct{}{}, fmt.Errorf("%s is not a directory", root)
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return struct{}{}, fmt.Errorf("inotify: %w", err)
	}
	// Non-blocking, so the runtime's poller owns it and Close ends a Read.
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	w := &watcher{fd: fd, root: root, dirs: map[int]string{}, recursive: p.Recursive}
	if err := w.add(root); err != nil {
		return struct{}{}, err
	}
	if p.Recursive {
		if err := w.addTree(root); err != nil {
			return struct{}{}, err
		}
	}
	go func() {
		<-c.l.Abandoned(c.stream)
		f.Close()
	}()
	out := bufio.NewWriter(c.out(proto.Stdout))
	enc := json.NewEncoder(out)
	// Every watch is in place: what changes from here is seen.
	if err := enc.Encode(proto.WatchEvent{Op: proto.WatchStart}); err != nil || out.Flush() != nil {
		return struct{}{}, nil
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) || errors.Is(err, fs.ErrClosed) {
				return struct{}{}, nil
			}
			return struct{}{}, fmt.Errorf("reading inotify: %w", err)
		}
		for _, ev := range w.events(buf[:n]) {
			if err := enc.Encode(ev); err != nil {
				return struct{}{}, nil // the host went
			}
		}
		if err := out.Flush(); err != nil {
			return struct{}{}, nil
		}
	}
}

type watcher struct {
	fd        int
	root      string
	dirs      map[int]string // watch descriptor → directory
	recursive bool
}

func (w *watcher) add(dir string) error {
	if len(w.dirs) >= watchMaxDirs {
		return fmt.Errorf("watching more than %d directories under %s", watchMaxDirs, w.root)
	}
	wd, err := unix.InotifyAddWatch(w.fd, dir, watchMask)
	if err != nil {
		return fmt.Errorf("watching %s: %w", dir, err)
	}
	w.dirs[wd] = dir
	return nil
}

// addTree watches every directory under dir (symlinks not followed).
func (w *watcher) addTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir || !d.IsDir() {
			return nil
		}
		return w.add(p)
	})
}

// events decodes a read of inotify's into changes, relative to the root;
// a new directory of a recursive watch is watched in turn.
func (w *watcher) events(b []byte) []proto.WatchEvent {
	var out []proto.WatchEvent
	for len(b) >= unix.SizeofInotifyEvent {
		raw := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		end := unix.SizeofInotifyEvent + int(raw.Len)
		if end > len(b) {
			break
		}
		name := strings.TrimRight(string(b[unix.SizeofInotifyEvent:end]), "\x00")
		b = b[end:]
		dir, ok := w.dirs[int(raw.Wd)]
		if !ok {
			continue
		}
		if raw.Mask&unix.IN_IGNORED != 0 {
			delete(w.dirs, int(raw.Wd))
			continue
		}
		full := dir
		if name != "" {
			full = path.Join(dir, name)
		}
		rel, err := filepath.Rel(w.root, full)
		if err != nil || rel == "." {
			continue // the root itself: its own removal ends nothing here
		}
		// The agent's own writes go through a temporary file renamed
		// over the target: not a change of anyone's.
		if strings.HasPrefix(path.Base(full), writeTempPrefix) {
			continue
		}
		op := ""
		switch {
		case raw.Mask&unix.IN_MOVED_TO != 0 && raw.Mask&unix.IN_ISDIR == 0:
			// A file moved in, as write_file's are: made and written, as a
			// write in place shows (E2B's clients wait for the write).
			out = append(out, proto.WatchEvent{Name: rel, Op: proto.WatchCreate})
			op = proto.WatchWrite
		case raw.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
			op = proto.WatchCreate
			if w.recursive && raw.Mask&unix.IN_ISDIR != 0 {
				_ = w.add(full)
				_ = w.addTree(full)
			}
		case raw.Mask&unix.IN_MODIFY != 0:
			op = proto.WatchWrite
		case raw.Mask&unix.IN_DELETE != 0:
			op = proto.WatchRemove
		case raw.Mask&unix.IN_MOVED_FROM != 0:
			op = proto.WatchRename
		case raw.Mask&unix.IN_ATTRIB != 0:
			op = proto.WatchChmod
		default:
			continue
		}
		out = append(out, proto.WatchEvent{Name: rel, Op: op})
	}
	return out
}
