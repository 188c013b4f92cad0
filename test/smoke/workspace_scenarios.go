package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangerdev/banger/api"
)

// gitRun runs git (or any command) in dir on the host.
func (t *T) gitRun(dir string, args ...string) string {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=smoke", "GIT_AUTHOR_EMAIL=s@s", "GIT_COMMITTER_NAME=smoke", "GIT_COMMITTER_EMAIL=s@s", "HOME="+t.home)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v in %s: %v\n%s", args, dir, err, out)
	}
	return string(out)
}

func (t *T) writeFile(root, rel string, body []byte, mode os.FileMode) {
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(p, body, mode); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatalf("%v", err)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// debianVM pulls the Debian test image (it has git) for VMs.
func (t *T) debianRef() string {
	reg := t.bootable()
	ref := reg + "/smoke/debian:ws"
	t.Push(ref, t.debianImage())
	t.Must("image", "pull", ref)
	return ref
}

// vmWorkspace: a git project placed in a VM by `vm run PATH`; git works
// inside from /workspace; a build's output pulled back; a conflict
// refused both ways; push then pull keeps bytes and modes; a pull killed
// mid-way leaves the host tree as it was; export gives a patch git apply
// takes; --readonly holds across a reboot.
func vmWorkspace(t *T) {
	ref := t.debianRef()
	proj := filepath.Join(t.home, "proj")
	t.writeFile(proj, "build.sh", []byte("#!/bin/sh\nset -e\nmkdir -p out\ncat src/*.txt > out/app.txt\necho built\n"), 0o755)
	t.writeFile(proj, "src/a.txt", []byte("alpha\n"), 0o644)
	t.writeFile(proj, "src/b.txt", []byte("beta\n"), 0o644)
	t.writeFile(proj, ".gitignore", []byte("out/\n"), 0o644)
	if err := os.Symlink("src/a.txt", filepath.Join(proj, "A")); err != nil {
		t.Fatalf("%v", err)
	}
	t.gitRun(proj, "git", "init", "-q", "-b", "main")
	t.gitRun(proj, "git", "add", "-A")
	t.gitRun(proj, "git", "commit", "-qm", "start")
	t.writeFile(proj, "secret.env", []byte("TOKEN=hunter2\n"), 0o600) // untracked: stays home
	base := strings.TrimSpace(t.gitRun(proj, "git", "rev-parse", "HEAD"))

	dry := t.Must("vm", "run", proj, "--dry-run")
	t.Contains("dry run", dry.stdout, "build.sh", "src/a.txt", "A")
	if strings.Contains(dry.stdout, "secret.env") {
		t.Fatalf("an untracked file was selected: %s", dry.stdout)
	}
	t.MustFail(1, "not found", "vm", "show", "ws") // a dry run creates nothing

	// vm run PATH -- CMD starts in the workspace.
	r := t.Must("vm", "run", proj, "--name", "ws", "--image", ref, "--memory", "512M", "-d")
	t.Contains("run -d", r.stdout, "ws")
	in := func(args ...string) string {
		return t.Must(append([]string{"vm", "exec", "ws", "--"}, args...)...).stdout
	}
	if pwd := in("pwd"); pwd != "/workspace\n" {
		t.Fatalf("exec starts in %q", pwd)
	}
	t.Contains("ssh starts there too", t.Must("vm", "run", "--name", "ws", "--", "pwd").stdout, "/workspace")
	if st := in("git", "status", "--porcelain"); st != "" {
		t.Fatalf("git status in the workspace:\n%s", st)
	}
	t.Contains("git log", in("git", "log", "--oneline"), "start")
	t.Contains("owner and modes", in("stat", "-c", "%U %a %n", "build.sh", "src/a.txt"), "root 755 build.sh", "root 644 src/a.txt")
	if l := in("readlink", "A"); l != "src/a.txt\n" {
		t.Fatalf("symlink = %q", l)
	}
	if r := t.Banger("vm", "exec", "ws", "--", "test", "-e", "secret.env"); r.code == 0 {
		t.Fatalf("secret.env reached the guest")
	}

	// A build in the guest; its output comes home.
	t.Contains("build", in("sh", "build.sh"), "built")
	t.Contains("status", t.Must("vm", "workspace", "status", "ws").stdout, "guest", "added", "out/app.txt")
	t.Must("vm", "workspace", "pull", "ws")
	if b, _ := os.ReadFile(filepath.Join(proj, "out/app.txt")); string(b) != "alpha\nbeta\n" {
		t.Fatalf("pulled build output = %q", b)
	}

	// Both sides change src/a.txt: refused both ways, nothing moves.
	in("sh", "-c", "echo guest > src/a.txt")
	t.writeFile(proj, "src/a.txt", []byte("host\n"), 0o644)
	t.MustFail(1, "src/a.txt", "vm", "workspace", "pull", "ws")
	t.MustFail(1, "src/a.txt", "vm", "workspace", "push", "ws")
	if b, _ := os.ReadFile(filepath.Join(proj, "src/a.txt")); string(b) != "host\n" {
		t.Fatalf("a refused pull changed the host: %q", b)
	}
	t.Contains("status shows the conflict", t.Must("vm", "workspace", "status", "ws").stdout, "conflict", "src/a.txt")
	t.Contains("pull --force", t.Must("vm", "workspace", "pull", "--force", "ws").stderr, "--force replaced src/a.txt")

	// Push then pull: bytes and modes survive both ways.
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	t.writeFile(proj, "bin/data.bin", data, 0o640)
	t.writeFile(proj, "bin/tool", []byte("#!/bin/sh\necho tool\n"), 0o750)
	t.gitRun(proj, "git", "add", "bin")
	t.Must("vm", "workspace", "push", "ws")
	guestSum := strings.Fields(in("sha256sum", "bin/data.bin"))[0]
	if guestSum != sha(data) {
		t.Fatalf("pushed data.bin: guest %s, host %s", guestSum, sha(data))
	}
	t.Contains("pushed modes", in("stat", "-c", "%a %n", "bin/data.bin", "bin/tool"), "640 bin/data.bin", "750 bin/tool")
	in("sh", "-c", "head -c 1000000 /dev/urandom >> bin/data.bin && chmod 600 bin/data.bin")
	guestSum = strings.Fields(in("sha256sum", "bin/data.bin"))[0]
	t.Must("vm", "workspace", "pull", "ws")
	back, _ := os.ReadFile(filepath.Join(proj, "bin/data.bin"))
	if sha(back) != guestSum {
		t.Fatalf("pulled data.bin differs from the guest's")
	}
	if fi, _ := os.Stat(filepath.Join(proj, "bin/data.bin")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("pulled mode %v; want 600", fi.Mode().Perm())
	}
	if r := t.Must("vm", "workspace", "status", "ws"); !strings.Contains(r.stdout, "in sync") {
		t.Fatalf("after push and pull: %s", r.stdout)
	}

	// A pull killed mid-way leaves the host tree as it was.
	in("sh", "-c", "head -c 150000000 /dev/urandom > big.bin")
	before := treeSums(t, proj)
	pull := exec.Command("nsenter", "--net=/run/netns/"+t.netns, "--", filepath.Join(t.bin, "banger"), "vm", "workspace", "pull", "ws")
	pull.Env = t.env()
	if err := pull.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	time.Sleep(1500 * time.Millisecond) // hashing 150 MB under emulation and sending it takes longer
	_ = pull.Process.Signal(syscall.SIGKILL)
	_ = pull.Wait()
	t.Eventually("the daemon ends the cut pull", time.Minute, func() bool {
		stale, _ := filepath.Glob(filepath.Join(t.home, ".banger-stage-*"))
		return len(stale) == 0
	})
	if after := treeSums(t, proj); after != before {
		t.Fatalf("a killed pull changed the host tree")
	}
	t.Must("vm", "workspace", "pull", "ws")
	if fi, err := os.Stat(filepath.Join(proj, "big.bin")); err != nil || fi.Size() != 150000000 {
		t.Fatalf("the pull after the killed one: %v %v", fi, err)
	}
	if err := os.Remove(filepath.Join(proj, "big.bin")); err != nil {
		t.Fatalf("%v", err)
	}
	in("rm", "big.bin")

	// Export: committed and uncommitted guest work as one patch that git
	// apply takes on a clean checkout of the base.
	in("sh", "-c", "echo gamma > src/c.txt && git add src/c.txt && git -c user.name=g -c user.email=g@g commit -qm 'in the guest'")
	in("sh", "-c", "printf '\\000\\001binary' > logo.bin && echo delta >> src/b.txt")
	t.Must("vm", "workspace", "export", "ws", "-o", filepath.Join(t.home, "ws.patch"))
	clone := filepath.Join(t.home, "clone")
	t.gitRun(t.home, "git", "clone", "-q", proj, clone)
	t.gitRun(clone, "git", "checkout", "-q", base)
	t.gitRun(clone, "git", "apply", filepath.Join(t.home, "ws.patch"))
	if b, _ := os.ReadFile(filepath.Join(clone, "src/c.txt")); string(b) != "gamma\n" {
		t.Fatalf("applied src/c.txt = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(clone, "logo.bin")); string(b) != "\x00\x01binary" {
		t.Fatalf("applied logo.bin = %q", b)
	}
	t.Contains("export to stdout", t.Must("vm", "workspace", "export", "ws").stdout, "diff --git", "GIT binary patch")

	// --readonly, kept across a reboot.
	t.Must("vm", "workspace", "prepare", "--readonly", "ws", proj)
	if r := t.Banger("vm", "exec", "ws", "--", "touch", "/workspace/x"); r.code == 0 || !strings.Contains(r.stderr, "Read-only") {
		t.Fatalf("writing a read-only workspace: %s", r)
	}
	t.Must("vm", "restart", "ws")
	if r := t.Banger("vm", "exec", "ws", "--", "touch", "/workspace/x"); r.code == 0 {
		t.Fatalf("the workspace is writable after a reboot: %s", r)
	}
	t.Must("vm", "delete", "--force", "ws")
}

// treeSums fingerprints a host tree (paths, modes, contents), .git
// aside.
func treeSums(t *T, root string) string {
	var b strings.Builder
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == ".git" {
			return filepath.SkipDir
		}
		fmt.Fprintf(&b, "%s %v", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %s", sha(data))
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}

// vmWorkspaceLarge: a 50,000-file tree goes in with one prepare, and all
// of it arrives; the time is printed (make bench measures speed).
func vmWorkspaceLarge(t *T) {
	reg := t.bootable()
	ref := reg + "/smoke/busybox:large"
	t.Push(ref, t.busyboxImage())
	proj := filepath.Join(t.home, "large")
	for i := range 50000 {
		t.writeFile(proj, fmt.Sprintf("d%03d/f%05d.txt", i/500, i), []byte(fmt.Sprintf("file %d\n", i)), 0o644)
	}
	t.Must("vm", "create", "--name", "big", "--image", ref, "--memory", "512M")
	start := time.Now()
	var r api.WorkspacePrepareResult
	t.JSON(&r, "vm", "workspace", "prepare", "big", proj)
	took := time.Since(start)
	if r.Files != 50000 {
		t.Fatalf("prepare = %+v", r)
	}
	n := t.Must("vm", "exec", "big", "--", "/bin/busybox", "sh", "-c", "/bin/busybox find /workspace -type f | /bin/busybox wc -l").stdout
	if strings.TrimSpace(n) != "50000" {
		t.Fatalf("the guest has %s files", n)
	}
	fmt.Fprintf(os.Stderr, "vm-workspace-large: 50000 files placed in %s\n", took.Round(100*time.Millisecond))
	t.Must("vm", "delete", "--force", "big")
}
