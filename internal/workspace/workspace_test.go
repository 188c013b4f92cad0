package workspace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/server"
)

// env is a host repository and a "guest": the real agent server over an
// in-memory link, writing to a directory of the test's.
type env struct {
	t        *testing.T
	host     string
	guestDir string
	s        *Service
	a        Agent
	placed   string
	state    string // the VM's state directory
}

func sh(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

func write(t *testing.T, root, rel, body string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func newEnv(t *testing.T) *env {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("git is needed (make deps installs it): %v", err)
	}
	e := &env{t: t, host: filepath.Join(t.TempDir(), "proj"), guestDir: filepath.Join(t.TempDir(), "workspace")}
	write(t, e.host, "main.go", "package main\n", 0o644)
	write(t, e.host, "build.sh", "#!/bin/sh\necho built > out.txt\n", 0o755)
	write(t, e.host, "docs/readme.md", "# hi\n", 0o644)
	write(t, e.host, ".gitignore", "out.txt\n*.log\n", 0o644)
	if err := os.Symlink("docs/readme.md", filepath.Join(e.host, "README")); err != nil {
		t.Fatal(err)
	}
	sh(t, e.host, "git", "init", "-q", "-b", "main")
	sh(t, e.host, "git", "add", "-A")
	sh(t, e.host, "git", "commit", "-qm", "first")
	write(t, e.host, "notes.txt", "untracked secret\n", 0o600)
	write(t, e.host, "debug.log", "ignored\n", 0o644)

	a, b := net.Pipe()
	srv := &server.Server{}
	go func() { _ = srv.Serve(b) }()
	c := client.New(a)
	t.Cleanup(func() { c.Close(); b.Close() })
	e.a = c
	state := t.TempDir()
	e.state = state
	e.s = New(Config{VMs: envVMs{e}, GuestDir: e.guestDir})
	return e
}

func nop(api.WorkspaceProgress) {}

func TestPrepareSelectsAndGitWorks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	dry, err := e.s.Prepare(ctx, api.WorkspacePrepareParams{WorkspaceSpec: api.WorkspaceSpec{Path: e.host}, DryRun: true}, nop)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{".gitignore", "README", "build.sh", "docs/readme.md", "main.go"}; !slices.Equal(dry.List, want) {
		t.Fatalf("dry run = %v; want the tracked files %v", dry.List, want)
	}
	if _, err := os.Stat(e.guestDir); !os.IsNotExist(err) {
		t.Fatal("a dry run created the workspace")
	}
	withUntracked, _ := e.s.Prepare(ctx, api.WorkspacePrepareParams{WorkspaceSpec: api.WorkspaceSpec{Path: e.host, IncludeUntracked: true}, DryRun: true}, nop)
	if !slices.Contains(withUntracked.List, "notes.txt") || slices.Contains(withUntracked.List, "debug.log") {
		t.Fatalf("--include-untracked = %v; want notes.txt, not the ignored debug.log", withUntracked.List)
	}

	r, err := e.s.Prepare(ctx, api.WorkspacePrepareParams{Name: "vm", WorkspaceSpec: api.WorkspaceSpec{Path: e.host}}, nop)
	if err != nil || r.Files != 5 || len(r.Base) != 40 || e.placed != e.guestDir {
		t.Fatalf("Prepare = %+v, %v (placed %q)", r, err, e.placed)
	}
	if _, err := os.Stat(filepath.Join(e.guestDir, "notes.txt")); !os.IsNotExist(err) {
		t.Fatal("an untracked file went by default")
	}
	if fi, err := os.Stat(filepath.Join(e.guestDir, "build.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("build.sh mode: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(e.guestDir, "README")); l != "docs/readme.md" {
		t.Fatalf("symlink = %q", l)
	}
	// git works inside: history, branch, and a clean status.
	if st := sh(t, e.guestDir, "git", "status", "--porcelain"); st != "" {
		t.Fatalf("git status in the workspace:\n%s", st)
	}
	if log := sh(t, e.guestDir, "git", "log", "--oneline"); !strings.Contains(log, "first") {
		t.Fatalf("git log = %q", log)
	}
	if br := sh(t, e.guestDir, "git", "branch", "--show-current"); strings.TrimSpace(br) != "main" {
		t.Fatalf("branch = %q", br)
	}
}

func TestStatusPullPushConflicts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.s.Prepare(ctx, api.WorkspacePrepareParams{Name: "vm", WorkspaceSpec: api.WorkspaceSpec{Path: e.host}}, nop); err != nil {
		t.Fatal(err)
	}
	ref := api.WorkspaceRefParams{Name: "vm"}
	st, err := e.s.Status(ctx, ref)
	if err != nil || len(changed(st.Host))+len(changed(st.Guest)) != 0 {
		t.Fatalf("status right after prepare = %+v, %v", st, err)
	}
	// The guest builds something and edits a file; the host edits
	// another.
	write(t, e.guestDir, "out.txt", "built\n", 0o644)
	write(t, e.guestDir, "main.go", "package main\n\nfunc main() {}\n", 0o644)
	os.Remove(filepath.Join(e.guestDir, "docs/readme.md"))
	write(t, e.host, "build.sh", "#!/bin/sh\necho built twice > out.txt\n", 0o755)
	st, _ = e.s.Status(ctx, ref)
	if !slices.Equal(st.Guest.Added, []string{"out.txt"}) || !slices.Equal(st.Guest.Modified, []string{"main.go"}) ||
		!slices.Equal(st.Guest.Deleted, []string{"docs/readme.md"}) || !slices.Equal(st.Host.Modified, []string{"build.sh"}) || len(st.Conflicts) != 0 {
		t.Fatalf("status = %+v", st)
	}
	r, err := e.s.Pull(ctx, ref, nop)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.host, "out.txt")); string(b) != "built\n" {
		t.Fatalf("pulled out.txt = %q (%+v)", b, r)
	}
	if _, err := os.Stat(filepath.Join(e.host, "docs/readme.md")); !os.IsNotExist(err) {
		t.Fatal("a file deleted in the guest stayed on the host")
	}
	if b, _ := os.ReadFile(filepath.Join(e.host, "build.sh")); !strings.Contains(string(b), "twice") {
		t.Fatal("pull replaced a host-only change")
	}
	if _, err := e.s.Push(ctx, ref, nop); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.guestDir, "build.sh")); !strings.Contains(string(b), "twice") {
		t.Fatal("push did not carry build.sh")
	}
	if fi, _ := os.Stat(filepath.Join(e.guestDir, "build.sh")); fi.Mode().Perm() != 0o755 {
		t.Fatalf("push lost the mode: %v", fi.Mode())
	}
	st, _ = e.s.Status(ctx, ref)
	if len(changed(st.Host))+len(changed(st.Guest)) != 0 {
		t.Fatalf("status after pull and push = %+v", st)
	}

	// Both sides change main.go: refused both ways, nothing moves.
	write(t, e.guestDir, "main.go", "guest\n", 0o644)
	write(t, e.host, "main.go", "host\n", 0o644)
	if _, err := e.s.Pull(ctx, ref, nop); !errors.Is(err, api.ErrInUse) || !strings.Contains(err.Error(), "main.go") {
		t.Fatalf("pull over a conflict: %v", err)
	}
	if _, err := e.s.Push(ctx, ref, nop); !errors.Is(err, api.ErrInUse) {
		t.Fatalf("push over a conflict: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.host, "main.go")); string(b) != "host\n" {
		t.Fatal("a refused pull changed the host")
	}
	// A host file the sync never put there (ignored) is not overwritten.
	write(t, e.guestDir, "debug.log", "from the guest\n", 0o644)
	if _, err := e.s.Pull(ctx, ref, nop); err == nil || !strings.Contains(err.Error(), "debug.log") {
		t.Fatalf("pull over an ignored host file: %v", err)
	}
	r, err = e.s.Pull(ctx, api.WorkspaceRefParams{Name: "vm", Force: true}, nop)
	if err != nil || !slices.Contains(r.Overwritten, "main.go") || !slices.Contains(r.Overwritten, "debug.log") {
		t.Fatalf("pull --force = %+v, %v", r, err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.host, "main.go")); string(b) != "guest\n" {
		t.Fatal("pull --force did not take the guest's")
	}
}

// cutAgent cuts every GetTree off after a few bytes, as a killed
// transfer would.
type cutAgent struct{ Agent }

func (c cutAgent) GetTree(ctx context.Context, dir string, paths []string, w io.Writer) (proto.TreeResult, error) {
	pr, pw := io.Pipe()
	go func() {
		_, err := c.Agent.GetTree(ctx, dir, paths, pw)
		pw.CloseWithError(err)
	}()
	_, _ = io.CopyN(w, pr, 700)
	pr.Close()
	return proto.TreeResult{}, errors.New("cut off")
}

func TestInterruptedPullLeavesTheHost(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.s.Prepare(ctx, api.WorkspacePrepareParams{Name: "vm", WorkspaceSpec: api.WorkspaceSpec{Path: e.host}}, nop); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		write(t, e.guestDir, filepath.Join("gen", string(rune('a'+i))+".txt"), strings.Repeat("x", 300), 0o644)
	}
	write(t, e.guestDir, "main.go", "changed in the guest\n", 0o644)
	before := sh(t, e.host, "sh", "-c", "find . -path ./.git -prune -o -print | sort | xargs -d '\\n' sha256sum 2>/dev/null; true")
	e.a = cutAgent{e.a}
	if _, err := e.s.Pull(ctx, api.WorkspaceRefParams{Name: "vm"}, nop); err == nil {
		t.Fatal("a cut pull succeeded")
	}
	after := sh(t, e.host, "sh", "-c", "find . -path ./.git -prune -o -print | sort | xargs -d '\\n' sha256sum 2>/dev/null; true")
	if before != after {
		t.Fatalf("a cut pull changed the host tree:\nbefore\n%s\nafter\n%s", before, after)
	}
	if stale, _ := filepath.Glob(filepath.Join(filepath.Dir(e.host), ".banger-stage-*")); len(stale) != 0 {
		t.Fatalf("staging left beside the tree: %v", stale)
	}
}

func TestExportApplies(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.s.Prepare(ctx, api.WorkspacePrepareParams{Name: "vm", WorkspaceSpec: api.WorkspaceSpec{Path: e.host}}, nop); err != nil {
		t.Fatal(err)
	}
	// In the guest: a commit, then uncommitted work, a binary file, a
	// build output git ignores.
	write(t, e.guestDir, "main.go", "package main\n\nfunc main() { println(1) }\n", 0o644)
	sh(t, e.guestDir, "git", "commit", "-qam", "in the guest")
	write(t, e.guestDir, "docs/new.md", "new\n", 0o644)
	write(t, e.guestDir, "logo.bin", "\x00\x01\x02binary\xff", 0o644)
	write(t, e.guestDir, "out.txt", "ignored build output\n", 0o644)
	guestHead := sh(t, e.guestDir, "git", "rev-parse", "HEAD")
	r, err := e.s.Export(ctx, api.WorkspaceExportParams{Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Files != 3 || !strings.Contains(r.Patch, "GIT binary patch") {
		t.Fatalf("export: %d files\n%s", r.Files, r.Patch)
	}
	if sh(t, e.guestDir, "git", "rev-parse", "HEAD") != guestHead || !strings.Contains(sh(t, e.guestDir, "git", "status", "--porcelain"), "logo.bin") {
		t.Fatal("export changed the guest's repository")
	}
	if st := sh(t, e.host, "git", "status", "--porcelain"); strings.Contains(st, "main.go") {
		t.Fatalf("export touched the host's tree: %s", st)
	}
	patch := filepath.Join(t.TempDir(), "p.diff")
	if err := os.WriteFile(patch, []byte(r.Patch), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, e.host, "git", "apply", "--check", patch)
	sh(t, e.host, "git", "apply", patch)
	if b, _ := os.ReadFile(filepath.Join(e.host, "logo.bin")); string(b) != "\x00\x01\x02binary\xff" {
		t.Fatalf("applied binary = %q", b)
	}
}

// TestManyFiles: trees whose path lists exceed an agent frame many times
// over go in, come back deleted, and go out again.
func TestManyFiles(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	long := strings.Repeat("x", 90)
	for i := range 4000 {
		write(t, e.host, filepath.Join("many", fmt.Sprintf("%s-%04d.txt", long, i)), fmt.Sprint(i), 0o644)
	}
	sh(t, e.host, "git", "add", "many")
	r, err := e.s.Prepare(ctx, api.WorkspacePrepareParams{Name: "vm", WorkspaceSpec: api.WorkspaceSpec{Path: e.host}}, nop)
	if err != nil || r.Files != 4005 {
		t.Fatalf("Prepare = %+v, %v", r, err)
	}
	// A status of the whole tree: its manifest is far over a frame.
	if st, err := e.s.Status(ctx, api.WorkspaceRefParams{Name: "vm"}); err != nil || len(changed(st.Guest)) != 0 {
		t.Fatalf("status of 4005 files = %+v, %v", st.Guest, err)
	}
	if err := os.RemoveAll(filepath.Join(e.guestDir, "many")); err != nil {
		t.Fatal(err)
	}
	res, err := e.s.Pull(ctx, api.WorkspaceRefParams{Name: "vm"}, nop)
	if err != nil || len(res.Changes.Deleted) != 4000 {
		t.Fatalf("Pull of 4000 deletions = %d, %v", len(res.Changes.Deleted), err)
	}
	if _, err := os.Stat(filepath.Join(e.host, "many")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(e.host, "many"))
		if len(entries) != 0 {
			t.Fatalf("%d files left on the host", len(entries))
		}
	}
	sh(t, e.host, "git", "checkout", "--", "many")
	if res, err := e.s.Push(ctx, api.WorkspaceRefParams{Name: "vm"}, nop); err != nil || len(res.Changes.Added) != 4000 {
		t.Fatalf("Push of 4000 files = %+v, %v", res.Changes.Added[:min(3, len(res.Changes.Added))], err)
	}
}

// TestReconcileFinishesAPrepare: a daemon that died after a prepare
// saved the workspace's state, before the VM's record named it, has the
// record finished at its next start; a VM without a workspace is left.
func TestReconcileFinishesAPrepare(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.s.Prepare(ctx, api.WorkspacePrepareParams{Name: "vm", WorkspaceSpec: api.WorkspaceSpec{Path: e.host}}, nop); err != nil {
		t.Fatal(err)
	}
	e.placed = "" // as if the record had not been written
	if err := e.s.Reconcile(ctx, []string{"vm"}); err != nil || e.placed != e.guestDir {
		t.Fatalf("reconcile: %v, record says %q, want %q", err, e.placed, e.guestDir)
	}
	e2 := newEnv(t) // a VM that never had one
	if err := e2.s.Reconcile(ctx, []string{"vm"}); err != nil || e2.placed != "" {
		t.Fatalf("reconcile of a VM without a workspace: %v, %q", err, e2.placed)
	}
}

// envVMs is the VM service as the tests give it: one VM, "vm".
type envVMs struct{ e *env }

func (v envVMs) Agent(_ context.Context, name string) (Agent, error) {
	if name != "vm" {
		return nil, api.ErrNotFound
	}
	return v.e.a, nil
}

func (v envVMs) StateDir(context.Context, string) (string, error) { return v.e.state, nil }

func (v envVMs) Placed(_ context.Context, _, dir string) error { v.e.placed = dir; return nil }

// TestApplyWhatWasReviewed: an exported patch lands in the host tree with
// its own sha256 only; another hash, a patch into .git or
// .gitattributes, a path outside and a patch that no longer applies are
// refused, and the host tree is unchanged by each.
func TestApplyWhatWasReviewed(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.s.Prepare(ctx, api.WorkspacePrepareParams{Name: "vm", WorkspaceSpec: api.WorkspaceSpec{Path: e.host}}, nop); err != nil {
		t.Fatal(err)
	}
	write(t, e.guestDir, "main.go", "package main\n\nfunc main() { println(2) }\n", 0o644)
	write(t, e.guestDir, "docs/new.md", "new\n", 0o644)
	r, err := e.s.Export(ctx, api.WorkspaceExportParams{Name: "vm"})
	if err != nil || r.SHA256 == "" {
		t.Fatalf("export = %+v, %v", r, err)
	}
	before := sh(t, e.host, "git", "status", "--porcelain")
	hostile := func(path string) string {
		return "diff --git a/" + path + " b/" + path + "\nnew file mode 100644\nindex 0000000..3e75765\n--- /dev/null\n+++ b/" + path + "\n@@ -0,0 +1 @@\n+x\n"
	}
	for _, tc := range []struct {
		name, patch, sum string
		want             error
	}{
		{"another hash", r.Patch, strings.Repeat("0", 64), api.ErrInvalidArgument},
		{"a hook", hostile(".git/hooks/post-checkout"), "", api.ErrGuestRefused},
		{"a hook, in other case", hostile("sub/.GIT/config"), "", api.ErrGuestRefused},
		{"attributes", hostile(".gitattributes"), "", api.ErrGuestRefused},
		{"outside", hostile("../outside.txt"), "", api.ErrGuestRefused},
	} {
		sum := tc.sum
		if sum == "" {
			h := sha256.Sum256([]byte(tc.patch))
			sum = hex.EncodeToString(h[:])
		}
		if _, err := e.s.Apply(ctx, api.WorkspaceApplyParams{Name: "vm", Patch: tc.patch, SHA256: sum}); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if after := sh(t, e.host, "git", "status", "--porcelain"); after != before {
			t.Fatalf("%s changed the host tree: %q", tc.name, after)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(e.host), "outside.txt")); err == nil {
		t.Fatal("a patch wrote outside the tree")
	}
	res, err := e.s.Apply(ctx, api.WorkspaceApplyParams{Name: "vm", Patch: r.Patch, SHA256: r.SHA256})
	if err != nil || len(res.Files) != 2 {
		t.Fatalf("apply = %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.host, "main.go")); !strings.Contains(string(b), "println(2)") {
		t.Fatalf("main.go after apply: %q", b)
	}
	// Again: it no longer applies, and says so.
	if _, err := e.s.Apply(ctx, api.WorkspaceApplyParams{Name: "vm", Patch: r.Patch, SHA256: r.SHA256}); !errors.Is(err, api.ErrInUse) {
		t.Fatalf("applied twice: %v", err)
	}
}

// TestStatusCache: a status reads again only the host files whose stamp
// changed, and still sees a change whose size and mtime were put back
// (its ctime moved), as git does.
func TestStatusCache(t *testing.T) {
	e := newEnv(t)
	e.s.hashes.Now = func() time.Time { return time.Now().Add(time.Hour) } // every file long unchanged
	ctx := context.Background()
	if _, err := e.s.Prepare(ctx, api.WorkspacePrepareParams{Name: "vm", WorkspaceSpec: api.WorkspaceSpec{Path: e.host}}, nop); err != nil {
		t.Fatal(err)
	}
	ref := api.WorkspaceRefParams{Name: "vm"}
	if st, err := e.s.Status(ctx, ref); err != nil || len(changed(st.Host)) != 0 {
		t.Fatalf("status right after prepare = %+v, %v", st, err)
	}
	if e.s.hashes.Len() == 0 {
		t.Fatal("the host's hashes were not cached")
	}
	p := filepath.Join(e.host, "main.go")
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	write(t, e.host, "main.go", "package xxxx\n", 0o644) // the same size
	if err := os.Chtimes(p, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	st, err := e.s.Status(ctx, ref)
	if err != nil || !slices.Equal(st.Host.Modified, []string{"main.go"}) {
		t.Fatalf("a change with its size and mtime put back: %+v, %v", st.Host, err)
	}
}
