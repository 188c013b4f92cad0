package workspace

// Attacks on the host through workspace sync: a guest with root speaks
// the agent protocol itself, so it can answer a manifest or a get_tree
// with anything. Each case is one attack, carried out against a real
// host repository; each checks that the host tree (its .git included)
// and everything beside it are as they were, and that the error says
// whose fault it is.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/tree"
	"github.com/bangerdev/banger/internal/roottest"
)

// forged is a guest agent that lies: its manifest and its get_tree
// stream are the test's, where set; the rest is the real agent's.
type forged struct {
	Agent
	manifest func([]proto.TreeEntry) []proto.TreeEntry
	stream   []byte
}

func (f forged) Manifest(ctx context.Context, p proto.ManifestParams, n int, b int64) ([]proto.TreeEntry, error) {
	m, err := f.Agent.Manifest(ctx, p, n, b)
	if err != nil || f.manifest == nil {
		return m, err
	}
	return f.manifest(m), nil
}

func (f forged) GetTree(ctx context.Context, dir string, paths []string, w io.Writer) (proto.TreeResult, error) {
	if f.stream == nil {
		return f.Agent.GetTree(ctx, dir, paths, w)
	}
	_, err := w.Write(f.stream)
	return proto.TreeResult{}, err
}

func sum(body string) string {
	s := sha256.Sum256([]byte(body))
	return hex.EncodeToString(s[:])
}

func fileEntry(path, body string) proto.TreeEntry {
	return proto.TreeEntry{Path: path, Type: "f", Mode: 0o644, Size: int64(len(body)), SHA256: sum(body)}
}

// tarEntry is one entry of a hand-made stream.
type tarEntry struct {
	h    tar.Header
	body string
}

func tarFile(name, body string) tarEntry {
	return tarEntry{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}, body}
}

func tarOf(t *testing.T, prefix []byte, entries ...tarEntry) []byte {
	t.Helper()
	b := bytes.NewBuffer(slices.Clone(prefix))
	tw := tar.NewWriter(b)
	for _, e := range entries {
		if err := tw.WriteHeader(&e.h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// gnuTar makes a stream with the system's tar, for what Go's writer
// will not write (sparse files).
func gnuTar(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("tar", append([]string{"-C", dir, "-cf", "-"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tar %v: %v", args, err)
	}
	return out
}

// snapshot is every path under dir, with its type, mode and content
// hash, the parent's other entries too (a staging directory left, a
// file written beside the tree).
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(filepath.Dir(dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v", p, fi.Mode())
		if fi.Mode().IsRegular() {
			body, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %s", sum(string(body)))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func prepared(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	if _, err := e.s.Prepare(context.Background(), api.WorkspacePrepareParams{Name: "vm", WorkspaceSpec: api.WorkspaceSpec{Path: e.host}}, nop); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestHostilePull: a pull refuses each attack with the error's sentinel,
// and leaves the host exactly as it was.
func TestHostilePull(t *testing.T) {
	outside := t.TempDir()
	for _, tc := range []struct {
		name   string
		attack func(t *testing.T, e *env)
		want   error
	}{
		{"the stream sends .git/hooks/pre-commit", func(t *testing.T, e *env) {
			hook := fileEntry(".git/hooks/pre-commit", "#!/bin/sh\ntouch /tmp/pwned\n")
			e.a = forged{Agent: e.a,
				manifest: func(m []proto.TreeEntry) []proto.TreeEntry { return append(m, hook, fileEntry("new.txt", "x")) },
				stream:   tarOf(t, nil, tarFile("new.txt", "x"), tarEntry{tar.Header{Name: hook.Path, Typeflag: tar.TypeReg, Mode: 0o755, Size: hook.Size}, "#!/bin/sh\ntouch /tmp/pwned\n"})}
		}, api.ErrGuestRefused},
		{"the stream sends .GIT/config", func(t *testing.T, e *env) {
			e.a = forged{Agent: e.a,
				manifest: func(m []proto.TreeEntry) []proto.TreeEntry { return append(m, fileEntry("new.txt", "x")) },
				stream:   tarOf(t, nil, tarFile("new.txt", "x"), tarFile(".GIT/config", "[core]\n\tfsmonitor = touch /tmp/pwned\n"))}
		}, api.ErrGuestRefused},
		{"a file named .git replaces the repository", func(t *testing.T, e *env) {
			e.a = forged{Agent: e.a,
				manifest: func(m []proto.TreeEntry) []proto.TreeEntry { return append(m, fileEntry("new.txt", "x")) },
				stream:   tarOf(t, nil, tarFile("new.txt", "x"), tarFile(".git", "gitdir: /tmp/evil\n"))}
		}, api.ErrGuestRefused},
		{"a file where the host has a directory", func(t *testing.T, e *env) {
			e.a = forged{Agent: e.a,
				manifest: func(m []proto.TreeEntry) []proto.TreeEntry {
					m = slices.DeleteFunc(m, func(x proto.TreeEntry) bool { return strings.HasPrefix(x.Path, "docs") })
					return append(m, fileEntry("docs", "flat"))
				},
				stream: tarOf(t, nil, tarFile("docs", "flat"))}
		}, api.ErrInUse},
		{"the stream sends a file the host did not ask for", func(t *testing.T, e *env) {
			write(t, e.guestDir, "main.go", "changed\n", 0o644)
			e.a = forged{Agent: e.a, stream: tarOf(t, nil, tarFile("main.go", "changed\n"), tarFile("evil.sh", "rm -rf ~"))}
		}, api.ErrGuestRefused},
		{"the stream names deletions", func(t *testing.T, e *env) {
			write(t, e.guestDir, "main.go", "changed\n", 0o644)
			del, err := tree.DeleteHeader([]string{"build.sh", "docs/readme.md"})
			if err != nil {
				t.Fatal(err)
			}
			e.a = forged{Agent: e.a, stream: tarOf(t, del, tarFile("main.go", "changed\n"))}
		}, api.ErrGuestRefused},
		{"the stream sends more bytes than the manifest said", func(t *testing.T, e *env) {
			write(t, e.guestDir, "main.go", "changed\n", 0o644)
			e.a = forged{Agent: e.a, stream: tarOf(t, nil, tarFile("main.go", strings.Repeat("A", 1<<20)))}
		}, api.ErrGuestRefused},
		{"the stream sends a symlink for a file", func(t *testing.T, e *env) {
			write(t, e.guestDir, "main.go", "changed\n", 0o644)
			e.a = forged{Agent: e.a, stream: tarOf(t, nil, tarEntry{tar.Header{Name: "main.go", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}, ""})}
		}, api.ErrGuestRefused},
		{"the stream sends a device", func(t *testing.T, e *env) {
			write(t, e.guestDir, "main.go", "changed\n", 0o644)
			e.a = forged{Agent: e.a, stream: tarOf(t, nil, tarEntry{tar.Header{Name: "main.go", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, ""})}
		}, api.ErrGuestRefused},
		{"a sparse file (GNU format): 64 MiB from a few KB", func(t *testing.T, e *env) {
			sparseAttack(t, e, "--format=gnu")
		}, api.ErrGuestRefused},
		{"a sparse file (PAX format)", func(t *testing.T, e *env) {
			sparseAttack(t, e, "--format=posix")
		}, api.ErrGuestRefused},
		{"../ in the manifest", func(t *testing.T, e *env) {
			e.a = forged{Agent: e.a, manifest: func(m []proto.TreeEntry) []proto.TreeEntry {
				return append(m, fileEntry("../"+filepath.Base(outside)+"/secret", "x"))
			}}
		}, api.ErrGuestRefused},
		{"an absolute path in the manifest", func(t *testing.T, e *env) {
			e.a = forged{Agent: e.a, manifest: func(m []proto.TreeEntry) []proto.TreeEntry { return append(m, fileEntry("/etc/passwd", "x")) }}
		}, api.ErrGuestRefused},
		{"a file below a symlink in the manifest", func(t *testing.T, e *env) {
			e.a = forged{Agent: e.a, manifest: func(m []proto.TreeEntry) []proto.TreeEntry {
				return append(m, proto.TreeEntry{Path: "out", Type: "l", Link: outside}, fileEntry("out/planted", "x"))
			}}
		}, api.ErrGuestRefused},
		{"terminal escapes in a name", func(t *testing.T, e *env) {
			e.a = forged{Agent: e.a, manifest: func(m []proto.TreeEntry) []proto.TreeEntry { return append(m, fileEntry("a\x1b]0;pwned\x07", "x")) }}
		}, api.ErrGuestRefused},
		{"a negative size", func(t *testing.T, e *env) {
			e.a = forged{Agent: e.a, manifest: func(m []proto.TreeEntry) []proto.TreeEntry {
				return append(m, proto.TreeEntry{Path: "n", Type: "f", Size: -1, SHA256: sum("")})
			}}
		}, api.ErrGuestRefused},
		{"a file of 1 EiB", func(t *testing.T, e *env) {
			e.a = forged{Agent: e.a, manifest: func(m []proto.TreeEntry) []proto.TreeEntry {
				return append(m, proto.TreeEntry{Path: "n", Type: "f", Size: 1 << 60, SHA256: sum("")})
			}}
		}, api.ErrLimitExceeded},
		{"a path twice", func(t *testing.T, e *env) {
			e.a = forged{Agent: e.a, manifest: func(m []proto.TreeEntry) []proto.TreeEntry {
				return append(m, fileEntry("twice", "a"), fileEntry("twice", "b"))
			}}
		}, api.ErrGuestRefused},
		{"endless global headers of hash claims", func(t *testing.T, e *env) {
			write(t, e.guestDir, "main.go", "changed\n", 0o644)
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			claim := strings.Repeat("p\x00"+strings.Repeat("0", 64)+"\x00", 10000)
			for range 64 {
				_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{proto.PAXSHA256: strings.TrimSuffix(claim, "\x00")}})
			}
			_ = tw.Flush()
			e.a = forged{Agent: e.a, stream: tarOf(t, b.Bytes(), tarFile("main.go", "changed\n"))}
		}, api.ErrGuestRefused},
		{"a megabyte of PAX records on one entry", func(t *testing.T, e *env) {
			write(t, e.guestDir, "main.go", "changed\n", 0o644)
			h := tarFile("main.go", "changed\n")
			h.h.PAXRecords = map[string]string{"junk": strings.Repeat("j", 1<<20-100)}
			e.a = forged{Agent: e.a, stream: tarOf(t, nil, h)}
		}, api.ErrGuestRefused},
		{"more than max_bytes", func(t *testing.T, e *env) {
			e.s.cfg.MaxBytes = 4096
			write(t, e.guestDir, "big.bin", strings.Repeat("x", 5000), 0o644)
		}, api.ErrLimitExceeded},
		{"more than max_entries", func(t *testing.T, e *env) {
			e.s.cfg.MaxEntries = 8
			for i := range 10 {
				write(t, e.guestDir, fmt.Sprintf("gen/%d", i), "x", 0o644)
			}
		}, api.ErrGuestRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := prepared(t)
			before, beside := snapshot(t, e.host), snapshot(t, outside)
			tc.attack(t, e)
			_, err := e.s.Pull(context.Background(), api.WorkspaceRefParams{Name: "vm"}, nop)
			if !errors.Is(err, tc.want) {
				t.Fatalf("pull = %v; want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), "vm vm") {
				t.Fatalf("the error does not name the VM: %v", err)
			}
			if strings.ContainsAny(err.Error(), "\x1b\x07") {
				t.Fatalf("the error carries the guest's control characters: %q", err)
			}
			// --force means "replace my changed files", never "trust the
			// guest".
			_, ferr := e.s.Pull(context.Background(), api.WorkspaceRefParams{Name: "vm", Force: true}, nop)
			if !errors.Is(ferr, tc.want) {
				t.Fatalf("pull --force = %v; want %v", ferr, tc.want)
			}
			if after := snapshot(t, e.host); after != before {
				t.Fatalf("the host changed:\nbefore\n%s\nafter\n%s", before, after)
			}
			if after := snapshot(t, outside); after != beside {
				t.Fatalf("a directory outside the tree changed:\n%s", after)
			}
		})
	}
}

// sparseAttack makes the guest's stream a sparse 64 MiB file of a few
// kilobytes, declared honestly in the manifest.
func sparseAttack(t *testing.T, e *env, format string) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	stream := gnuTar(t, dir, "--sparse", format, "big")
	if len(stream) > 64<<10 {
		t.Fatalf("the sparse stream is %d bytes: tar did not make it sparse", len(stream))
	}
	zero := sha256.New()
	_, _ = io.CopyN(zero, zeros{}, 64<<20)
	big := proto.TreeEntry{Path: "big", Type: "f", Mode: 0o644, Size: 64 << 20, SHA256: hex.EncodeToString(zero.Sum(nil))}
	e.a = forged{Agent: e.a, manifest: func(m []proto.TreeEntry) []proto.TreeEntry { return append(m, big) }, stream: stream}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestGuestWorkStaysContained: what a root guest does in its own tree
// with nothing but files (no forged protocol) comes to the host only as
// safe files: nested repositories stay in the guest, modes lose group
// and world write and setuid, a directory swapped for a symlink between
// two pulls is refused, never followed.
func TestGuestWorkStaysContained(t *testing.T) {
	e := prepared(t)
	ctx := context.Background()
	marker := filepath.Join(t.TempDir(), "fsmonitor-ran")
	hook := "[core]\n\tfsmonitor = touch " + marker + "\n"
	write(t, e.guestDir, "docs/.git/config", hook, 0o644)
	write(t, e.guestDir, "docs/.git/HEAD", "ref: refs/heads/main\n", 0o644)
	write(t, e.guestDir, "vendor/lib/.GIT/hooks/post-checkout", "#!/bin/sh\ntouch "+marker+"\n", 0o755)
	write(t, e.guestDir, "run.sh", "#!/bin/sh\n", 0o777)
	write(t, e.guestDir, "tool", "bin", 0o755)
	if err := os.Chmod(filepath.Join(e.guestDir, "tool"), 0o4777); err != nil {
		t.Fatal(err)
	}
	write(t, e.guestDir, "docs/new.md", "new\n", 0o666)
	if _, err := e.s.Pull(ctx, api.WorkspaceRefParams{Name: "vm"}, nop); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"docs/.git", "vendor/lib/.GIT", "vendor"} {
		if _, err := os.Lstat(filepath.Join(e.host, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s came to the host (%v)", p, err)
		}
	}
	sh(t, filepath.Join(e.host, "docs"), "git", "status", "--porcelain")
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("git on the host ran the guest's fsmonitor")
	}
	for p, want := range map[string]os.FileMode{"run.sh": 0o755, "tool": 0o755, "docs/new.md": 0o644} {
		fi, err := os.Stat(filepath.Join(e.host, p))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid); got != want {
			t.Errorf("%s came as %v; want %v", p, got, want)
		}
	}
	// Between two pulls the guest swaps docs for a symlink out of the
	// tree: the host's docs is a directory, never replaced or followed.
	outside := t.TempDir()
	if err := os.RemoveAll(filepath.Join(e.guestDir, "docs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(e.guestDir, "docs")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e.host)
	for _, force := range []bool{false, true} {
		_, err := e.s.Pull(ctx, api.WorkspaceRefParams{Name: "vm", Force: force}, nop)
		if !errors.Is(err, api.ErrInUse) || !strings.Contains(err.Error(), "docs") {
			t.Fatalf("pull (force %v) over a swapped directory = %v", force, err)
		}
	}
	if after := snapshot(t, e.host); after != before {
		t.Fatalf("the refused pull changed the host:\n%s", after)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("written through the guest's symlink: %v", entries)
	}
}

// TestExportRunsNothingTheGuestChose: the guest's .gitattributes names a
// clean filter, a diff driver and a textconv that the host repository's
// own config defines (as git-lfs does): export runs none of them, and
// stages the guest's copy under the VM's state directory, not /tmp.
func TestExportRunsNothingTheGuestChose(t *testing.T) {
	e := prepared(t)
	marker := filepath.Join(t.TempDir(), "ran")
	for _, kv := range [][2]string{
		{"filter.x.clean", "touch " + marker + ".clean; cat"},
		{"filter.x.smudge", "touch " + marker + ".smudge; cat"},
		{"diff.x.command", "touch " + marker + ".diff"},
		{"diff.x.textconv", "touch " + marker + ".textconv; cat"},
		{"core.fsmonitor", "touch " + marker + ".fsmonitor"},
	} {
		sh(t, e.host, "git", "config", kv[0], kv[1])
	}
	write(t, e.guestDir, ".gitattributes", "* filter=x diff=x\n", 0o644)
	write(t, e.guestDir, "main.go", "package main // changed\n", 0o644)
	if err := os.Symlink("/etc/shadow", filepath.Join(e.guestDir, "leak")); err != nil {
		t.Fatal(err)
	}
	var staged []string
	e.a = stagingWatch{Agent: e.a, seen: func() {
		staged, _ = filepath.Glob(filepath.Join(e.s.stateDirForTest(t), "export-*"))
	}}
	r, err := e.s.Export(context.Background(), api.WorkspaceExportParams{Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if ran, _ := filepath.Glob(marker + "*"); len(ran) != 0 {
		t.Fatalf("export ran what the guest chose: %v", ran)
	}
	if !strings.Contains(r.Patch, "changed") || !strings.Contains(r.Patch, "+/etc/shadow") || strings.Contains(r.Patch, "root:") {
		t.Fatalf("patch:\n%s", r.Patch)
	}
	if len(staged) != 1 {
		t.Fatalf("export staged in %v; want one directory under the VM's state", staged)
	}
}

type stagingWatch struct {
	Agent
	seen func()
}

func (s stagingWatch) GetTree(ctx context.Context, dir string, paths []string, w io.Writer) (proto.TreeResult, error) {
	s.seen()
	return s.Agent.GetTree(ctx, dir, paths, w)
}

func (s *Service) stateDirForTest(t *testing.T) string {
	dir, err := s.cfg.VMs.StateDir(context.Background(), "vm")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestSelectNeverFallsBack: a tree in a repository git cannot read is
// refused with the reason, never sent whole, and git there runs nothing
// the repository's config names.
func TestSelectNeverFallsBack(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	marker := filepath.Join(t.TempDir(), "ran")
	sh(t, e.host, "git", "config", "core.fsmonitor", "touch "+marker)
	sel, err := Select(ctx, e.host, true)
	if err != nil || slices.Contains(sel.Files, "debug.log") {
		t.Fatalf("Select = %v, %v", sel.Files, err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("Select ran the repository's fsmonitor")
	}
	// A broken repository: refused, the secrets not listed.
	if err := os.WriteFile(filepath.Join(e.host, ".git", "HEAD"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	sel, err = Select(ctx, filepath.Join(e.host, "docs"), false)
	if err == nil || !strings.Contains(err.Error(), "git cannot read") {
		t.Fatalf("Select in a broken repository = %v, %v", sel.Files, err)
	}
}

// TestRootReadsAUsersRepository: a root daemon lists a user's repository
// through git (safe.directory scoped to it), where git alone would stop
// at "dubious ownership" and the old fallback sent every file, secrets
// included; a repository config owned by someone else is refused.
func TestRootReadsAUsersRepository(t *testing.T) {
	roottest.Require(t, "it chowns a tree to another user")
	e := newEnv(t)
	chown := func(path string, uid int) {
		t.Helper()
		if err := filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, uid)
		}); err != nil {
			t.Fatal(err)
		}
	}
	chown(e.host, 4242)
	sel, err := Select(context.Background(), e.host, false)
	if err != nil || slices.Contains(sel.Files, "notes.txt") || !slices.Contains(sel.Files, "main.go") || !sel.Git {
		t.Fatalf("Select of a user's repository as root = %v, %v", sel.Files, err)
	}
	chown(filepath.Join(e.host, ".git", "config"), 4343)
	if sel, err := Select(context.Background(), e.host, false); err == nil || !strings.Contains(err.Error(), "uid 4343") {
		t.Fatalf("Select with a config of another owner = %v, %v", sel.Files, err)
	}
}

// TestOldStateKeepsNestedRepositories: a state from an older banger that
// recorded a nested repository's files (the old guest listing excluded
// .git at the top only) must not make the first pull delete them on the
// host now that neither side lists them.
func TestOldStateKeepsNestedRepositories(t *testing.T) {
	e := prepared(t)
	ctx := context.Background()
	write(t, e.host, "vendor/lib/.git/config", "[core]\n", 0o644)
	write(t, e.guestDir, "vendor/lib/.git/config", "[core]\n", 0o644)
	dir := e.s.stateDirForTest(t)
	st, _, err := e.s.loadState(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	st.Files["vendor/lib/.git/config"] = fileEntry("vendor/lib/.git/config", "[core]\n")
	if err := saveState(dir, st); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(e.guestDir, "vendor/lib/.git/config")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Pull(ctx, api.WorkspaceRefParams{Name: "vm"}, nop); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.host, "vendor/lib/.git/config")); err != nil {
		t.Fatalf("the pull deleted a nested repository's file: %v", err)
	}
}
