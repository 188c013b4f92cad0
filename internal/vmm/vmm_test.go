package vmm

import (
	"os/exec"
	"testing"
	"time"
)

// TestWatchExitState: a watched process's exit status is there once Done
// is closed, and not before.
func TestWatchExitState(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		success bool
	}{
		{"clean exit", []string{"true"}, true},
		{"failure", []string{"false"}, false},
		{"killed", []string{"sh", "-c", "kill -9 $$"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tc.args[0], tc.args[1:]...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			h := Watch(cmd.Process, "console", "vmm")
			select {
			case <-h.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("the process did not end")
			}
			st := h.ExitState()
			if st == nil || st.Success() != tc.success {
				t.Fatalf("ExitState = %v, want success %v", st, tc.success)
			}
		})
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	h := Watch(sleeper.Process, "", "")
	if st := h.ExitState(); st != nil {
		t.Fatalf("ExitState of a running process = %v", st)
	}
	_ = sleeper.Process.Kill()
	<-h.Done()
}
