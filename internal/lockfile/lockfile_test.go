package lockfile

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestAcquireRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	if held, err := Held(path); err != nil || held {
		t.Fatalf("Held(missing) = %v, %v", held, err)
	}
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	if held, err := Held(path); err != nil || !held {
		t.Fatalf("Held while held = %v, %v", held, err)
	}
	if pid := Holder(path); pid != os.Getpid() {
		t.Fatalf("Holder = %d, want %d", pid, os.Getpid())
	}
	_, err = Acquire(path)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "held by pid") {
		t.Fatalf("second Acquire = %v, want ErrLocked naming the pid", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if held, _ := Held(path); held {
		t.Fatal("still held after Release")
	}
	l2, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	l2.Release()
}

// TestLockDiesWithHolder checks the property that makes a lock better than a
// pid file: a killed holder leaves nothing stale behind.
func TestLockDiesWithHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	// flock(1) from util-linux holds the lock while sleep runs.
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) not installed")
	}
	cmd := exec.Command("flock", "--exclusive", path, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	for {
		held, err := Held(path)
		if err != nil {
			t.Fatal(err)
		}
		if held {
			break
		}
	}
	if _, err := Acquire(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("Acquire while another process holds it = %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire after the holder died: %v", err)
	}
	l.Release()
}
