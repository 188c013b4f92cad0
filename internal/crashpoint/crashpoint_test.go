package crashpoint

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestAt runs this test binary as a child reaching steps: built with
// the crashpoints tag it traces them and dies of SIGKILL at the one
// named; built without, it does neither.
func TestAt(t *testing.T) {
	if os.Getenv("CRASHPOINT_CHILD") == "1" {
		At("verb", "one")
		At("verb", "two")
		At("verb", "three")
		return
	}
	trace := filepath.Join(t.TempDir(), "trace")
	cmd := exec.Command(os.Args[0], "-test.run", "^TestAt$")
	cmd.Env = append(os.Environ(), "CRASHPOINT_CHILD=1", "BANGER_CRASH_AT=verb:two", "BANGER_CRASH_TRACE="+trace)
	out, err := cmd.CombinedOutput()
	b, _ := os.ReadFile(trace)
	if !Enabled {
		if err != nil || len(b) != 0 {
			t.Fatalf("a build without crash points crashed or traced: %v, %q\n%s", err, b, out)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "killed") || !strings.Contains(string(out), "crashpoint: killed at verb:two") {
		t.Fatalf("child = %v\n%s", err, out)
	}
	if string(b) != "verb:one\nverb:two\n" {
		t.Fatalf("trace = %q", b)
	}
}
