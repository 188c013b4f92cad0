package proc

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestIdentifyAndAlive(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	id, err := Identify(cmd.Process.Pid)
	if err != nil || id.StartTime == 0 {
		t.Fatalf("Identify = %+v, %v", id, err)
	}
	if !id.Alive() {
		t.Fatal("a running process is not alive")
	}
	// The same pid with another start time is another process.
	if (ID{PID: id.PID, StartTime: id.StartTime + 1}).Alive() {
		t.Fatal("a pid with a different start time counts as the same process")
	}
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for id.Alive() {
		if time.Now().After(deadline) {
			t.Fatal("a killed process stays alive")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := Identify(id.PID); !errors.Is(err, ErrGone) {
		t.Fatalf("Identify of a dead pid = %v", err)
	}
	self, err := Identify(os.Getpid())
	if err != nil || !self.Alive() {
		t.Fatalf("Identify(self) = %+v, %v", self, err)
	}
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		line  string
		start uint64
		state byte
		bad   bool
	}{
		{line: "42 (qemu-system-x86) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 12345 1000 100", start: 12345, state: 'S'},
		{line: "42 (a) b) (c) R 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 777 1000 100", start: 777, state: 'R'},
		{line: "42 (x) Z 1", bad: true},
		{line: "garbage", bad: true},
	} {
		st, state, err := parseStat(tc.line)
		if tc.bad {
			if err == nil {
				t.Errorf("parseStat(%q) accepted", tc.line)
			}
			continue
		}
		if err != nil || st != tc.start || state != tc.state {
			t.Errorf("parseStat(%q) = %d %c %v", tc.line, st, state, err)
		}
	}
}

// TestNaming finds a process by an argument, and not one without it.
func TestNaming(t *testing.T) {
	mark := t.TempDir() + "/run/vms/0123"
	// mark is $0 of a shell waiting in its read builtin: it neither
	// execs another program in its place (losing mark) nor forks copies
	// (which would carry mark too).
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cmd := exec.Command("sh", "-c", "read x", mark)
	cmd.Stdin = r
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if got := Naming(Args(), mark); len(got) != 1 || got[0] != cmd.Process.Pid {
		t.Fatalf("Naming(%q) = %v, want [%d]", mark, got, cmd.Process.Pid)
	}
	if got := Naming(Args(), mark+"-other"); len(got) != 0 {
		t.Fatalf("Naming of nothing = %v", got)
	}
}
