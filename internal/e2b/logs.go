package e2b

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
)

// A sandbox's log (GET /v2/sandboxes/{id}/logs) is what its E2B API did
// for it, as envd's log is in E2B: created, processes started and ended,
// files uploaded, paused, resumed, timeouts set. It is kept in memory,
// the newest maxLogEntries a sandbox, and goes with the sandbox (or a
// daemon restart).
const (
	maxLogEntries = 1000
	maxLogLimit   = 1000
	maxLogField   = 256 // bytes of a field's value kept
)

type logEntry struct {
	Timestamp time.Time         `json:"timestamp"`
	Level     string            `json:"level"`
	Message   string            `json:"message"`
	Fields    map[string]string `json:"fields"`
}

// levels orders E2B's log levels.
var levels = map[string]int{"debug": 0, "info": 1, "warn": 2, "error": 3}

// logf adds an entry to sandbox id's log, while the sandbox is there; kv
// are field names and values, each value cut to maxLogField bytes.
func (s *Service) logf(id, level, msg string, kv ...string) {
	e := logEntry{Timestamp: s.o.Now().UTC(), Level: level, Message: msg, Fields: map[string]string{"sandboxID": id}}
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if len(v) > maxLogField {
			v = v[:maxLogField] + "…"
		}
		e.Fields[kv[i]] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sandboxes[id]; !ok {
		return // gone (a process's end after its sandbox's): nothing to keep
	}
	l := append(s.logs[id], e)
	if len(l) > maxLogEntries {
		l = append(l[:0:0], l[len(l)-maxLogEntries:]...)
	}
	s.logs[id] = l
}

// logsOf is a sandbox's entries at or after cursor (Unix ms) forward, or
// at or before it backward, of at least level and holding search, at
// most limit.
func (s *Service) logsOf(id string, cursor int64, backward bool, level, search string, limit int) []logEntry {
	s.mu.Lock()
	all := append([]logEntry(nil), s.logs[id]...)
	s.mu.Unlock()
	out := []logEntry{}
	for i := range all {
		e := all[i]
		if backward {
			e = all[len(all)-1-i]
		}
		ms := e.Timestamp.UnixMilli()
		if cursor > 0 && (!backward && ms < cursor || backward && ms > cursor) {
			continue
		}
		if levels[e.Level] < levels[level] || search != "" && !strings.Contains(e.Message, search) {
			continue
		}
		if out = append(out, e); len(out) == limit {
			break
		}
	}
	return out
}

// logQuery reads a logs request: its cursor (or v1's start), limit,
// direction, level and search.
func logQuery(r *http.Request, cursorName string) (cursor int64, backward bool, level, search string, limit int, err error) {
	q := r.URL.Query()
	limit = maxLogLimit
	if v := q.Get(cursorName); v != "" {
		if cursor, err = strconv.ParseInt(v, 10, 64); err != nil || cursor < 0 {
			return 0, false, "", "", 0, fmt.Errorf("%w: %s %q: Unix milliseconds", api.ErrInvalidArgument, cursorName, v)
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 || limit > maxLogLimit {
			return 0, false, "", "", 0, fmt.Errorf("%w: limit %q: 0 to %d", api.ErrInvalidArgument, v, maxLogLimit)
		}
	}
	switch d := q.Get("direction"); d {
	case "", "forward":
	case "backward":
		backward = true
	default:
		return 0, false, "", "", 0, fmt.Errorf("%w: direction %q: forward or backward", api.ErrInvalidArgument, d)
	}
	level = q.Get("level")
	if _, ok := levels[level]; !ok && level != "" {
		return 0, false, "", "", 0, fmt.Errorf("%w: level %q: debug, info, warn or error", api.ErrInvalidArgument, level)
	}
	if search = q.Get("search"); len(search) > 256 {
		return 0, false, "", "", 0, fmt.Errorf("%w: search: at most 256 bytes", api.ErrInvalidArgument)
	}
	return cursor, backward, level, search, limit, nil
}

// logsV2: GET /v2/sandboxes/{id}/logs.
func (s *Service) logsV2(w http.ResponseWriter, r *http.Request, c caller, sb sandbox) {
	cursor, backward, level, search, limit, err := logQuery(r, "cursor")
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"logs": s.logsOf(sb.ID, cursor, backward, level, search, limit)})
}

// logsV1: GET /sandboxes/{id}/logs (deprecated by E2B): lines and
// entries from start.
func (s *Service) logsV1(w http.ResponseWriter, r *http.Request, c caller, sb sandbox) {
	start, _, _, _, limit, err := logQuery(r, "start")
	if err != nil {
		writeErr(w, err)
		return
	}
	type line struct {
		Timestamp time.Time `json:"timestamp"`
		Line      string    `json:"line"`
	}
	entries := s.logsOf(sb.ID, start, false, "", "", limit)
	lines := make([]line, 0, len(entries))
	for _, e := range entries {
		lines = append(lines, line{e.Timestamp, e.Level + ": " + e.Message})
	}
	writeJSON(w, http.StatusOK, map[string]any{"logs": lines, "logEntries": entries})
}
