package roottest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Racer is test/racer running as a user, racing root in a directory.
type Racer struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	err   bytes.Buffer
}

// BuildRacer builds test/racer into a directory every user may reach,
// and returns its path.
func BuildRacer(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "banger-racer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "racer")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/bangerdev/banger/test/racer").CombinedOutput(); err != nil {
		t.Fatalf("building test/racer: %v\n%s", err, out)
	}
	return bin
}

// StartRacer runs the racer at bin as u, in the directory cwd (relative
// -dir and -target are taken from there: a command line naming a
// layout's directory would count as a process using it), with args
// (racer's flags). Stop ends it.
func StartRacer(t testing.TB, bin string, u User, cwd string, args ...string) *Racer {
	t.Helper()
	var err error
	r := &Racer{cmd: exec.Command(bin, args...)}
	r.cmd.Dir = cwd
	r.cmd.Stderr = &r.err
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.out = bufio.NewReader(stdout)
	r.cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID), Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting the racer: %v", err)
	}
	t.Cleanup(func() { _ = r.cmd.Process.Kill() })
	return r
}

// say sends the racer a command and waits for its answer.
func (r *Racer) say(t testing.TB, cmd, want string) {
	t.Helper()
	if _, err := io.WriteString(r.stdin, cmd+"\n"); err != nil {
		t.Fatalf("telling the racer %s: %v\n%s", cmd, err, r.err.String())
	}
	line, err := r.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != want {
		t.Fatalf("the racer answered %s with %q, %v\n%s", cmd, line, err, r.err.String())
	}
}

// Pause stops the racer planting links until Resume: the test may then
// set up, as root, what the racer would otherwise turn.
func (r *Racer) Pause(t testing.TB) { r.say(t, "pause", "paused") }

// Resume has the racer plant links again.
func (r *Racer) Resume(t testing.TB) { r.say(t, "resume", "resumed") }

// Stop ends the racer and returns how many links it planted.
func (r *Racer) Stop(t testing.TB) int {
	t.Helper()
	r.stdin.Close()
	rest, _ := io.ReadAll(r.out)
	if err := r.cmd.Wait(); err != nil {
		t.Fatalf("the racer: %v\n%s", err, r.err.String())
	}
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(string(rest)), "planted "))
	if err != nil {
		t.Fatalf("the racer said %q", rest)
	}
	return n
}

// Snapshot is every path under a directory with its type, mode, owner
// and content hash: what must not change while a racer plays.
func Snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		v := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += fmt.Sprintf(" %x", sha256.Sum256(b))
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		}
		snap[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// SameSnapshot fails t naming every path that differs between two
// snapshots.
func SameSnapshot(t testing.TB, before, after map[string]string) {
	t.Helper()
	var diff []string
	for p, v := range before {
		if after[p] != v {
			diff = append(diff, fmt.Sprintf("%s: %s → %q", p, v, after[p]))
		}
	}
	for p, v := range after {
		if _, ok := before[p]; !ok {
			diff = append(diff, fmt.Sprintf("%s: new, %s", p, v))
		}
	}
	if len(diff) > 0 {
		t.Fatalf("changed outside:\n%s", strings.Join(diff, "\n"))
	}
}
