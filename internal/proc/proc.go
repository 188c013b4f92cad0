// Package proc identifies processes across daemon restarts: a pid alone
// may be reused by an unrelated process, so a VMM is known by its pid and
// its start time (in clock ticks since boot, from /proc/PID/stat).
package proc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrGone means the process no longer exists (or is another process now).
var ErrGone = errors.New("process gone")

// ID identifies one process for its lifetime.
type ID struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // clock ticks after boot
}

// Identify reads the identity of a running process.
func Identify(pid int) (ID, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ID{}, fmt.Errorf("pid %d: %w", pid, ErrGone)
		}
		return ID{}, err
	}
	st, state, err := parseStat(string(b))
	if err != nil {
		return ID{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	if state == 'Z' || state == 'X' {
		return ID{}, fmt.Errorf("pid %d has exited: %w", pid, ErrGone)
	}
	return ID{PID: pid, StartTime: st}, nil
}

// parseStat returns the start time (field 22) and state (field 3) of a
// /proc/PID/stat line; the command name (field 2) may hold spaces and
// parentheses, so fields are counted from its last ')'.
func parseStat(line string) (uint64, byte, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 || i+2 >= len(line) {
		return 0, 0, errors.New("malformed stat")
	}
	fields := strings.Fields(line[i+2:])
	if len(fields) < 20 {
		return 0, 0, errors.New("malformed stat")
	}
	st, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("malformed stat start time: %w", err)
	}
	return st, fields[0][0], nil
}

// Alive reports whether id still names the same running process: a pid
// now held by another process (a different start time) is not alive.
func (id ID) Alive() bool {
	cur, err := Identify(id.PID)
	return err == nil && cur.StartTime == id.StartTime
}

// Args reads the command line of every process but this one, once: a
// caller matching many patterns reads /proc a single time.
func Args() map[int][]string {
	entries, _ := os.ReadDir("/proc")
	out := map[int][]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && len(b) > 0 {
			out[pid] = strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		}
	}
	return out
}

// Naming lists the processes of args (from Args) that have an argument
// containing s: the VMM and helpers of a VM, by its runtime directory,
// when no record has their pid.
func Naming(args map[int][]string, s string) []int {
	var pids []int
	for pid, a := range args {
		for _, arg := range a {
			if strings.Contains(arg, s) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}
